"""Whether a converged host is ready, seen from the control machine through nginx, as a visitor sees it.

Ready means: HTTPS answers with a certificate for the host's name that the client verifies, and, when
ollastack installed Open WebUI, ``GET /health`` answers 200 and the admin signs in
(``POST /api/v1/auths/signin``) with the admin role. With ``openwebui.install = "none"`` nginx still
proxies to ``openwebui.port``, but what runs there is the operator's, so only HTTPS is checked.

Passing errors (no answer yet, a 502/503 from nginx while the web UI starts, a certificate that
nginx is still reloading) are retried until a deadline; a refused sign-in is not (Open WebUI limits
sign-in attempts). Each verdict is one line naming the cause; the password never appears in it.

Example::

    verdict = check(Target("chat.example.com", "10.0.0.5", cafile="ssl/demo/ca.pem"),
                    admin=("admin@example.com", password), wait_s=60)
    verdict["ok"], verdict["problem"]   # (False, "Open WebUI answered 503 on /health")
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

HEALTH = "/health"
SIGNIN = "/api/v1/auths/signin"
RETRY_PAUSE_S = 1.0
REQUEST_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Target:
    """Where to check: the TLS name (SNI, certificate and ``Host``), the address to connect to, the CA file
    (None: the system's CAs) and the port."""

    name: str
    address: str
    cafile: str | None = None
    port: int = 443

    @property
    def url(self) -> str:
        return f"https://{self.name}/" if self.port == 443 else f"https://{self.name}:{self.port}/"


class _HostHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one host's address, with SNI, certificate name check and Host header for the target's name.

    What the host itself serves is checked, whatever the name resolves to from here (for
    letsencrypt, the DNS pre-flight has already said where it points).
    """

    def __init__(self, target: Target, timeout: float):
        self._tls = ssl.create_default_context(cafile=target.cafile)
        super().__init__(target.name, target.port, timeout=timeout, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def request(target: Target, method: str, path: str, body: dict | None = None,
            timeout: float = REQUEST_TIMEOUT_S, token: str = "", limit: int = 1 << 20) -> tuple[int, bytes]:
    """(status, body) of one verified HTTPS request; raises OSError (ssl errors included) when none.

    ``token`` goes in ``Authorization: Bearer``; at most ``limit`` bytes of the body are read.
    Example: ``request(Target("10.213.0.10", "10.213.0.10", "ssl/demo/ca.pem"), "GET", "/health")``
    """
    connection = _HostHTTPSConnection(target, timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(limit)
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc!r}") from None
    finally:
        connection.close()


def _detail(body: bytes) -> str:
    """Open WebUI's ``detail`` (or the start of the body), kept short for a one-line verdict."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail else body.decode(errors="replace")
    return " ".join(text.split())[:120]


def _until(deadline: float, attempt):
    """Call ``attempt()`` -> (verdict, retry) until it says no retry or the deadline passes; the last verdict.

    The deadline bounds the retries; each request has its own timeout (REQUEST_TIMEOUT_S).
    """
    while True:
        verdict, retry = attempt()
        if not retry or time.monotonic() + RETRY_PAUSE_S >= deadline:
            return verdict
        time.sleep(RETRY_PAUSE_S)


def check(target: Target, admin: tuple[str, str] | None, wait_s: float = 0.0) -> dict[str, Any]:
    """The readiness verdict: {"url", "ok", "https", "webui", "problem"}; retries passing errors for ``wait_s``.

    ``admin`` is (email, password) when ollastack installed Open WebUI, None otherwise (HTTPS only).
    """
    deadline = time.monotonic() + wait_s
    path = HEALTH if admin else "/"

    def get():
        try:
            status, _ = request(target, "GET", path)
        except OSError as exc:
            return {"ok": False, "https": f"not answering: {exc}",
                    "problem": f"HTTPS to {target.url} failed: {exc}"}, True
        https = f"HTTPS verified, HTTP {status}"
        if admin and status != 200:
            return {"ok": False, "https": https, "problem": f"Open WebUI answered {status} on {HEALTH}"}, status >= 500
        return {"ok": True, "https": https, "problem": None}, False

    verdict = {"url": target.url, **_until(deadline, get)}
    if not admin:
        return {**verdict, "webui": "not checked (openwebui.install = \"none\")"}
    if not verdict["ok"]:
        return {**verdict, "webui": "not healthy"}
    email, password = admin

    def signin():
        try:
            status, body = request(target, "POST", SIGNIN, {"email": email, "password": password})
        except OSError as exc:
            return f"no answer to the sign-in ({exc})", True
        if status != 200:
            detail = _detail(body).replace(password, "***") if password else _detail(body)
            return f"the admin {email} cannot sign in ({status} {detail})", status >= 500 or status == 429
        try:
            role = json.loads(body).get("role")
        except (ValueError, AttributeError):
            role = None
        return (None if role == "admin" else f"{email} signs in but is not an admin (role {role})"), False

    problem = _until(deadline, signin)
    if problem:
        return {**verdict, "ok": False, "webui": "healthy", "problem": problem}
    return {**verdict, "webui": f"healthy, admin {email} signs in"}
