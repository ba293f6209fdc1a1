"""ollastack's "ready" verdict against a real TLS server on loopback, made to fail in every way it can.

The server is the Open WebUI stand-in (tests/support/webui_standin/app.py) behind Python's TLS, with a
certificate from the stack CA (ollastack.certs) or from an unrelated CA (trustme). ``ollastack
status`` runs for real against a static host on a loopback address of its own, port 443.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trustme

from ollastack import certs, ready
from tests.support.controlkit import TLSWebUI, loopback_address, serve_webui

NAME = "chat.ready.test"
ADMIN = "owner@example.org"
PASSWORD = "Sesame-Open-42"


@pytest.fixture
def stack_ca(tmp_path) -> tuple[Path, Path, Path]:
    """(ca.pem, leaf cert, key) from ollastack's own CA code, for NAME and 127.0.0.1."""
    stack_dir = tmp_path / "ssl" / "readyunit"
    cert, key, _ = certs.ensure_server_cert(stack_dir, "readyunit-1", [NAME, "127.0.0.1"])
    return stack_dir / "ca.pem", cert, key


def serve(monkeypatch, tmp_path, cert: Path, key: Path, address: str = "127.0.0.1", port: int = 0) -> TLSWebUI:
    return serve_webui(monkeypatch, tmp_path / "webui-data", cert, key, (ADMIN, PASSWORD), address, port)


@pytest.fixture
def webui(monkeypatch, tmp_path, stack_ca):
    _, cert, key = stack_ca
    server = serve(monkeypatch, tmp_path, cert, key)
    yield server
    server.stop()


def target(webui: TLSWebUI, ca: Path, name: str = NAME) -> ready.Target:
    return ready.Target(name, "127.0.0.1", cafile=str(ca), port=webui.port)


def test_ready_when_verified_healthy_and_the_admin_signs_in(webui, stack_ca):
    verdict = ready.check(target(webui, stack_ca[0]), (ADMIN, PASSWORD))
    assert verdict == {"url": f"https://{NAME}:{webui.port}/", "ok": True, "https": "HTTPS verified, HTTP 200",
                       "webui": f"healthy, admin {ADMIN} signs in", "problem": None}


def test_a_certificate_from_another_ca_is_not_verified(webui, tmp_path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    verdict = ready.check(target(webui, other), (ADMIN, PASSWORD))
    assert verdict["ok"] is False
    assert verdict["problem"].startswith(f"HTTPS to https://{NAME}:{webui.port}/ failed: ")
    assert "certificate verify failed" in verdict["problem"]


def test_a_certificate_for_another_name_is_not_verified(webui, stack_ca):
    verdict = ready.check(target(webui, stack_ca[0], name="elsewhere.ready.test"), None)
    assert verdict["ok"] is False
    assert "Hostname mismatch" in verdict["problem"] or "doesn't match" in verdict["problem"]


def test_the_system_store_does_not_trust_the_stack_ca(webui):
    verdict = ready.check(ready.Target(NAME, "127.0.0.1", port=webui.port), None)
    assert verdict["ok"] is False and "certificate verify failed" in verdict["problem"]


@pytest.mark.parametrize("status", [503, 502, 404])
def test_health_other_than_200_is_not_ready(webui, stack_ca, status):
    webui.fail(health=status)
    verdict = ready.check(target(webui, stack_ca[0]), (ADMIN, PASSWORD))
    assert verdict["ok"] is False and verdict["https"] == f"HTTPS verified, HTTP {status}"
    assert verdict["problem"] == f"Open WebUI answered {status} on /health"


def test_a_503_is_waited_out_within_the_bound(webui, stack_ca):
    webui.fail(health=503)
    timer = threading.Timer(1.5, lambda: webui.fail())
    timer.start()
    verdict = ready.check(target(webui, stack_ca[0]), (ADMIN, PASSWORD), wait_s=30)
    timer.join()
    assert verdict["ok"] is True, verdict


def test_a_wrong_password_names_the_admin_and_never_the_password(webui, stack_ca):
    verdict = ready.check(target(webui, stack_ca[0]), (ADMIN, "Not-The-Password-7"))
    assert verdict["ok"] is False
    assert verdict["problem"] == f"the admin {ADMIN} cannot sign in (400 The email or password provided is incorrect.)"
    assert "Not-The-Password-7" not in json.dumps(verdict)


def test_a_refused_signin_is_not_retried(webui, stack_ca, capfd):
    webui.fail(signin=401)
    verdict = ready.check(target(webui, stack_ca[0]), (ADMIN, PASSWORD), wait_s=30)
    assert verdict["problem"] == f"the admin {ADMIN} cannot sign in (401 refused by the stand-in (standin-faults.json))"
    assert capfd.readouterr().err.count('"POST /api/v1/auths/signin') == 1


def test_install_none_checks_https_only(webui, stack_ca):
    webui.fail(health=503)
    verdict = ready.check(target(webui, stack_ca[0]), None)
    assert verdict["ok"] is True and verdict["webui"] == 'not checked (openwebui.install = "none")'


# `ollastack status` for real: a static host whose port 443 is the TLS stand-in.

def write_stack(tmp_path, keypair, address: str, install: str = "container", name: str = NAME) -> tuple[Path, dict]:
    public, private = keypair
    path = tmp_path / "stack.toml"
    path.write_text(f'[stack]\nname = "readyunit"\nprovider = "static"\n[static]\nhosts = ["{address}"]\n'
                    f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n'
                    f'[tls]\ndomain = "{name}"\n'
                    f'[openwebui]\ninstall = "{install}"\nadmin_email = "{ADMIN}"\nadmin_password = "{PASSWORD}"\n')
    env = dict(os.environ, OLLASTACK_CONFIG=str(path), OLLASTACK_SSL_DIR=str(tmp_path / "ssl"),
               OLLASTACK_STATE_DIR=str(tmp_path / "state"))
    return path, env


def status(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ollastack.cli", *args, "status"], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def on_443(monkeypatch, tmp_path, stack_ca):
    address = loopback_address()
    _, cert, key = stack_ca
    try:
        server = serve(monkeypatch, tmp_path, cert, key, address, 443)
    except PermissionError:
        pytest.skip("port 443 needs root")
    yield address, server
    server.stop()


def test_status_exit_code_follows_the_verdict(on_443, tmp_path, keypair, stack_ca):
    address, server = on_443
    _, env = write_stack(tmp_path, keypair, address)
    result = status(env, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    [host] = json.loads(result.stdout)["hosts"]
    assert (host["ok"], host["webui"]) == (True, f"healthy, admin {ADMIN} signs in")
    server.fail(health=503)
    result = status(env)
    assert result.returncode == 1
    assert "not ready: Open WebUI answered 503 on /health" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("wrong", ["ca", "name"])
def test_status_with_a_wrong_ca_or_name_exits_1(on_443, tmp_path, keypair, stack_ca, wrong):
    address, _ = on_443
    _, env = write_stack(tmp_path, keypair, address, install="none",
                         name="elsewhere.ready.test" if wrong == "name" else NAME)
    if wrong == "ca":
        (tmp_path / "ssl" / "readyunit" / "ca.pem").write_bytes(trustme.CA().cert_pem.bytes())
    result = status(env, "--json")
    assert result.returncode == 1
    [host] = json.loads(result.stdout)["hosts"]
    assert host["ok"] is False and "certificate verify failed" in host["problem"]
