"""Ollama's Linux release archives: which file a version ships, where it lies, what its ``sha256sum.txt`` says.

Shared by the deploy (the default download URL) and ``ollastack pin ollama`` (the checksum to pin).

Example::

    archive_name("0.13.3") == "ollama-linux-amd64.tgz"
    archive_name("0.14.0") == "ollama-linux-amd64.tar.zst"
    release_url("0.14.0", "sha256sum.txt") == f"{RELEASES}/v0.14.0/sha256sum.txt"
"""

from __future__ import annotations

import re

RELEASES = "https://github.com/ollama/ollama/releases/download"
# Every host ollastack makes is x86_64: the clouds pick x64 images, lab hosts run this machine's.
ARCH = "amd64"
# From v0.14.0 on, the Linux releases ship `.tar.zst` archives only; every older one has a `.tgz`.
ZSTD_SINCE = (0, 14, 0)
SUMS = "sha256sum.txt"
# sha256sum's own output: the digest, a space, a space or `*` (binary mode), the file name.
_SUM_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+)")


def _number(version: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ValueError(f"Ollama version {version!r}: expected a release number like 0.14.0")
    return tuple(int(part) for part in version.split("."))


def archive_name(version: str, arch: str = ARCH) -> str:
    """The Linux archive release ``version`` ships for ``arch``: ``.tgz`` before 0.14.0, ``.tar.zst`` since."""
    suffix = "tar.zst" if _number(version) >= ZSTD_SINCE else "tgz"
    return f"ollama-linux-{arch}.{suffix}"


def release_url(version: str, name: str, base: str = RELEASES) -> str:
    """Where file ``name`` of release ``version`` lies under ``base`` (GitHub's layout: ``<base>/v<version>/<name>``)."""
    _number(version)
    return f"{base.rstrip('/')}/v{version}/{name}"


def archive_url(version: str) -> str:
    """The official download URL of ``version``'s archive (the deploy's default ``ollama.url``)."""
    return release_url(version, archive_name(version))


def published_sha256(sums: str, name: str) -> str | None:
    """The sha256 that a ``sha256sum.txt`` text gives for file ``name`` (None when it lists no such file).

    Example: ``published_sha256("ab12...  ollama-linux-amd64.tar.zst\\n", "ollama-linux-amd64.tar.zst")``
    """
    for line in sums.splitlines():
        match = _SUM_LINE.fullmatch(line.strip())
        if match and match.group(2).removeprefix("./") == name:
            return match.group(1)
    return None


def listed_files(sums: str) -> list[str]:
    """The file names a ``sha256sum.txt`` text lists, in its order."""
    return [m.group(2).removeprefix("./") for m in map(_SUM_LINE.fullmatch, (line.strip() for line in sums.splitlines())) if m]
