"""Connection guard for child processes of the end-to-end tests (``ollastack up`` and its pyinfra).

Put this directory on ``PYTHONPATH`` and set ``OLLASTACK_TEST_ALLOWED`` (comma-separated networks,
e.g. ``127.0.0.0/8,10.213.0.10/32``) and ``OLLASTACK_TEST_REFUSED_LOG`` (a file): every Python
process started with that environment writes ``loaded <pid>`` to the log, then refuses IP connections
elsewhere and appends ``refused <address>`` for each, so a test can assert that the guard ran and that
nothing even tried to leave the allowed networks (a cloud credential probing 169.254.169.254 would
otherwise fail quietly). ``ssh`` is not Python: the tests only give it the lab host's address.

Example::

    env = dict(os.environ, PYTHONPATH=str(Path("tests/support/netguard")), OLLASTACK_TEST_ALLOWED="127.0.0.0/8",
               OLLASTACK_TEST_REFUSED_LOG=str(log))
    subprocess.run([sys.executable, "-m", "ollastack.cli", "up"], env=env)
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["loaded", "loaded"]  # CLI, pyinfra
"""

from __future__ import annotations

import ipaddress
import os
import socket


def guard(allowed: list[str], log_path: str, setattr_=setattr) -> None:
    """Refuse IP connections outside ``allowed`` networks, logging each refused address to ``log_path``."""
    networks = [ipaddress.ip_network(n) for n in allowed]
    real_connect = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            try:
                ip = ipaddress.ip_address(address[0])
                ok = any(ip in net for net in networks if net.version == ip.version)
            except ValueError:
                ok = False
            if not ok:
                with open(log_path, "a") as log:
                    log.write(f"refused {address[0]}\n")
                raise ConnectionRefusedError(f"test guard refused a connection to {address[0]}")
        return real_connect(self, address)

    setattr_(socket.socket, "connect", connect)
    with open(log_path, "a") as log:
        log.write(f"loaded {os.getpid()}\n")


if os.environ.get("OLLASTACK_TEST_ALLOWED") and os.environ.get("OLLASTACK_TEST_REFUSED_LOG"):
    guard(os.environ["OLLASTACK_TEST_ALLOWED"].split(","), os.environ["OLLASTACK_TEST_REFUSED_LOG"])
