"""Skip an operation whose result the host shows already, checked in one remote command per component.

pyinfra gathers one fact per operation (two for a file: its stat, then its checksum), each a remote
command. A component instead reads ``HostState`` once for all its files, directories, links, services
and packages, and calls an operation only where the host differs from what it would make: a file's
content (sha1, as pyinfra compares it), mode and owner, a link's target, a service not running or not
enabled, a package not installed. Nothing is taken from a stamp or from the last run: what drifted on
the host still gets its operation, which then decides and acts exactly as before.

Example::

    present = host_state(paths=[RULES], services=["ollastack-firewall"])
    rules = templated(present, name="Firewall rules", src=..., dest=RULES, mode="0600", admin4=...)
    _if=rules.did_change   # False when the host had the file already
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from io import StringIO
from pathlib import Path

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.api.util import get_template
from pyinfra.operations import files, systemd

# What pyinfra's SystemdStatus and SystemdEnabled count as running and as enabled.
RUNNING = {"running", "waiting", "exited", "listening", "mounted"}
ENABLED = {"enabled", "static"}


class HostState(FactBase[dict]):
    """Paths (kind, mode, owner, sha1 or link target), services (sub-state, unit file state) and installed
    packages, in one command.

    Returns ``{"paths": {"/etc/x": {"kind": "file", "mode": "644", "user": "root", "group": "root",
    "sha1": "..."}}, "services": {"nginx.service": ("running", "enabled")}, "packages": ["nginx"]}``;
    a missing path, unit or package is left out.

    Example: ``host.get_fact(HostState, paths=["/etc/ollastack"], services=["nginx"], packages=["nginx"])``
    """

    def command(self, paths: Sequence[str] = (), services: Sequence[str] = (), packages: Sequence[str] = ()) -> str:
        parts = []
        if paths:
            parts.append(
                f"for p in {' '.join(shlex.quote(p) for p in paths)}; do "
                'if [ -L "$p" ]; then printf "link\\t%s\\t%s\\n" "$p" "$(readlink -- "$p")"; '
                'elif [ -f "$p" ]; then printf "file\\t%s\\t%s\\t%s\\n" "$p" "$(stat -c "%a %U %G" -- "$p")" '
                '"$(sha1sum < "$p" | cut -d" " -f1)"; '
                'elif [ -d "$p" ]; then printf "directory\\t%s\\t%s\\n" "$p" "$(stat -c "%a %U %G" -- "$p")"; fi; done')
        if services:
            names = " ".join(shlex.quote(unit_name(s)) for s in services)
            parts.append(f"systemctl show -p Id -p SubState -p UnitFileState -- {names} 2>/dev/null | sed 's/^/unit\\t/'")
        if packages:
            parts.append(f"dpkg-query -W -f '${{db:Status-Abbrev}}\\t${{Package}}\\n' -- "
                         f"{' '.join(shlex.quote(p) for p in packages)} 2>/dev/null | sed 's/^/package\\t/'")
        return "; ".join([*parts, "true"])

    def process(self, output):
        found: dict = {"paths": {}, "services": {}, "packages": []}
        unit: dict[str, str] = {}
        for line in output:
            kind, _, rest = line.rstrip("\n").partition("\t")
            fields = rest.split("\t")
            if kind == "link" and len(fields) == 2:
                found["paths"][fields[0]] = {"kind": "link", "target": fields[1]}
            elif kind in ("file", "directory") and len(fields) >= 2 and len(fields[1].split()) == 3:
                mode, user, group = fields[1].split()
                entry = {"kind": kind, "mode": mode, "user": user, "group": group}
                if kind == "file" and len(fields) == 3:
                    entry["sha1"] = fields[2]
                found["paths"][fields[0]] = entry
            elif kind == "unit":
                key, _, value = rest.strip().partition("=")
                unit[key] = value
                if {"Id", "SubState", "UnitFileState"} <= unit.keys():
                    found["services"][unit["Id"]] = (unit["SubState"], unit["UnitFileState"])
                    unit = {}
            elif kind == "package" and len(fields) == 2 and fields[0][1:2] == "i":
                found["packages"].append(fields[1].strip())
        return found

    def default(self):
        return self.process([])


def unit_name(service: str) -> str:
    """``unit_name("nginx") == "nginx.service"``; names with a unit suffix stay as they are."""
    return service if "." in service else f"{service}.service"


class Unchanged:
    """Stands in for an operation not called because the host matched already: it changed nothing."""

    def did_change(self) -> bool:
        return False


UNCHANGED = Unchanged()


class Present:
    """What ``HostState`` found, with the questions an operation would ask."""

    def __init__(self, found: dict, known: bool = True):
        self.found = found
        # Unknown (NOTHING): no path counts as absent either, so every operation is called.
        self.known = known

    def _owned(self, path: str, kind: str, mode, user, group) -> dict | None:
        entry = self.found["paths"].get(path)
        if not entry or entry["kind"] != kind:
            return None
        if mode is not None and int(str(mode), 8) != int(entry["mode"], 8):
            return None
        if (user is not None and entry["user"] != user) or (group is not None and entry["group"] != group):
            return None
        return entry

    def file(self, path: str, content: bytes, mode=None, user=None, group=None) -> bool:
        entry = self._owned(path, "file", mode, user, group)
        return entry is not None and entry.get("sha1") == hashlib.sha1(content).hexdigest()

    def directory(self, path: str, mode=None, user=None, group=None) -> bool:
        return self._owned(path, "directory", mode, user, group) is not None

    def link(self, path: str, target: str | None) -> bool:
        entry = self.found["paths"].get(path)
        return entry is not None and entry["kind"] == "link" and entry["target"] == target

    def absent(self, path: str) -> bool:
        return self.known and path not in self.found["paths"]

    def installed(self, packages: list[str]) -> bool:
        return all(p in self.found["packages"] for p in packages)


# A component whose own package is not installed yet reads nothing ahead: installing it adds files of its own
# (Debian's nginx enables its default site), which only the operations, run after the install, can see.
NOTHING = Present(HostState().default(), known=False)


def host_state(paths: Sequence[str] = (), services: Sequence[str] = (), packages: Sequence[str] = ()) -> Present:
    """Read ``HostState`` for the current host now (at plan time, before this run's operations)."""
    return Present(host.get_fact(HostState, paths=list(paths), services=list(services), packages=list(packages)))


def put(present: Present, name: str, src, dest: str, mode=None, user=None, group=None):
    """``files.put`` unless ``dest`` already has ``src``'s content, mode and owner."""
    content = src.getvalue().encode() if isinstance(src, StringIO) else Path(src).read_bytes()
    if present.file(dest, content, mode, user, group):
        return UNCHANGED
    return files.put(name=name, src=src, dest=dest, mode=mode, user=user, group=group)


def templated(present: Present, name: str, src: str, dest: str, mode=None, **data):
    """``files.template`` unless ``dest`` already has the rendered text (rendered as pyinfra renders it) and mode."""
    rendered = get_template(src).render({"host": host, "state": state, "inventory": state.inventory, **data})
    if present.file(dest, rendered.encode(), mode):
        return UNCHANGED
    return files.template(name=name, src=src, dest=dest, mode=mode, **data)


def directory(present: Present, name: str, path: str, mode=None, user=None, group=None):
    """``files.directory`` unless ``path`` is a directory with that mode and owner."""
    if present.directory(path, mode, user, group):
        return UNCHANGED
    return files.directory(name=name, path=path, mode=mode, user=user, group=group)


def link(present: Present, name: str, path: str, target: str | None = None, present_: bool = True):
    """``files.link`` unless ``path`` is a link to ``target`` (or, with ``present_=False``, nothing is there)."""
    if present.link(path, target) if present_ else present.absent(path):
        return UNCHANGED
    return files.link(name=name, path=path, target=target, present=present_)


def service_running(present: Present, name: str, service: str, enabled: bool | None = True):
    """``systemd.service(running=True, enabled=...)`` unless the unit runs and is enabled already (``enabled``
    None: runs; its [Install] section decides the rest)."""
    sub, unit_file = present.found["services"].get(unit_name(service), ("", ""))
    if sub in RUNNING and (enabled is None or (enabled and unit_file in ENABLED)):
        return UNCHANGED
    return systemd.service(name=name, service=service, running=True, enabled=enabled)
