"""Pebble, Let's Encrypt's test ACME server (Debian package ``pebble``), run by the tests on the control machine.

Pebble is a real ACME server: it validates HTTP-01 challenges by fetching
``http://<domain>:80/.well-known/acme-challenge/<token>`` from the host, and it looks the domain up
in ``pebble-challtestsrv``'s DNS, which answers every A query with the lab host's address. Pebble's
own HTTPS listener uses a certificate from a throwaway CA made here (``ollastack.certs``); certbot
on the host trusts that CA through ``tls.acme_ca_bundle``.

Example::

    with Pebble(tmp_path, "10.213.0.1", answer="10.213.0.10") as pebble:
        print(pebble.directory, pebble.root_pem())
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from ollastack import certs


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class Pebble:
    """``pebble`` on ``address`` plus ``pebble-challtestsrv`` DNS (on ``address`` and loopback)."""

    def __init__(self, workdir: Path, address: str, answer: str):
        self.dir = workdir / "pebble"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.answer = answer
        self.acme_port, self.management_port = free_port(address), free_port(address)
        self.dns_port = free_port(address)
        self.challtest_port = free_port("127.0.0.1")
        self.procs: list[subprocess.Popen] = []

    @property
    def directory(self) -> str:
        return f"https://{self.address}:{self.acme_port}/dir"

    @property
    def dns_server(self) -> str:
        """The resolver address for ``tls.dns_server``: challtestsrv on loopback."""
        return f"127.0.0.1:{self.dns_port}"

    @property
    def tls_ca(self) -> Path:
        """CA of Pebble's own HTTPS listener (what certbot must trust), not of the certificates it issues."""
        return self.dir / "ca.pem"

    def _listener_cert(self) -> certs.ServerCertPaths:
        certs.ensure_server_cert(self.dir, "pebble", [self.address, "127.0.0.1", "localhost"])
        return certs.server_cert_paths(self.dir, "pebble")

    def start(self) -> "Pebble":
        paths = self._listener_cert()
        config = {"pebble": {
            "listenAddress": f"{self.address}:{self.acme_port}",
            "managementListenAddress": f"{self.address}:{self.management_port}",
            "certificate": str(paths.fullchain), "privateKey": str(paths.key),
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}
        (self.dir / "pebble-config.json").write_text(json.dumps(config))
        dns = f"{self.address}:{self.dns_port},{self.dns_server}"
        self._spawn("challtestsrv", ["pebble-challtestsrv", "-dns01", dns, "-http01", "", "-https01", "",
                                     "-tlsalpn01", "", "-management", f"127.0.0.1:{self.challtest_port}",
                                     "-defaultIPv4", self.answer, "-defaultIPv6", ""], {})
        # Real validations, no random waits or nonce rejections: the tests measure ollastack, not Pebble's chaos.
        env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0", "PEBBLE_WFE_NONCEREJECT": "0"}
        self._spawn("pebble", ["pebble", "-config", str(self.dir / "pebble-config.json"),
                               "-dnsserver", f"{self.address}:{self.dns_port}"], env)
        self._wait_ready()
        return self

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, **env),
                                           cwd=self.dir))

    def _wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.root_pem()
                return
            except OSError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    logs = "\n".join(p.read_text()[-1500:] for p in self.dir.glob("*.log"))
                    raise RuntimeError(f"Pebble did not start:\n{logs}") from None
                time.sleep(0.1)

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.tls_ca))
        url = f"https://{self.address}:{self.management_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()

    def root_pem(self) -> str:
        """Pebble's issuing root, regenerated at every start (management endpoint ``/roots/0``)."""
        return self._get("/roots/0").decode()

    def add_a(self, name: str, address: str) -> None:
        """Make challtestsrv answer ``name`` with ``address`` instead of the default."""
        body = json.dumps({"host": name.rstrip(".") + ".", "addresses": [address]}).encode()
        urllib.request.urlopen(f"http://127.0.0.1:{self.challtest_port}/add-a", data=body, timeout=5).read()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)

    def __enter__(self) -> "Pebble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
