"""A small client of Open WebUI's own API, from the control machine through nginx over verified HTTPS.

It reuses the readiness check's HTTPS client (``ready.request``: the stack CA, SNI and the host's name),
so it talks to exactly what ``up`` just verified. nginx limits ``/api/v1/auths/`` per client address
(``deploy/nginx.py``): an answer 429 is waited out, a little at a time, instead of failing.

Example::

    admin = signin(Target("10.213.0.10", "10.213.0.10", "ssl/demo/ca.pem"), "admin@example.com", password)
    groups = admin.get("/api/v1/groups/")
    admin.post("/api/v1/groups/create", {"name": "staff", "description": "", "permissions": {}})
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from ollastack import ready

SIGNIN = ready.SIGNIN
# Answers can hold whole model and config tables: read far more than the readiness check does.
READ_LIMIT = 64 << 20
RATE_LIMITED, RATE_PAUSE_S, RATE_WAIT_S = 429, 6.0, 120.0


class ApiError(Exception):
    """Open WebUI refused a request, or did not answer; ``status`` is its HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def call(target: ready.Target, method: str, path: str, body: dict | None = None, token: str = "") -> Any:
    """The JSON answer of one request; raises ApiError naming the path, the status and Open WebUI's detail.

    A secret in ``body`` (a password) never appears in the error.
    Example: ``call(target, "GET", "/api/v1/users/?page=1", token=token)["users"]``
    """
    deadline = time.monotonic() + RATE_WAIT_S
    while True:
        try:
            status, data = ready.request(target, method, path, body, token=token, limit=READ_LIMIT)
        except OSError as exc:
            raise ApiError(f"{method} {path}: no answer ({exc})") from None
        if status != RATE_LIMITED or time.monotonic() + RATE_PAUSE_S > deadline:
            break
        time.sleep(RATE_PAUSE_S)
    if status != 200:
        raise ApiError(f"{method} {path}: Open WebUI answered {status} ({_detail(data, body)})", status)
    try:
        return json.loads(data)
    except ValueError:
        raise ApiError(f"{method} {path}: not JSON ({data[:80]!r})", status) from None


def _detail(data: bytes, body: dict | None) -> str:
    detail, secret = ready._detail(data), str((body or {}).get("password") or "")
    return detail.replace(secret, "***") if secret else detail


@dataclass(frozen=True)
class Session:
    """Requests as one signed-in account (its token is never printed: not in ``repr`` either)."""

    target: ready.Target
    email: str
    token: str

    def __repr__(self) -> str:
        return f"Session({self.target.url!r}, {self.email!r})"

    def get(self, path: str) -> Any:
        return call(self.target, "GET", path, token=self.token)

    def post(self, path: str, body: dict) -> Any:
        return call(self.target, "POST", path, body, token=self.token)


def signin(target: ready.Target, email: str, password: str) -> Session:
    """Sign in (``POST /api/v1/auths/signin``) and keep the token; raises ApiError when refused."""
    answer = call(target, "POST", SIGNIN, {"email": email, "password": password})
    return Session(target, email, answer["token"])
