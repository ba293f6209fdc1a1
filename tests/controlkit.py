"""A pretend host for the control-machine tests: a TLS server on a loopback address's port 443 serving a
certificate from the stack CA (ollastack.certs), and a fake ``ssh`` on PATH that answers the GPU probe.

Example::

    host = FakeHost(stack_name="demo").start()      # https://<host.address>/ answers 200
    fake_ssh(tmp_path, monkeypatch, smi=["Tesla T4, 15360"], tags={"models": []})
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import stat
import threading
from pathlib import Path

from ollastack import certs


def loopback_address() -> str:
    """A loopback address of this test process's own (several test runs share the machine)."""
    pid = os.getpid()
    return f"127.{(pid >> 16) % 200 + 50}.{(pid >> 8) % 256}.{pid % 250 + 2}"


class FakeHost:
    """HTTPS on ``address``:443 with a certificate for ``name`` issued by the stack CA in ``ssl_dir``."""

    def __init__(self, stack_name: str, address: str | None = None, name: str | None = None, status: int = 200):
        self.address = address or loopback_address()
        self.name = name or self.address
        self.stack_dir = certs.ssl_dir(stack_name)
        self.status = status
        self.server: http.server.ThreadingHTTPServer | None = None

    def start(self) -> "FakeHost":
        cert, key, _ = certs.ensure_server_cert(self.stack_dir, "fake-1", [self.name])
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert_paths(self.stack_dir, "fake-1").fullchain, key)
        status = self.status

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"fake host\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((self.address, 443), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


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
