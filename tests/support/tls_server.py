"""One way for the test stand-ins to serve HTTPS: a threaded ``http.server`` whose listening socket is TLS.

Example::

    server = serve_tls(Handler, ca_context(trustme.CA()))   # certificate for 127.0.0.1 and localhost
    urllib.request.urlopen(f"{server.url}/health", context=...)
    server.stop()
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TLSServer(ThreadingHTTPServer):
    # A request thread still answering must not keep the test process alive.
    daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"https://{host}:{port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def ca_context(ca, *names: str) -> ssl.SSLContext:
    """A server context with a certificate from ``ca`` (a ``trustme.CA``) for ``names`` (default: 127.0.0.1, localhost)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1", "localhost"))).configure_cert(context)
    return context


def serve_tls(handler: Callable[..., BaseHTTPRequestHandler], context: ssl.SSLContext, address: str = "127.0.0.1",
              port: int = 0) -> TLSServer:
    """Serve ``handler`` over TLS on ``address:port`` (0: a free port) from a daemon thread; ``stop()`` ends it."""
    server = TLSServer((address, port), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    # A short poll interval: stop() returns within it.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server
