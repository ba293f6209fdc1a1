#!/usr/bin/env python3
"""Package the Ollama stand-in like a real release: ``bin/ollama`` and ``lib/ollama/``.

The archive is a stand-in for ``ollama-linux-amd64.tgz`` / ``.tar.zst``: deploys download or push
it, check its sha256 and unpack it into ``/usr`` exactly as they would a real one. The version is
baked into ``bin/ollama`` so ``ollama -v`` and ``GET /api/version`` report it.

Example::

    path, sha256 = build_archive(tmp_path, "0.13.3")                # ollama-linux-amd64.tgz
    path, sha256 = build_archive(tmp_path, "0.13.3", fmt="tar.zst")
    # or: python3 tests/support/standin/build_archive.py DIR 0.13.3 [tgz|tar.zst]
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

SOURCE = Path(__file__).with_name("ollama_standin.py")
FORMATS = ("tgz", "tar.zst")
# Fixed timestamp: the same version gives byte-identical archives, hence a stable sha256 pin.
MTIME = 1_700_000_000


def standin_program(version: str) -> bytes:
    """The stand-in source with ``VERSION`` set to ``version``."""
    if not re.fullmatch(r"[0-9A-Za-z.+-]+", version):
        raise ValueError(f"version {version!r}: use digits, letters, '.', '+' or '-', e.g. 0.13.3")
    text, count = re.subn(r'^VERSION = ".*"$', f'VERSION = "{version}"', SOURCE.read_text(), count=1,
                          flags=re.MULTILINE)
    if count != 1:
        raise RuntimeError(f"{SOURCE} has no VERSION line to bake the version into")
    return text.encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime, info.mode, info.uname, info.gname = MTIME, mode, "root", "root"
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def _tar_bytes(version: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in ("./", "./bin/", "./lib/", "./lib/ollama/"):
            _add(tar, directory, None, 0o755)
        _add(tar, "./bin/ollama", standin_program(version), 0o755)
        _add(tar, "./lib/ollama/README.standin",
             b"Placeholder: real releases ship the CUDA/ROCm runner libraries here.\n", 0o644)
    return buffer.getvalue()


def build_archive(dest_dir: str | Path, version: str, fmt: str = "tgz") -> tuple[Path, str]:
    """Write ``ollama-linux-amd64.<fmt>`` into ``dest_dir``; return its path and sha256 (hex)."""
    if fmt not in FORMATS:
        raise ValueError(f"archive format {fmt!r}: use one of {', '.join(FORMATS)}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"ollama-linux-amd64.{fmt}"
    raw = _tar_bytes(version)
    if fmt == "tgz":
        data = gzip.compress(raw, mtime=MTIME)
    else:
        data = subprocess.run(["zstd", "-q", "-c", "-19"], input=raw, capture_output=True, check=True).stdout
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: build_archive.py DEST_DIR VERSION [tgz|tar.zst]", file=sys.stderr)
        return 2
    path, sha256 = build_archive(*argv)
    print(f"{sha256}  {path}")
    return 0



def unpack(archive: Path, prefix: Path) -> Path:
    """Unpack like a deploy does (``tar -C /usr -xf``) and return ``bin/ollama``."""
    prefix.mkdir(parents=True)
    compress = ["-I", "zstd"] if archive.name.endswith(".zst") else ["-z"]
    subprocess.run(["tar", "-C", str(prefix), *compress, "-xf", str(archive)], check=True)
    return prefix / "bin" / "ollama"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
