"""``ollastack backup / backup list / backup --fetch / restore``: Open WebUI's data, kept on the control machine.

Each host's snapshot is taken on the host by ``deploy/files/openwebui-backup.py`` (run over SSH with the
host's own python3, as the one way to run host commands: ``ollastack.remote.host_command``) and streamed
back as a tar; nothing is written to the host but a staging directory it removes. On the control
machine a backup is ``<state dir>/backups/<host>/<ID>/`` (0700 directories, 0600 files, a ``.gitignore``
of ``*`` at the top) holding ``webui.db``, ``uploads/``, ``vector_db/``, ``secret-key.env``,
``config.json`` and ``manifest.json`` (when, Open WebUI and ollastack versions, sha256 of every file).
Only the newest ``backup.keep`` of each host are kept.

``restore`` checks every file against the manifest and the host's Open WebUI release against the
backup's before it touches anything: Open WebUI migrates its database forward only.

Example::

    taken = backup.take(stack, Progress())          # [{"host": "demo-1", "id": "20261201T143000Z", ...}]
    backup.restore(stack, Progress(), "20261201T143000Z")
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from ollastack import __version__, providers
from ollastack.config import Stack
from ollastack.host import Host
from ollastack.remote import host_command
from ollastack.resources import deploy_file
from ollastack.state import private_dir, state_dir, write_atomic

MANIFEST = "manifest.json"
# Where ollastack-backup.service keeps its dated tars on each host.
HOST_DIR = "/var/backups/ollastack/openwebui"
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z$")


class BackupError(Exception):
    """A backup or restore could not be done; the message says why and what was (not) touched."""


def backups_dir(host_name: str = "") -> Path:
    """``<state dir>/backups`` (self-ignoring for git), or a host's directory below it."""
    root = private_dir(state_dir() / "backups")
    return private_dir(root / host_name) if host_name else root


def _script() -> str:
    return deploy_file("files/openwebui-backup.py").read_text()


def script_words(stack: Stack, mode: str, *args: str) -> list[str]:
    """The words running the host-side script in ``mode``: ``python3 -c <script> MODE ROUTE PORT ...``."""
    return ["python3", "-c", _script(), mode, stack.openwebui.install, str(stack.openwebui.port), *args]


def _hosts(stack: Stack, hosts: list[Host] | None = None) -> list[Host]:
    if stack.openwebui.install == "none":
        raise BackupError("openwebui.install = \"none\": ollastack installs no Open WebUI here, so it keeps no backup of it")
    return providers.get(stack.stack.provider).hosts(stack) if hosts is None else hosts


def sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def _plain_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The members of a received tar; anything but plain files and directories below the top is refused."""
    for member in tar:
        parts = member.name.split("/")
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise BackupError(f"refusing tar member {member.name!r} from the host")
        member.mode = 0o700 if member.isdir() else 0o600
        yield member


def _private_tree(path: Path) -> None:
    for item in [path, *path.rglob("*")]:
        item.chmod(0o700 if item.is_dir() else 0o600)


def _receive(stack: Stack, host: Host, words: list[str], progress: Callable[[str], None],
             label: str = "") -> dict[str, Any]:
    """Run ``words`` on ``host``, unpack the tar it writes on stdout into a new backup; return its manifest."""
    home = backups_dir(host.name)
    partial = Path(tempfile.mkdtemp(dir=home, prefix=".partial-"))
    try:
        process = subprocess.Popen(host_command(stack, host, *words), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        try:
            with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
                tar.extractall(partial, members=_plain_members(tar))
        except tarfile.TarError:
            pass
        errors = process.stderr.read().decode(errors="replace")
        if process.wait() != 0 or not (partial / "host.json").exists():
            raise BackupError(f"{host.name}: the backup on the host failed: {errors.strip()[-500:] or 'no output'}")
        for line in errors.splitlines():
            progress(f"{host.name}: {line.removeprefix('open-webui backup: ')}")
        info = json.loads((partial / "host.json").read_text())
        (partial / "host.json").unlink()
        for rel, digest in info["files"].items():
            if sha256(partial / rel) != digest:
                raise BackupError(f"{host.name}: {rel} arrived damaged (sha256 differs from the host's)")
        if not ID_PATTERN.match(info.get("id", "")):
            raise BackupError(f"{host.name}: the host sent no valid backup id")
        manifest = {**info, "stack": stack.stack.name, "host": host.name, "ollastack_version": __version__,
                    **({"label": label} if label else {})}
        write_atomic(partial / MANIFEST, json.dumps(manifest, indent=2) + "\n", mode=0o600)
        _private_tree(partial)
        final = home / info["id"]
        if final.exists():
            raise BackupError(f"{host.name}: backup {info['id']} exists already")
        partial.rename(final)
        return manifest
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _prune(host_name: str, keep: int, progress: Callable[[str], None]) -> None:
    for old in _ids(host_name)[:-keep]:
        shutil.rmtree(backups_dir(host_name) / old)
        progress(f"{host_name}: removed backup {old} (backup.keep = {keep})")


def _ids(host_name: str) -> list[str]:
    home = backups_dir(host_name)
    return sorted(p.name for p in home.iterdir() if ID_PATTERN.match(p.name) and (p / MANIFEST).exists())


def take(stack: Stack, progress: Callable[[str], None], fetch: bool = False, hosts: list[Host] | None = None,
         label: str = "") -> list[dict[str, Any]]:
    """A new backup of every host (``fetch``: copy each host's newest scheduled one instead).

    ``hosts``: only these; ``label`` is kept in the manifest and shown by ``backup list`` (e.g.
    "before the upgrade to open-webui 0.12.5").
    """
    taken = []
    for host in _hosts(stack, hosts):
        if fetch:
            progress(f"{host.name}: fetching the newest scheduled backup from {HOST_DIR}")
            words = script_words(stack, "latest", HOST_DIR)
        else:
            progress(f"{host.name}: taking a backup of Open WebUI's data")
            models = [stack.ollama.models_dir] if stack.backup.include_models else []
            words = script_words(stack, "backup", stack.openwebui.admin_email, *models)
        manifest = _receive(stack, host, words, progress, label)
        size = sum(f.stat().st_size for f in (backups_dir(host.name) / manifest["id"]).rglob("*") if f.is_file())
        progress(f"{host.name}: backup {manifest['id']} kept ({size / 1e6:.1f} MB, Open WebUI "
                 f"{manifest['openwebui_version']})")
        _prune(host.name, stack.backup.keep, progress)
        taken.append({"host": host.name, "id": manifest["id"], "path": str(backups_dir(host.name) / manifest["id"]),
                      "size": size, "openwebui_version": manifest["openwebui_version"]})
    return taken


def list_backups() -> list[dict[str, Any]]:
    """Every backup on this machine, per host, oldest first."""
    rows = []
    for home in sorted(p for p in backups_dir().iterdir() if p.is_dir()):
        for backup_id in _ids(home.name):
            manifest = json.loads((home / backup_id / MANIFEST).read_text())
            size = sum(f.stat().st_size for f in (home / backup_id).rglob("*") if f.is_file())
            rows.append({"host": home.name, "id": backup_id, "taken_at": manifest["taken_at"],
                         "openwebui_version": manifest["openwebui_version"], "size": size,
                         "label": manifest.get("label", "")})
    return rows


def release_key(version: str) -> tuple[int, ...]:
    """``"0.12.4"`` -> ``(0, 12, 4)``: releases compare by their numbers."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def installed(stack: Stack, host: Host) -> dict[str, str | None]:
    """What the host has installed: {"version": release or None, "image": the container's image or None}.

    Both None on a host where Open WebUI was never installed (or, for the image, is not running), and on
    one without python3 (exit 127), which no converge has reached: the base deploy installs it.
    """
    result = subprocess.run(host_command(stack, host, *script_words(stack, "version")), capture_output=True,
                            text=True, timeout=120)
    if result.returncode == 127:
        return {"version": None, "image": None}
    if result.returncode != 0:
        raise BackupError(f"{host.name}: cannot read the host's Open WebUI release: {result.stderr.strip()[-300:]}")
    try:
        answer = json.loads(result.stdout)
        facts = {"version": answer["version"], "image": answer.get("image")}
        if not all(value is None or isinstance(value, str) for value in facts.values()):
            raise ValueError("not text")
        return facts
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BackupError(f"{host.name}: the host's answer about its Open WebUI release was not understood: "
                          f"{result.stdout.strip()[:200]!r}") from None


def _host_version(stack: Stack, host: Host) -> str | None:
    return installed(stack, host)["version"]


def _checked(host: Host, backup_id: str | None) -> tuple[Path, dict[str, Any]]:
    """The backup to restore on ``host`` and its manifest, every file checked against its sha256."""
    ids = _ids(host.name)
    if not ids:
        raise BackupError(f"{host.name}: no backup under {backups_dir(host.name)}; nothing was changed")
    chosen = backup_id or ids[-1]
    if chosen not in ids:
        raise BackupError(f"{host.name}: no backup {chosen} (have: {', '.join(ids)}); nothing was changed")
    path = backups_dir(host.name) / chosen
    manifest = json.loads((path / MANIFEST).read_text())
    for rel, digest in manifest["files"].items():
        if not (path / rel).is_file() or sha256(path / rel) != digest:
            raise BackupError(f"{host.name}: {path / rel} is missing or damaged (sha256 differs from the "
                              "manifest); nothing was changed")
    return path, manifest


def _send(path: Path, manifest: dict[str, Any], out: IO[bytes]) -> None:
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for rel in manifest["files"]:
            tar.add(path / rel, arcname=rel, recursive=False)
        blob = json.dumps({"files": manifest["files"]}).encode()
        member = tarfile.TarInfo("host.json")
        member.size, member.mode = len(blob), 0o600
        tar.addfile(member, io.BytesIO(blob))


def restore(stack: Stack, progress: Callable[[str], None], backup_id: str | None = None,
            hosts: list[Host] | None = None, stopped: bool = False) -> list[dict[str, Any]]:
    """Put a backup (default: each host's newest) back onto every host of the stack (``hosts``: only these).

    Every host is checked before any is touched: the files against the manifest, and the host's Open WebUI
    release, which must be the backup's or newer. ``stopped`` (an upgrade's rollback) leaves Open WebUI
    stopped for the converge that installs and starts the backup's own release, so the host's release
    (the failed one) is not compared.
    """
    plans = []
    for host in _hosts(stack, hosts):
        path, manifest = _checked(host, backup_id)
        if stopped:
            plans.append((host, path, manifest, manifest.get("openwebui_version")))
            continue
        have, had = _host_version(stack, host), manifest.get("openwebui_version")
        if have is None or had is None:
            raise BackupError(f"{host.name}: the Open WebUI release of the {'host' if have is None else 'backup'} "
                              "is unknown; nothing was changed")
        if release_key(had) > release_key(have):
            raise BackupError(f"{host.name}: backup {path.name} comes from Open WebUI {had}, newer than the host's "
                              f"{have}: Open WebUI cannot go back to an older release; upgrade the host to {had} "
                              "(openwebui.version) first. Nothing was changed")
        plans.append((host, path, manifest, have))
    restored = []
    for host, path, manifest, have in plans:
        progress(f"{host.name}: restoring backup {path.name} (Open WebUI {manifest['openwebui_version']} onto {have})")
        mode = "restore-stopped" if stopped else "restore"
        process = subprocess.Popen(host_command(stack, host, *script_words(stack, mode, stack.ollama.models_dir)),
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=sys.stderr)
        assert process.stdin is not None
        try:
            _send(path, manifest, process.stdin)
            process.stdin.close()
        except BrokenPipeError:
            pass
        if process.wait() != 0:
            raise BackupError(f"{host.name}: the restore of {path.name} failed on the host (its output is above)")
        progress(f"{host.name}: backup {path.name} restored; " +
                 ("Open WebUI left stopped" if stopped else "Open WebUI answers /health"))
        restored.append({"host": host.name, "id": path.name})
    return restored
