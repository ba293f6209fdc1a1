"""ollastack's verdicts and the test tools behind them, made to fail: a probe that cannot fail proves nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import trustme

from tests.support.repo import REPO
from tests.lab.test_cloud_e2e import NETGUARD
from tests.support.tlsprobe import offer


@pytest.fixture
def legacy_server(tmp_path):
    """``openssl s_server`` on loopback speaking only ``version`` (every cipher allowed); yields its port."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    servers = []

    def start(*protocol: str) -> int:
        proc = subprocess.Popen(["openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(pem), *protocol,
                                 "-cipher", "DEFAULT:@SECLEVEL=0"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        servers.append(proc)
        for line in proc.stdout:
            if line.startswith("ACCEPT"):
                return int(line.rsplit(":", 1)[1])
        raise AssertionError(f"s_server did not start (exit {proc.wait()})")

    yield start
    for proc in servers:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", ["tls1", "tls1_1"])
def test_legacy_probe_really_offers_the_old_protocol(legacy_server, version):
    """The probe the lab's "TLS 1.0/1.1 refused" test uses completes a handshake with a server that allows it."""
    port = legacy_server(f"-{version}")
    probe = offer("127.0.0.1", port, version)
    assert probe.done, probe.output
    assert {"tls1": "Protocol  : TLSv1\n", "tls1_1": "Protocol  : TLSv1.1\n"}[version] in probe.output


@pytest.mark.parametrize("version", ["tls1", "tls1_1"])
def test_legacy_probe_sees_the_server_refuse(legacy_server, version):
    port = legacy_server("-no_tls1", "-no_tls1_1")
    probe = offer("127.0.0.1", port, version)
    assert not probe.done
    assert "alert protocol version" in probe.output, probe.output


GUARDED = """
import socket, sys
with socket.create_server(("127.0.0.1", 0)) as server:
    socket.create_connection(server.getsockname(), timeout=5).close()
try:
    socket.create_connection(("192.0.2.1", 9), timeout=5)
except ConnectionRefusedError as exc:
    print(exc)
"""


def test_network_guard_loads_refuses_and_logs(tmp_path):
    """The guard the cloud end-to-end tests rely on: it loads in a child Python, lets loopback through,
    refuses and logs anything else; an empty refusal list means something only together with ``loaded``."""
    log = tmp_path / "refused.log"
    env = dict(os.environ, PYTHONPATH=str(NETGUARD), OLLASTACK_TEST_ALLOWED="127.0.0.0/8",
               OLLASTACK_TEST_REFUSED_LOG=str(log))
    child = subprocess.run([sys.executable, "-c", GUARDED], env=env, capture_output=True, text=True, timeout=30)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "test guard refused a connection to 192.0.2.1\n"
    lines = log.read_text().splitlines()
    assert lines[0].startswith("loaded ") and lines[1:] == ["refused 192.0.2.1"]
    # Without the environment the guard stays out (and writes nothing).
    plain = subprocess.run([sys.executable, "-c", "pass"], env=dict(env, OLLASTACK_TEST_ALLOWED=""), timeout=30)
    assert plain.returncode == 0 and log.read_text().splitlines() == lines


PLANTED = '''
import pytest

@pytest.fixture(params=["bookworm", "trixie"])
def release(request):
    return request.param

@pytest.mark.lab
def test_lab_without_root(release):
    pytest.skip("lab tests need root")

@pytest.mark.lab
@pytest.mark.releases("trixie")
def test_only_on_trixie(release):
    assert release == "trixie"

def test_not_lab():
    pytest.skip("not a lab test")
'''


def run_planted(tmp_path, ci: str | None, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_planted.py").write_text(PLANTED)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.support.lab_required", "--strict-markers",
                           "-o", "markers=lab: needs root", "-p", "no:cacheprovider", "-rA", *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_ci_fails_when_a_lab_test_skips(tmp_path):
    ci = run_planted(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    assert "2 failed, 1 passed, 1 skipped, 1 deselected" in ci.stdout
    assert "lab test skipped under CI=true (CI runs every lab test): Skipped: lab tests need root" in ci.stdout
    local = run_planted(tmp_path, None)
    assert local.returncode == 0 and "1 passed, 3 skipped, 1 deselected" in local.stdout, local.stdout


def test_unknown_markers_are_errors(tmp_path):
    """pyproject.toml makes pytest refuse an unregistered marker: a typo would otherwise run the test unmarked."""
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (tmp_path / "test_typo.py").write_text("import pytest\n\n\n@pytest.mark.lba\ndef test_x():\n    pass\n")
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_typo.py"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "'lba' not found in `markers` configuration option" in result.stdout
