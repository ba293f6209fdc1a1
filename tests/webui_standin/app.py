#!/usr/bin/env python3
"""A stand-in for the Open WebUI container, for tests only: registries (ghcr.io) are out of reach here.

It honours what the container route relies on: ``HOST``/``PORT`` (the image's start.sh variables),
``/health``, a data directory at ``/app/backend/data``, the bootstrap admin from
``WEBUI_ADMIN_EMAIL``/``WEBUI_ADMIN_PASSWORD``, and session tokens signed with
``WEBUI_SECRET_KEY`` (so a token survives a restart only when the key does). ``/api/config`` reports
the ``OLLAMA_BASE_URL`` it was started with. Python standard library only.

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA_DIR = Path(os.environ.get("DATA_DIR", "/app/backend/data"))


def sign(email: str) -> str:
    key = os.environ["WEBUI_SECRET_KEY"].encode()
    mac = hmac.new(key, email.encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(email.encode()).decode() + "." + mac


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


class Handler(BaseHTTPRequestHandler):
    def reply(self, code: int, body: dict | str) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            code = fault(self.path) or 200
            return self.reply(code, {"status": code == 200})
        if self.path == "/api/config":
            return self.reply(200, {"name": "Open WebUI (stand-in)", "ollama_base_url": os.environ.get("OLLAMA_BASE_URL")})
        if self.path == "/api/v1/auths/":
            email = verify(self.headers.get("Authorization", "").removeprefix("Bearer "))
            return self.reply(200, {"email": email, "role": "admin"}) if email else self.reply(401, {"detail": "invalid token"})
        if self.path == "/":
            return self.reply(200, "<!doctype html><title>Open WebUI (stand-in)</title>\n")
        return self.reply(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/api/v1/auths/signin" and fault(self.path):
            return self.reply(fault(self.path), {"detail": "refused by the stand-in (standin-faults.json)"})
        if self.path == "/api/v1/auths/signin":
            ok = (body.get("email") == os.environ.get("WEBUI_ADMIN_EMAIL")
                  and hmac.compare_digest(str(body.get("password")), os.environ.get("WEBUI_ADMIN_PASSWORD", "")))
            if ok:
                return self.reply(200, {"token": sign(body["email"]), "email": body["email"], "role": "admin"})
            return self.reply(400, {"detail": "The email or password provided is incorrect."})
        if self.path == "/api/v1/auths/signup":
            return self.reply(403, {"detail": "signup is disabled"})
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
