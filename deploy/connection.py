"""The SSH connection pyinfra holds to the host: Nagle's algorithm off (``TCP_NODELAY``).

paramiko sets no socket options, so each small SSH packet (a channel open, an exec request) that follows
another one waits for the host's delayed ACK, up to 40 ms, before it leaves: about that much per remote
command, on any network. With the option set, 40 one-command operations on a lab host took 1.2-1.4 s
instead of 2.9-3.0 s (benchmarks/converge.py shows it on whole converges). A host reached through a jump
host talks through an ssh client's pipe (paramiko's ``ProxyCommand``), which has no such socket, and is left
as it is.

Example (deploy/site.py, first)::

    tcp_no_delay()
"""

from __future__ import annotations

import socket

from pyinfra import host


def tcp_no_delay() -> bool:
    """Set ``TCP_NODELAY`` on this host's SSH socket; False where there is none (another connector, a jump).

    Example: ``tcp_no_delay()`` is True for a host pyinfra reached over TCP with its ssh connector.
    """
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        # A socket closed under us: the next command reports the lost connection as pyinfra does.
        return False
    return True
