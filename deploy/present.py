"""Skip an operation whose result the host shows already, checked in one remote command per component, or
for the whole site at once (``prefetch``, from deploy/reads.py); where the host differs, make only the
change the read shows (``deploy.changes``).

pyinfra gathers one fact per operation (two for a file: its stat, then its checksum), each a remote
command. A component instead reads ``HostState`` once for all its files, directories, links, services
and packages, and calls an operation only where the host differs from what it would make: a file's
content (sha1, as pyinfra compares it), mode and owner, a link's target, a service not running or not
enabled, a package not installed. Nothing is taken from a stamp or from the last run: what drifted on
the host still gets its operation. For a file, a directory or a service that operation is one of
``deploy.changes``, which runs only the commands the difference read here needs (pyinfra's would read
the host again first, a remote command per fact); other operations decide and act exactly as before.

Example::

    present = host_state(paths=[RULES], services=["ollastack-firewall"])
    rules = templated(present, name="Firewall rules", src=..., dest=RULES, mode="0600", admin4=...)
    _if=rules.did_change   # False when the host had the file already
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
import weakref
from collections.abc import Sequence
from io import StringIO
from typing import Any

from pyinfra import host, state
from pyinfra.api import FactBase
from pyinfra.api.util import get_template
from pyinfra.operations import files, server, systemd

from ollastack.deploy.changes import add_user, make_directory, make_link, start_service, write_file

# sha1sum's line for a file; a name it had to escape (a backslash or a newline in it) starts with "\\" and
# does not match: that file then has no checksum, so it is written again.
SHA1SUM_LINE = re.compile(r"([0-9a-f]{40})  (/.*)")
# What pyinfra's SystemdStatus and SystemdEnabled count as running and as enabled.
RUNNING = {"running", "waiting", "exited", "listening", "mounted"}
ENABLED = {"enabled", "static"}


def _tag(*tags: str | int) -> str:
    """A shell loop that puts ``tags`` and a tab after each before every line it reads: the shell's own
    ``read``, as sed would be one more program to start for each part of the read (about 2 ms each on a lab
    host). Example: ``_tag("probe", 3)`` makes ``x`` into ``probe<TAB>3<TAB>x``."""
    prefix = "".join(f"{tag}\\t" for tag in tags)
    return f"while IFS= read -r l; do printf '{prefix}%s\\n' \"$l\"; done"


class HostState(FactBase[dict]):
    """Paths (kind, mode, owner, sha1 or link target), services (sub-state, unit file state), installed
    packages, the text of small files, users (home, shell), paths that exist (no checksum: secrets) and
    Podman image ids, in one command.

    Returns ``{"paths": {"/etc/x": {"kind": "file", "mode": "644", "user": "root", "group": "root",
    "sha1": "..."}}, "services": {"nginx.service": ("running", "enabled")}, "packages": ["nginx"],
    "texts": {"/etc/subuid": "containers:..."}, "users": {"ollama": {"home": "/usr/share/ollama",
    "shell": "/bin/false"}}, "exists": ["/etc/open-webui/secret-key.env"], "images": {"localhost/x:1": "sha256..."}}``;
    a missing path, unit, package, file, user or image is left out.

    Example: ``host.get_fact(HostState, paths=["/etc/ollastack"], services=["nginx"], packages=["nginx"])``
    """

    def command(self, paths: Sequence[str] = (), services: Sequence[str] = (), packages: Sequence[str] = (),
                texts: Sequence[str] = (), users: Sequence[str] = (), exists: Sequence[str] = (),
                images: Sequence[str] = (), probes: Sequence[str] = ()) -> str:
        parts = []
        if paths:
            if relative := [p for p in paths if not p.startswith("/")]:
                # find would take a path starting with "-", "(" or "!" for part of its expression.
                raise ValueError(f"HostState reads absolute paths only: {relative}")
            # Two processes for every path: a loop of stat and sha1sum per path would fork a hundred times.
            parts.append(f"find -P {' '.join(shlex.quote(p) for p in paths)} -maxdepth 0 "
                         "-printf 'path\\t%y\\t%p\\t%m %u %g\\t%l\\n' -type f -exec sha1sum -- {} + 2>/dev/null")
        if services:
            names = " ".join(shlex.quote(unit_name(s)) for s in services)
            parts.append(f"systemctl show -p Id -p SubState -p UnitFileState -- {names} 2>/dev/null | {_tag('unit')}")
        if packages:
            parts.append(f"dpkg-query -W -f '${{db:Status-Abbrev}}\\t${{Package}}\\n' -- "
                         f"{' '.join(shlex.quote(p) for p in packages)} 2>/dev/null | {_tag('package')}")
        if texts:
            # Every line of the file after its path, as FileText reads it (awk -v would expand escapes in the path).
            parts.append(f"for p in {' '.join(shlex.quote(p) for p in texts)}; do "
                         '[ -f "$p" ] && P="$p" awk \'{print "text\\t" ENVIRON["P"] "\\t" $0}\' "$p"; done')
        if users:
            parts.append(f"for u in {' '.join(shlex.quote(u) for u in users)}; do "
                         'e=$(getent passwd -- "$u") && printf "user\\t%s\\n" "$e"; done')
        if exists:
            parts.append(f"for p in {' '.join(shlex.quote(p) for p in exists)}; do "
                         '[ -e "$p" ] && printf "exists\\t%s\\n" "$p"; done')
        if images:
            parts.append(f"for i in {' '.join(shlex.quote(i) for i in images)}; do "
                         "id=$(podman image inspect --format '{{.Id}}' -- \"$i\" 2>/dev/null) && "
                         'printf "image\\t%s\\t%s\\n" "$i" "$id"; done')
        for index, probe in enumerate(probes):
            # Each its own subshell, its output tagged line by line, then its exit status.
            parts.append(f"o=$( ( {probe} ) 2>/dev/null ); s=$?; "
                         f"[ -z \"$o\" ] || printf '%s\\n' \"$o\" | {_tag('probe', index)}; "
                         f"printf 'probed\\t{index}\\t%s\\n' \"$s\"")
        return "; ".join([*parts, "true"])

    def process(self, output):
        found: dict = {"paths": {}, "services": {}, "packages": [], "texts": {}, "users": {}, "exists": [],
                       "images": {}, "probes": {}}
        unit: dict[str, str] = {}
        lines: dict[str, list[str]] = {}
        sums: dict[str, str] = {}
        for line in output:
            kind, _, rest = line.rstrip("\n").partition("\t")
            fields = rest.split("\t")
            if kind == "text":
                path, _, text = rest.partition("\t")
                lines.setdefault(path, []).append(text)
            elif kind in ("probe", "probed") and fields[0].isdigit():
                probe = found["probes"].setdefault(int(fields[0]), {"lines": [], "status": None})
                if kind == "probe":
                    probe["lines"].append(rest.partition("\t")[2])
                elif len(fields) == 2 and fields[1].strip().isdigit():
                    probe["status"] = int(fields[1])
            elif kind == "user" and len(rest.split(":")) == 7:
                name, _, _, _, _, home, shell = rest.split(":")
                found["users"][name] = {"home": home, "shell": shell}
            elif kind == "exists":
                found["exists"].append(rest)
            elif kind == "image" and len(fields) == 2 and fields[1].strip():
                found["images"][fields[0]] = fields[1].strip()
            elif kind == "path" and len(fields) == 4 and len(fields[2].split()) == 3:
                what, path, owner, target = fields
                mode, user, group = owner.split()
                if what == "l":
                    found["paths"][path] = {"kind": "link", "target": target}
                elif what in ("f", "d"):
                    found["paths"][path] = {"kind": "file" if what == "f" else "directory", "mode": mode, "user": user,
                                            "group": group}
            elif (sum_line := SHA1SUM_LINE.fullmatch(line.rstrip("\n"))) is not None:
                sums[sum_line[2]] = sum_line[1]
            elif kind == "unit":
                key, _, value = rest.strip().partition("=")
                unit[key] = value
                if {"Id", "SubState", "UnitFileState"} <= unit.keys():
                    found["services"][unit["Id"]] = (unit["SubState"], unit["UnitFileState"])
                    unit = {}
            elif kind == "package" and len(fields) == 2 and fields[0][1:2] == "i":
                found["packages"].append(fields[1].strip())
        for path, sha1 in sums.items():
            if found["paths"].get(path, {}).get("kind") == "file":
                found["paths"][path]["sha1"] = sha1
        # As FileText: an empty file reads as no file.
        found["texts"] = {path: text for path, got in lines.items() if (text := "\n".join(got).strip())}
        return found

    def default(self):
        return self.process([])


def unit_name(service: str) -> str:
    """``unit_name("nginx") == "nginx.service"``; names with a unit suffix stay as they are."""
    return service if "." in service else f"{service}.service"


class Unchanged:
    """Stands in for an operation not called because the host matched already: it changed nothing."""

    will_change = False

    def did_change(self) -> bool:
        return False


UNCHANGED = Unchanged()


def may_change(*operations) -> bool:
    """Whether one of ``operations`` may change the host in this run: not when each is ``UNCHANGED`` (not called,
    the host matched already). An operation gated on them (``_if=any_changed(...)``) is then not made at all:
    it would only be skipped, after pyinfra had spent milliseconds placing it in the run's order.

    Example: ``if may_change(unit): systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)``
    """
    return any(not isinstance(op, Unchanged) for op in operations)


class Present:
    """What ``HostState`` found, with the questions an operation would ask."""

    def __init__(self, found: dict, known: bool = True, asked: dict[str, Sequence[str]] | None = None):
        self.found = found
        # Unknown (NOTHING): no path counts as absent either, so every operation is called.
        self.known = known
        # What was read: only those paths and services does a change rest on the read (``deploy.changes``).
        self.asked = {name: set(values) for name, values in (asked or {}).items()}

    def read(self, kind: str, name: str) -> bool:
        """Whether the host's state of ``name`` (a path, a service) is known from this read."""
        if kind == "services":
            return self.known and unit_name(name) in {unit_name(s) for s in self.asked.get(kind, ())}
        return self.known and name in self.asked.get(kind, ())

    def not_enabled(self, service: str) -> bool:
        """Whether the read shows ``service`` not enabled: its enable (which reloads systemd's units itself)
        is still to come, so a unit file written before it needs no ``daemon-reload`` of its own."""
        return self.read("services", service) and self.found["services"].get(unit_name(service), ("", ""))[1] not in ENABLED

    def owned(self, path: str, kind: str, mode, user, group) -> dict | None:
        """The read entry of ``path`` when it is a ``kind`` with that mode and owner (None: any), else None."""
        entry = self.found["paths"].get(path)
        if not entry or entry["kind"] != kind:
            return None
        if mode is not None and int(str(mode), 8) != int(entry["mode"], 8):
            return None
        if (user is not None and entry["user"] != user) or (group is not None and entry["group"] != group):
            return None
        return entry

    def file(self, path: str, content: bytes, mode=None, user=None, group=None) -> bool:
        return self.file_sha1(path, hashlib.sha1(content).hexdigest(), mode, user, group)

    def file_sha1(self, path: str, sha1: str, mode=None, user=None, group=None) -> bool:
        entry = self.owned(path, "file", mode, user, group)
        return entry is not None and entry.get("sha1") == sha1

    def directory(self, path: str, mode=None, user=None, group=None) -> bool:
        return self.owned(path, "directory", mode, user, group) is not None

    def link(self, path: str, target: str | None) -> bool:
        entry = self.found["paths"].get(path)
        return entry is not None and entry["kind"] == "link" and entry["target"] == target

    def absent(self, path: str) -> bool:
        return self.read("paths", path) and path not in self.found["paths"]

    def without(self, paths: Sequence[str] = (), services: Sequence[str] = ()) -> Present:
        """This read, except ``paths`` and ``services``, now unknown: an operation since the read (a package
        install) may have changed them.

        Example: ``present.without(paths=["/etc/nginx/sites-enabled/default"], services=["nginx"])``
        """
        gone = {"paths": set(paths), "services": {unit_name(s) for s in services}}
        asked: dict[str, Sequence[str]] = {
            kind: [v for v in values if (unit_name(v) if kind == "services" else v) not in gone.get(kind, ())]
            for kind, values in self.asked.items()}
        return Present(self.found, self.known, asked)

    def installed(self, packages: list[str]) -> bool:
        return all(p in self.found["packages"] for p in packages)

    def text(self, path: str) -> str | None:
        """What ``FileText`` would read: the stripped content, None when missing or empty."""
        return self.found["texts"].get(path)

    def exists(self, path: str) -> bool:
        return path in self.found["exists"]

    def image(self, image: str) -> str | None:
        """What ``PodmanImageId`` would read: the image's id, None when Podman does not have it."""
        return self.found["images"].get(image)


# A component whose own package is not installed yet reads nothing ahead: installing it adds files of its own
# (Debian's nginx enables its default site), which only the operations, run after the install, can see.
NOTHING = Present(HostState().default(), known=False)


READS = ("paths", "services", "packages", "texts", "users", "exists", "images")
# Per host of this run: what ``prefetch`` asked for and what HostState found, and the facts it answered.
_PREFETCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FACTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prefetch(*reads: dict[str, list[str]], facts: Sequence[tuple[type[FactBase], dict[str, Any]]] = ()) -> None:
    """Read what the components will ask ``host_state`` for (``reads``: its arguments), for all of them in one
    command; their calls are then answered from it. Every read happens at plan time, before any operation of
    the run, so one read now finds the host as each later one would. A call asking for more reads the host itself.
    ``facts``: (fact class, arguments) the components will ask ``fact`` for, run in the same command.

    Example (deploy/site.py, first): ``prefetch(base.READS, firewall.READS, facts=[(DebianRelease, {})])``
    """
    merged: dict[str, list[str]] = {name: [] for name in READS}
    for read in reads:
        for name, values in read.items():
            merged[name].extend(v for v in values if v not in merged[name])
    probes = [cls().command(**arguments) for cls, arguments in facts]
    found = host.get_fact(HostState, **merged, probes=probes)
    current = host._get_module()  # type: ignore[attr-defined]
    _PREFETCHED[current] = (merged, found)
    # A probe that failed (or did not run) answers nothing: ``fact`` then asks the host as pyinfra would.
    answers = found["probes"]
    _FACTS[current] = {_fact_key(cls, arguments): cls().process(answers[index]["lines"])
                       for index, (cls, arguments) in enumerate(facts) if answers.get(index, {}).get("status") == 0}


def _fact_key(cls: type[FactBase], arguments: dict[str, Any]) -> tuple:
    return cls, tuple(sorted(arguments.items()))


def fact(cls: type[FactBase], **arguments: Any) -> Any:
    """``host.get_fact(cls, **arguments)``, answered from ``prefetch``'s command when it ran that fact.

    Example: ``fact(NftTable, table="inet ollastack")``
    """
    answers = _FACTS.get(host._get_module(), {})  # type: ignore[attr-defined]
    key = _fact_key(cls, arguments)
    return answers[key] if key in answers else host.get_fact(cls, **arguments)


def host_state(paths: Sequence[str] = (), services: Sequence[str] = (), packages: Sequence[str] = (),
               texts: Sequence[str] = (), users: Sequence[str] = (), exists: Sequence[str] = (),
               images: Sequence[str] = ()) -> Present:
    """Read ``HostState`` for the current host now (at plan time, before this run's operations), or take it
    from what ``prefetch`` read when that covers every argument."""
    request = {"paths": paths, "services": services, "packages": packages, "texts": texts, "users": users,
               "exists": exists, "images": images}
    merged, found = _PREFETCHED.get(host._get_module(), ({}, None))  # type: ignore[attr-defined]
    if found is not None and all(set(request[name]) <= set(merged[name]) for name in READS):
        return Present(found, asked=merged)
    return Present(host.get_fact(HostState, **{name: list(values) for name, values in request.items()}), asked=request)


def put(present: Present, name: str, src, dest: str, mode=None, user=None, group=None):
    """``files.put`` unless ``dest`` already has ``src``'s content, mode and owner (a local file is hashed
    in chunks: image archives and wheels are large)."""
    if isinstance(src, StringIO):
        sha1 = hashlib.sha1(src.getvalue().encode()).hexdigest()
    else:
        with open(src, "rb") as local:
            sha1 = hashlib.file_digest(local, "sha1").hexdigest()
    if present.file_sha1(dest, sha1, mode, user, group):
        return UNCHANGED
    if (change := _file_change(present, dest, sha1, mode, user, group)) is not None:
        return write_file(name=name, src=src, dest=dest, mode=mode, user=user, group=group, **change)
    return files.put(name=name, src=src, dest=dest, mode=mode, user=user, group=group)


def templated(present: Present, name: str, src: str, dest: str, mode=None, **data):
    """``files.template`` unless ``dest`` already has the rendered text (rendered as pyinfra renders it) and mode."""
    rendered = get_template(src).render({"host": host, "state": state, "inventory": state.inventory, **data})
    if present.file(dest, rendered.encode(), mode):
        return UNCHANGED
    if (change := _file_change(present, dest, hashlib.sha1(rendered.encode()).hexdigest(), mode)) is not None:
        return write_file(name=name, src=StringIO(rendered), dest=dest, mode=mode, **change)
    return files.template(name=name, src=src, dest=dest, mode=mode, **data)


def _file_change(present: Present, dest: str, sha1: str, mode=None, user=None, group=None) -> dict | None:
    """``write_file``'s ``upload``, ``new``, ``parent`` and ``fix`` for a ``dest`` read as a file or as missing;
    None (pyinfra's operation decides) when it was not read, or is something else."""
    if not present.read("paths", dest):
        return None
    entry = present.found["paths"].get(dest)
    if entry is not None and entry["kind"] != "file":
        return None
    parent = posixpath.dirname(dest)
    return {"upload": entry is None or entry.get("sha1") != sha1, "new": entry is None,
            "parent": entry is None and not (present.read("paths", parent) and present.directory(parent)),
            "fix": present.owned(dest, "file", mode, user, group) is None}


def directory(present: Present, name: str, path: str, mode=None, user=None, group=None):
    """``files.directory`` unless ``path`` is a directory with that mode and owner."""
    if present.directory(path, mode, user, group):
        return UNCHANGED
    entry = present.found["paths"].get(path)
    if present.read("paths", path) and (entry is None or entry["kind"] == "directory"):
        return make_directory(name=name, path=path, mode=mode, user=user, group=group, exists=entry is not None)
    return files.directory(name=name, path=path, mode=mode, user=user, group=group)


def link(present: Present, name: str, path: str, target: str | None = None, present_: bool = True):
    """``files.link`` unless ``path`` is a link to ``target`` (or, with ``present_=False``, nothing is there); a
    link read as missing is made in one command."""
    if present.link(path, target) if present_ else present.absent(path):
        return UNCHANGED
    if present_ and target is not None and present.absent(path):
        return make_link(name=name, path=path, target=target)
    return files.link(name=name, path=path, target=target, present=present_)


def absent(present: Present, name: str, path: str):
    """``files.file(present=False)`` unless nothing is at ``path``."""
    if present.absent(path):
        return UNCHANGED
    return files.file(name=name, path=path, present=False)


def line(present: Present, name: str, path: str, pattern: str, replace: str):
    """``files.line(line=pattern, replace=replace)`` unless ``path`` (read with ``texts``) has lines matching
    ``pattern`` and every one is ``replace``."""
    matched = [text for text in (present.text(path) or "").splitlines() if re.search(pattern, text)]
    if matched and all(text == replace for text in matched):
        return UNCHANGED
    return files.line(name=name, path=path, line=pattern, replace=replace)


def user(present: Present, name: str, user: str, home: str, shell: str, system: bool = False):
    """A user with its own home directory: unchanged when ``user`` (read with ``users``) has that home and shell
    and ``home`` (read with ``paths``) is its directory, owned by it and its group; created in one command
    when neither the user nor anything at ``home`` exists; else ``server.user`` (which reads every user and
    group of the host first) sets what differs."""
    entry = present.found["users"].get(user)
    if entry == {"home": home, "shell": shell} and present.directory(home, user=user, group=user):
        return UNCHANGED
    if entry is None and present.read("users", user) and present.read("paths", home) and present.absent(home):
        return add_user(name=name, user=user, home=home, shell=shell, system=system)
    return server.user(name=name, user=user, home=home, shell=shell, system=system, ensure_home=True,
                       create_home=True)


def service_stopped(present: Present, name: str, service: str):
    """``systemd.service(running=False, enabled=False)`` unless the unit neither runs nor is enabled (as read:
    with ``NOTHING`` the operation decides, since a package installed by this run may enable it)."""
    sub, unit_file = present.found["services"].get(unit_name(service), ("", ""))
    if present.known and sub not in RUNNING and unit_file not in ENABLED:
        return UNCHANGED
    return systemd.service(name=name, service=service, running=False, enabled=False)


def service_running(present: Present, name: str, service: str, enabled: bool | None = True, **arguments):
    """``systemd.service(running=True, enabled=...)`` unless the unit runs and is enabled already (``enabled``
    None: runs; its [Install] section decides the rest). ``arguments``: pyinfra's global ones (``_if``)."""
    sub, unit_file = present.found["services"].get(unit_name(service), ("", ""))
    start, enable = sub not in RUNNING, enabled is True and unit_file not in ENABLED
    if enabled is not False and not (start or enable):
        return UNCHANGED
    if enabled is not False and present.read("services", service):
        return start_service(name=name, service=unit_name(service), start=start, enable=enable, **arguments)
    return systemd.service(name=name, service=service, running=True, enabled=enabled, **arguments)
