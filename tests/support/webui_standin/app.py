#!/usr/bin/env python3
"""A stand-in for the Open WebUI container, for tests only: registries (ghcr.io) are out of reach here.

It honours what the container route relies on: ``HOST``/``PORT`` (the image's start.sh variables),
``/health``, a data directory at ``/app/backend/data``, the bootstrap admin from
``WEBUI_ADMIN_EMAIL``/``WEBUI_ADMIN_PASSWORD``, and session tokens signed with
``WEBUI_SECRET_KEY`` (so a token survives a restart only when the key does). Sign-up follows
``ENABLE_SIGNUP`` and ``DEFAULT_USER_ROLE`` (accounts kept in ``users.json`` in the data
directory); sign-in and sign-up set the ``token`` cookie like Open WebUI's auths router (HttpOnly,
SameSite from ``WEBUI_AUTH_COOKIE_SAME_SITE``, Secure from ``WEBUI_AUTH_COOKIE_SECURE``, which
defaults to ``WEBUI_SESSION_COOKIE_SECURE``). ``/api/config`` reports the ``OLLAMA_BASE_URL`` it
was started with; ``GET /ollama/api/version`` (signed-in users) asks that Ollama's ``/api/version``
and answers as Open WebUI 0.12.4's ollama router does: ``{"version": ...}``, or 500
``{"detail": "WebUI could not connect to Ollama"}``; ``/standin/request`` echoes the client address and the Host and forwarding
headers it received. Python standard library only.

Faults for tests of ollastack's verdicts: ``standin-faults.json`` in the data directory maps a path
to the status answered there instead, e.g. ``{"/health": 503, "/api/v1/auths/signin": 400}``.

Example::

    HOST=127.0.0.1 PORT=8080 WEBUI_SECRET_KEY=k WEBUI_ADMIN_EMAIL=a@b.c WEBUI_ADMIN_PASSWORD=p python3 app.py
"""

import base64
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA_DIR = Path(os.environ.get("DATA_DIR", "/app/backend/data"))
SIGNUP_LOCK = threading.Lock()


def sign(email: str) -> str:
    key = os.environ["WEBUI_SECRET_KEY"].encode()
    mac = hmac.new(key, email.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(email.encode()).decode() + "." + mac


def flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).lower() == "true"


def token_cookie(token: str) -> str:
    """The Set-Cookie value Open WebUI sends after sign-in (its auths router, via Starlette)."""
    cookie = f"token={token}; HttpOnly; Path=/; SameSite={os.environ.get('WEBUI_AUTH_COOKIE_SAME_SITE', 'lax')}"
    secure = flag("WEBUI_AUTH_COOKIE_SECURE", os.environ.get("WEBUI_SESSION_COOKIE_SECURE", "false"))
    return cookie + "; Secure" if secure else cookie


def users() -> dict:
    path = DATA_DIR / "users.json"
    return json.loads(path.read_text()) if path.exists() else {}


def verify(token: str) -> str | None:
    encoded, _, _ = token.partition(".")
    try:
        email = base64.urlsafe_b64decode(encoded).decode()
    except ValueError:
        return None
    return email if hmac.compare_digest(sign(email), token) else None


def fault(path: str) -> int | None:
    """The status a test told the stand-in to answer on ``path``, if any."""
    try:
        return json.loads((DATA_DIR / "standin-faults.json").read_text()).get(path)
    except (OSError, ValueError, AttributeError):
        return None


def ollama_version() -> tuple[int, dict]:
    """Open WebUI's ``/ollama/api/version``: Ollama's version, or the router's 500 when it does not answer."""
    url = os.environ.get("OLLAMA_BASE_URL", "http://localhost:11434").rstrip("/") + "/api/version"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return 200, {"version": json.loads(answer.read())["version"]}
    except (OSError, ValueError, KeyError):
        return 500, {"detail": "WebUI could not connect to Ollama"}


class Handler(BaseHTTPRequestHandler):
    def reply(self, code: int, body: dict | str, cookie: str = "") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def session(self, email: str, role: str) -> None:
        token = sign(email)
        self.reply(200, {"token": token, "email": email, "role": role}, cookie=token_cookie(token))

    def do_GET(self):
        if self.path == "/health":
            code = fault(self.path) or 200
            return self.reply(code, {"status": code == 200})
        if self.path == "/api/config":
            return self.reply(200, {"name": "Open WebUI (stand-in)", "ollama_base_url": os.environ.get("OLLAMA_BASE_URL")})
        if self.path == "/api/v1/auths/":
            email = verify(self.headers.get("Authorization", "").removeprefix("Bearer "))
            if not email:
                return self.reply(401, {"detail": "invalid token"})
            return self.reply(200, {"email": email, "role": users().get(email, {}).get("role", "admin")})
        if self.path == "/ollama/api/version":
            if not verify(self.headers.get("Authorization", "").removeprefix("Bearer ")):
                return self.reply(401, {"detail": "Not authenticated"})
            return self.reply(*ollama_version())
        if self.path == "/standin/request":
            return self.reply(200, {"client": self.client_address[0], "host": self.headers.get("Host"),
                                    "x_forwarded_for": self.headers.get_all("X-Forwarded-For") or [],
                                    "x_forwarded_host": self.headers.get("X-Forwarded-Host")})
        if self.path == "/":
            return self.reply(200, "<!doctype html><title>Open WebUI (stand-in)</title>\n")
        return self.reply(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/api/v1/auths/signin" and fault(self.path):
            return self.reply(fault(self.path), {"detail": "refused by the stand-in (standin-faults.json)"})
        email, password = str(body.get("email", "")).lower(), str(body.get("password", ""))
        if self.path == "/api/v1/auths/signin":
            if email == os.environ.get("WEBUI_ADMIN_EMAIL") and \
                    hmac.compare_digest(password, os.environ.get("WEBUI_ADMIN_PASSWORD", "")):
                return self.session(email, "admin")
            user = users().get(email)
            if user and hmac.compare_digest(user["password"], hashlib.sha256(password.encode()).hexdigest()):
                return self.session(email, user["role"])
            return self.reply(400, {"detail": "The email or password provided is incorrect."})
        if self.path == "/api/v1/auths/signup":
            if not flag("ENABLE_SIGNUP"):
                return self.reply(403, {"detail": "You do not have permission to access this resource."})
            with SIGNUP_LOCK:
                known = users()
                if email in known or email == os.environ.get("WEBUI_ADMIN_EMAIL"):
                    return self.reply(400, {"detail": "Uh-oh! This email is already registered."})
                role = os.environ.get("DEFAULT_USER_ROLE", "pending")
                known[email] = {"password": hashlib.sha256(password.encode()).hexdigest(), "role": role}
                (DATA_DIR / "users.json").write_text(json.dumps(known))
            return self.session(email, role)
        return self.reply(404, {"detail": "not found"})


def main() -> int:
    # PID 1 in a container gets no default SIGTERM handler: without this, podman stop waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ.get("PORT", "8080"))), Handler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
