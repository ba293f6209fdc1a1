"""A stand-in for Ollama's GitHub release downloads: ``<url>/v<version>/<file>``, each release with its
``sha256sum.txt``.

Like GitHub, a download answers 302 to the file on an asset path (clients must follow redirects) and an
unknown release or file answers 404. Each published release holds the Ollama stand-in archive that its
version ships (``ollastack.ollama_release.archive_name``), an arm64 and a ROCm archive beside it, and a
``sha256sum.txt`` in the release workflow's own format (``find . -type f | xargs sha256sum`` in dist/:
``<hex>  ./ollama-linux-amd64.tar.zst``).

Example::

    releases = Releases(tmp_path)
    path, sha256 = releases.publish("0.14.0")            # ollama-linux-amd64.tar.zst
    with releases.serve_tls(trustme.CA()) as url:        # or releases.serve("10.213.0.1"): plain HTTP
        os.environ["OLLASTACK_OLLAMA_RELEASES_URL"] = url
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from ollastack.ollama_release import SUMS, archive_name
from tests.support.standin.build_archive import build_archive
from tests.support.serve import ca_context, serve_http, serve_tls

ASSETS = "/assets"


class Releases:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        # Where downloads are redirected to (GitHub: its asset host); None: this server itself.
        self.asset_host: str | None = None
        self._lock = threading.Lock()

    def publish(self, version: str, sums: str | None = None) -> tuple[Path, str]:
        """Publish release ``version``: its amd64 stand-in archive (path, sha256 returned) and the rest.

        ``sums`` replaces the generated ``sha256sum.txt`` text (a release that lists other files).
        """
        suffix = archive_name(version).split(".", 1)[1]
        release = self.root / f"v{version}"
        path, sha256 = build_archive(release, version, fmt=suffix)
        for other in (f"ollama-linux-arm64.{suffix}", f"ollama-linux-amd64-rocm.{suffix}"):
            (release / other).write_bytes(f"stand-in {other} {version}\n".encode())
        listed = sorted(p for p in release.iterdir() if p.name != SUMS)
        (release / SUMS).write_text(sums if sums is not None else "".join(
            f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.name}\n" for p in listed))
        return path, sha256

    def _handler(self) -> type[http.server.SimpleHTTPRequestHandler]:
        releases = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                with releases._lock:
                    releases.requests.append(path)
                if path.startswith(f"{ASSETS}/"):
                    self.path = path.removeprefix(ASSETS)
                    return super().do_GET()
                parts = path.strip("/").split("/")
                if len(parts) == 2 and (releases.root / parts[0] / parts[1]).is_file():
                    self.send_response(302)
                    self.send_header("Location", f"{releases.asset_host or ''}{ASSETS}{path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_error(404, "Not Found")
                return None

            do_HEAD = do_GET

            def log_message(self, *args) -> None:
                pass

        return Handler

    @contextlib.contextmanager
    def serve(self, address: str) -> Iterator[str]:
        """Serve over plain HTTP on ``address`` (a free port), e.g. the lab bridge's; yields the base URL."""
        server = serve_http(functools.partial(self._handler(), directory=str(self.root)), address)
        try:
            yield server.url
        finally:
            server.stop()

    @contextlib.contextmanager
    def serve_tls(self, ca) -> Iterator[str]:
        """Serve over HTTPS on 127.0.0.1 with a certificate from ``ca`` (a ``trustme.CA``); yields the base URL."""
        server = serve_tls(functools.partial(self._handler(), directory=str(self.root)), ca_context(ca))
        try:
            yield server.url
        finally:
            server.stop()
