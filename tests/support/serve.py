"""One way for the test stand-ins to serve HTTP or HTTPS: a threaded ``http.server`` run from a daemon thread.

Example::

    server = serve_tls(Handler, ca_context(trustme.CA()))   # certificate for 127.0.0.1 and localhost
    urllib.request.urlopen(f"{server.url}/health", context=...)
    server.stop()
    plain = serve_http(Handler, "10.213.0.1")                # plain.url == "http://10.213.0.1:<port>"
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    # A request thread still answering must not keep the test process alive.
    daemon_threads = True
    scheme = "http"

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def ca_context(ca, *names: str) -> ssl.SSLContext:
    """A server context with a certificate from ``ca`` (a ``trustme.CA``) for ``names`` (default: 127.0.0.1, localhost)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


def _start(server: Server) -> Server:
    # A short poll interval: stop() returns within it.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def serve_http(handler: Callable[..., BaseHTTPRequestHandler], address: str = "127.0.0.1", port: int = 0) -> Server:
    """Serve ``handler`` over plain HTTP on ``address:port`` (0: a free port); ``stop()`` ends it."""
    return _start(Server((address, port), handler))


def serve_tls(handler: Callable[..., BaseHTTPRequestHandler], context: ssl.SSLContext, address: str = "127.0.0.1",
              port: int = 0) -> Server:
    """Serve ``handler`` over TLS with ``context`` on ``address:port`` (0: a free port); ``stop()`` ends it."""
    server = Server((address, port), handler)
    server.scheme = "https"
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return _start(server)
