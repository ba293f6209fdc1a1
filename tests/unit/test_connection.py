"""deploy/connection.py: Nagle's algorithm off on the SSH connection's own TCP socket, and nothing else touched."""

from __future__ import annotations

import socket
import types

import paramiko
from pyinfra.context import ctx_host

from ollastack.deploy.connection import tcp_no_delay


def on(sock, closed: bool = False) -> bool:
    """``tcp_no_delay()`` for a host whose ssh connector's paramiko transport runs over ``sock`` (``closed``
    under it first)."""
    transport = paramiko.Transport(sock)
    if closed:
        sock.close()
    client = types.SimpleNamespace(get_transport=lambda: transport)
    try:
        with ctx_host.use(types.SimpleNamespace(connector=types.SimpleNamespace(client=client))):
            return tcp_no_delay()
    finally:
        transport.close()


def test_the_tcp_socket_gets_no_delay():
    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = socket.create_connection(server.getsockname())
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        assert on(sock) is True
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_jump_hosts_pipe_a_closed_socket_and_other_connectors_are_left_alone():
    proxy = paramiko.ProxyCommand("cat")
    try:
        assert on(proxy) is False
    finally:
        proxy.close()
    with socket.create_server(("127.0.0.1", 0)) as server:
        assert on(socket.create_connection(server.getsockname()), closed=True) is False
    with ctx_host.use(types.SimpleNamespace(connector=types.SimpleNamespace())):
        assert tcp_no_delay() is False
    unconnected = types.SimpleNamespace(client=types.SimpleNamespace(get_transport=lambda: None))
    with ctx_host.use(types.SimpleNamespace(connector=unconnected)):
        assert tcp_no_delay() is False
