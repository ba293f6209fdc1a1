"""A pretend host for the control-machine tests: the Open WebUI stand-in over TLS on a loopback address's
port 443 with a certificate from the stack CA (ollastack.certs), and a fake ``ssh`` on PATH that answers
the GPU probe.

Example::

    host = fake_host(monkeypatch, tmp_path, "demo", ("admin@example.com", "pw"))  # https://<host.address>/health: 200
    fake_ssh(tmp_path / "bin", smi=["Tesla T4, 15360"], tags={"models": []})
"""

from __future__ import annotations

import json
import os
import ssl
import stat
from pathlib import Path

from ollastack import certs
from tests.support.serve import serve_tls
from tests.support.webui_standin import app


def loopback_address() -> str:
    """A loopback address of this test process's own (the whole 127/8 is local; several test runs share the machine)."""
    pid = os.getpid()
    return f"127.{(pid >> 16) % 200 + 50}.{(pid >> 8) % 256}.{pid % 250 + 2}"


class TLSWebUI:
    """The Open WebUI stand-in (tests/support/webui_standin/app.py) on ``address:port`` over TLS with ``cert``/``key``.

    Its admin comes from the process environment (``WEBUI_ADMIN_*``, set by the caller); faults via ``fail()``.
    """

    def __init__(self, address: str, port: int, cert: Path, key: Path, data: Path):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.data = data
        self.server = serve_tls(app.Handler, context, address, port)
        self.address, self.port = self.server.server_address[:2]

    def stop(self) -> None:
        self.server.stop()

    def fail(self, **paths: int) -> None:
        """Answer ``health=503`` / ``signin=401`` ... instead of the normal reply."""
        (self.data / "standin-faults.json").write_text(json.dumps(
            {{"health": "/health", "signin": "/api/v1/auths/signin"}[k]: v for k, v in paths.items()}))


def serve_webui(monkeypatch, data: Path, cert: Path, key: Path, admin: tuple[str, str], address: str = "127.0.0.1",
                port: int = 0) -> TLSWebUI:
    """Start a TLSWebUI whose data directory is ``data`` and whose bootstrap admin is ``admin`` (email, password)."""
    data.mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(app, "DATA_DIR", data)
    for name, value in {"WEBUI_SECRET_KEY": "k" * 32, "WEBUI_ADMIN_EMAIL": admin[0],
                        "WEBUI_ADMIN_PASSWORD": admin[1]}.items():
        monkeypatch.setenv(name, value)
    return TLSWebUI(address, port, cert, key, data)


def fake_host(monkeypatch, tmp_path: Path, stack_name: str, admin: tuple[str, str], name: str | None = None) -> TLSWebUI:
    """A host of a static stack: the stand-in on a loopback address's port 443 with a certificate for ``name``
    (default: that address) from the stack CA in ``certs.ssl_dir(stack_name)``."""
    address = loopback_address()
    stack_dir = certs.ssl_dir(stack_name)
    _, key, _ = certs.ensure_server_cert(stack_dir, "fake-1", [name or address])
    fullchain = certs.server_cert_paths(stack_dir, "fake-1").fullchain
    host = serve_webui(monkeypatch, tmp_path / "webui-data", fullchain, key, admin, address, 443)
    host.name = name or address
    return host


def fake_ssh(bin_dir: Path, smi: list[str] | None = None, tags: dict | None = None, exit_code: int = 0,
             stderr: str = "") -> Path:
    """An ``ssh`` in ``bin_dir`` that records its arguments (``ssh.args``, one per line) and prints what a host
    would: nvidia-smi lines, ``---``, the /api/tags JSON. Put ``bin_dir`` first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    out = "".join(f"{line}\n" for line in smi or []) + "---\n" + (json.dumps(tags) if tags is not None else "")
    (bin_dir / "ssh.out").write_text(out)
    (bin_dir / "ssh.err").write_text(stderr)
    script = bin_dir / "ssh"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{bin_dir}/ssh.args'\ncat '{bin_dir}/ssh.out'\n"
                      f"cat '{bin_dir}/ssh.err' >&2\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script
