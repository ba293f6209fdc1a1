"""A signed flat apt repository made on the spot: a stand-in for NVIDIA's CUDA repository in tests.

NVIDIA's repository cannot be reached from here. This one has the same shape (a flat ``deb URL /``
repository with ``InRelease`` and the key served next to it as ``3bf863cc.pub``), signed by a test key
made in a private GNUPGHOME, and holds dummy packages built with dpkg-deb under the driver's names.

Example::

    repo = SignedRepo(tmp_path / "repo", "ollastack test key")
    repo.add_package("cuda-drivers-570", "570.124.06-1", files={"/usr/share/doc/x/README": "stand-in\\n"})
    repo.publish()
    with repo.serve("10.213.0.1") as url:
        ...  # point gpu.cuda_repo_url at url; gpu.cuda_key_fingerprint = repo.fingerprint
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import os
import subprocess
import threading
from pathlib import Path

KEY_FILE = "3bf863cc.pub"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        """Requests are not worth a line each in test output."""


class SignedRepo:
    """A flat apt repository in ``root`` signed with a fresh test key (``fingerprint``)."""

    def __init__(self, root: Path, uid: str):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.gnupghome = root.parent / f".gnupg-{root.name}"
        self.gnupghome.mkdir(mode=0o700, exist_ok=True)
        self._gpg("--quick-gen-key", "--passphrase", "", f"{uid} <test@ollastack.invalid>", "ed25519", "sign", "never")
        listing = self._gpg("--with-colons", "--list-keys").stdout
        self.fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.armored_key = self._gpg("--armor", "--export", self.fingerprint).stdout

    def _gpg(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", *args], check=True, text=True,
                              capture_output=True, env=dict(os.environ, GNUPGHOME=str(self.gnupghome)))

    def add_package(self, name: str, version: str, files: dict[str, str] | None = None, depends: str = "") -> Path:
        """Build a dummy ``name_version_all.deb`` holding ``files`` ({absolute path: text})."""
        tree = self.root.parent / f"build-{name}"
        (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
        control = (f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: ollastack tests "
                   f"<test@ollastack.invalid>\nDescription: stand-in for NVIDIA's {name} (tests only)\n")
        if depends:
            control += f"Depends: {depends}\n"
        (tree / "DEBIAN" / "control").write_text(control)
        for path, text in (files or {}).items():
            target = tree / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        deb = self.root / f"{name}_{version}_all.deb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)], check=True,
                       capture_output=True)
        return deb

    def publish(self) -> None:
        """Write Packages, Release, InRelease and Release.gpg, and the public key as ``3bf863cc.pub``."""
        packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=self.root, check=True,
                                  capture_output=True, text=True).stdout
        (self.root / "Packages").write_text(packages)
        (self.root / "Packages.gz").write_bytes(gzip.compress(packages.encode()))
        for name in ("Release", "InRelease", "Release.gpg"):
            (self.root / name).unlink(missing_ok=True)
        release = subprocess.run(["apt-ftparchive", "release", "."], cwd=self.root, check=True,
                                 capture_output=True, text=True).stdout
        (self.root / "Release").write_text(release)
        self._gpg("--local-user", self.fingerprint, "--clearsign", "-o", str(self.root / "InRelease"),
                  str(self.root / "Release"))
        self._gpg("--local-user", self.fingerprint, "--armor", "--detach-sign", "-o", str(self.root / "Release.gpg"),
                  str(self.root / "Release"))
        (self.root / KEY_FILE).write_text(self.armored_key)

    @contextlib.contextmanager
    def serve(self, address: str):
        """Serve the repository over HTTP on ``address`` (a free port); yields its URL ending in ``/``."""
        handler = functools.partial(QuietHandler, directory=str(self.root))
        server = http.server.ThreadingHTTPServer((address, 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{address}:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()
