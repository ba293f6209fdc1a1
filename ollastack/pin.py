"""``ollastack pin ollama VERSION``: the sha256 that release's own ``sha256sum.txt`` gives for the archive the
hosts install, written with the version into the stack file, the rest of the file kept as it was.

The stack file is edited with tomlkit, which keeps comments, order and spacing; the new text is validated
as a whole stack description before it replaces the old one (atomically, with the old file's mode).

Example::

    pinned = pin_ollama(Path("stack.toml"), "0.14.0")
    pinned["sha256"]     # the line of ollama-linux-amd64.tar.zst in .../v0.14.0/sha256sum.txt
"""

from __future__ import annotations

import os
import re
import ssl
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import tomlkit

from ollastack import __version__
from ollastack.config import ConfigError, parse_stack
from ollastack.state import write_atomic
from ollastack.ollama_release import RELEASES, SUMS, archive_name, listed_files, published_sha256, release_url

# Where the releases are read from instead of GitHub (GitHub's layout: <url>/v<version>/<file>).
RELEASES_ENV = "OLLASTACK_OLLAMA_RELEASES_URL"
TIMEOUT_S = 30
# A release's sha256sum.txt lists a few dozen files; anything far larger is not one.
MAX_SUMS_BYTES = 1 << 20
# A release tag as GitHub shows it (v0.14.0) or the bare number the stack file takes.
VERSION_RE = re.compile(r"v?(\d{1,6}\.\d{1,6}\.\d{1,6})")


class PinError(Exception):
    """Why nothing was pinned, in one line; ``bad_input`` when the version itself is the problem (exit 2)."""

    def __init__(self, message: str, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def release_version(text: str) -> str:
    """The release number in ``text``, validated whole: ``release_version("v0.14.0") == "0.14.0"``."""
    match = VERSION_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an Ollama release number like 0.14.0")
    return match.group(1)


def releases_base() -> str:
    return os.environ.get(RELEASES_ENV) or RELEASES


class _StayOnHTTPS(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub sends downloads to its asset host), never from HTTPS to plain HTTP: the
    checksums are what every later download is trusted by."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if req.full_url.startswith("https:") and not newurl.startswith("https:"):
            raise PinError(f"{req.full_url} redirects off HTTPS (to {newurl}); nothing was pinned")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def read_sums(version: str, base: str) -> tuple[str, str]:
    """(URL, text) of release ``version``'s ``sha256sum.txt``; PinError naming the URL when it cannot be had."""
    url = release_url(version, SUMS, base)
    request = urllib.request.Request(url, headers={"User-Agent": f"ollastack/{__version__}"})
    try:
        with urllib.request.build_opener(_StayOnHTTPS).open(request, timeout=TIMEOUT_S) as response:
            body = response.read(MAX_SUMS_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise PinError(f"there is no Ollama release v{version} ({url} answered 404)", bad_input=True) from None
        raise PinError(f"{url} answered {exc.code} {exc.reason}; nothing was pinned") from None
    except (urllib.error.URLError, ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PinError(f"cannot read {url}: {reason}; nothing was pinned") from None
    if len(body) > MAX_SUMS_BYTES:
        raise PinError(f"{url} is larger than {MAX_SUMS_BYTES} bytes: not a sha256sum.txt; nothing was pinned")
    try:
        return url, body.decode("utf-8")
    except UnicodeDecodeError:
        raise PinError(f"{url} is not text: not a sha256sum.txt; nothing was pinned") from None


def with_settings(text: str, section: str, values: dict[str, str]) -> str:
    """``text`` (a stack file) with ``values`` set in ``[section]``, everything else as it was.

    Example: ``with_settings(text, "openwebui", {"version": "0.12.4"})``
    """
    document = tomlkit.parse(text)
    if section not in document:
        document.add(section, tomlkit.table())
    table: Any = document[section]
    for name, value in values.items():
        table[name] = value
    return tomlkit.dumps(document)


def pinned_text(text: str, version: str, sha256: str) -> str:
    """``text`` (a stack file) with ``ollama.version`` and ``ollama.sha256`` set, everything else as it was."""
    return with_settings(text, "ollama", {"version": version, "sha256": sha256})


def pin_ollama(path: Path, version: str, base: str | None = None) -> dict[str, str]:
    """Pin Ollama ``version`` in the stack file ``path``; returns what was written and where it came from."""
    version = release_version(version)
    name = archive_name(version)
    url, sums = read_sums(version, base or releases_base())
    sha256 = published_sha256(sums, name)
    if sha256 is None:
        files = listed_files(sums)
        shown = ", ".join(files[:8]) + (", ..." if len(files) > 8 else "") if files else "no files"
        raise PinError(f"{url} lists no {name}, the archive v{version} is installed from (it lists {shown}); "
                       "nothing was pinned")
    text = pinned_text(path.read_text(encoding="utf-8"), version, sha256)
    try:
        parse_stack(tomllib.loads(text), str(path))
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise PinError(f"the pinned stack file would not be valid ({exc}); nothing was written") from None
    target = path.resolve()
    write_atomic(target, text, mode=target.stat().st_mode & 0o7777)
    return {"version": version, "sha256": sha256, "archive": name, "sums_url": url}
