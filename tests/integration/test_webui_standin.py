"""The Open WebUI container stand-in honours the settings it stands for (sign-up, role, cookie flags),
run as the image runs it (``python3 app.py`` with the unit's environment) and spoken to over loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.support.repo import REPO

APP = REPO / "tests/support/webui_standin/app.py"
ADMIN = {"email": "owner@example.org", "password": "Owner-Pass-1"}
VISITOR = {"email": "visitor@example.org", "password": "Visitor-Pass-1", "name": "Visitor"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def standin(tmp_path):
    """Start the stand-in with extra environment; returns its base URL."""
    processes = []

    def start(**env: str) -> str:
        port = free_port()
        environ = dict(os.environ, HOST="127.0.0.1", PORT=str(port), DATA_DIR=str(tmp_path / f"data{port}"),
                       WEBUI_SECRET_KEY="k" * 64, WEBUI_ADMIN_EMAIL=ADMIN["email"],
                       WEBUI_ADMIN_PASSWORD=ADMIN["password"], **env)
        processes.append(subprocess.Popen([sys.executable, str(APP)], env=environ))
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1).close()
                return base
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the stand-in did not answer /health")
    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def post(url: str, body: dict) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get("Set-Cookie", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("Set-Cookie", "")


def test_signup_refused_when_disabled(standin):
    base = standin(ENABLE_SIGNUP="false")
    assert post(f"{base}/api/v1/auths/signup", VISITOR)[0] == 403
    assert post(f"{base}/api/v1/auths/signin", VISITOR)[0] == 400


def test_signup_follows_enable_signup_and_default_role(standin):
    base = standin(ENABLE_SIGNUP="true", DEFAULT_USER_ROLE="user")
    status, body, _ = post(f"{base}/api/v1/auths/signup", VISITOR)
    assert status == 200 and body["role"] == "user"
    assert post(f"{base}/api/v1/auths/signup", VISITOR)[0] == 400
    status, body, _ = post(f"{base}/api/v1/auths/signin", VISITOR)
    assert status == 200 and body["role"] == "user"
    assert post(f"{base}/api/v1/auths/signin", dict(VISITOR, password="wrong"))[0] == 400
    # Without DEFAULT_USER_ROLE new accounts wait as "pending", as in Open WebUI.
    status, body, _ = post(f"{standin(ENABLE_SIGNUP='true')}/api/v1/auths/signup", VISITOR)
    assert status == 200 and body["role"] == "pending"


@pytest.mark.parametrize("env,secure", [
    ({}, False),
    ({"WEBUI_SESSION_COOKIE_SECURE": "true"}, True),
    ({"WEBUI_AUTH_COOKIE_SECURE": "true"}, True),
    ({"WEBUI_SESSION_COOKIE_SECURE": "true", "WEBUI_AUTH_COOKIE_SECURE": "false"}, False),
])
def test_token_cookie_secure_like_open_webui(standin, env, secure):
    status, body, cookie = post(f"{standin(**env)}/api/v1/auths/signin", ADMIN)
    assert status == 200 and cookie.startswith(f"token={body['token']}; HttpOnly")
    assert ("; Secure" in cookie) == secure, cookie
    assert "SameSite=lax" in cookie


def test_echoes_forwarding_headers(standin):
    req = urllib.request.Request(f"{standin()}/standin/request", headers={"X-Forwarded-For": "1.2.3.4"})
    with urllib.request.urlopen(req, timeout=10) as response:
        seen = json.loads(response.read())
    assert seen["x_forwarded_for"] == ["1.2.3.4"] and seen["client"] == "127.0.0.1"


def version_via_webui(base: str, token: str = "") -> tuple[int, dict]:
    req = urllib.request.Request(f"{base}/ollama/api/version", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_ollama_version_through_open_webui_like_its_router(standin, binary, tmp_path):
    """``/ollama/api/version`` asks the Ollama stand-in it was started with, as Open WebUI 0.12.4 does."""
    from tests.integration.test_standin import Ollama

    ollama = Ollama(binary, tmp_path / "models", tmp_path / "ollama.log").start()
    try:
        base = standin(OLLAMA_BASE_URL=ollama.url)
        _, session, _ = post(f"{base}/api/v1/auths/signin", ADMIN)
        assert version_via_webui(base)[0] == 401
        with urllib.request.urlopen(f"{ollama.url}/api/version", timeout=10) as answer:
            direct = json.loads(answer.read())
        assert version_via_webui(base, session["token"]) == (200, {"version": direct["version"]})
    finally:
        ollama.stop()
    assert version_via_webui(base, session["token"]) == (500, {"detail": "WebUI could not connect to Ollama"})
