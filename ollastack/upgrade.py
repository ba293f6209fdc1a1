"""Open WebUI upgrades that cannot lose data: a backup first, the ready checks after, a rollback by itself.

Open WebUI migrates its database on the first start of a new release and cannot go back to an older
one. So when ``up`` finds that a host has another Open WebUI installed than the stack names
(``openwebui.version`` on the pip route, ``openwebui.image`` on the container route; read from the host
before the converge, ``backup.installed``), ``guarded`` runs the converge as:

1. a backup of each such host (``backup.take``, labelled "before the upgrade to ..."),
2. the converge of the stack file as it is,
3. the ready checks through nginx (``/health`` and the admin's sign-in, ``ready.check``),
4. on a failure of 2 or 3: the pre-upgrade backup put back with Open WebUI stopped (``backup.restore``),
   then a converge of a copy of the stack file with the previous release pinned (0600 in the state
   directory, removed afterwards), which installs and starts that release on the restored data, its
   ready checks, and ``UpgradeError`` naming the release that failed, the check, and the backup restored.

The decision is made here, on the control machine, around pyinfra and never inside a deploy: a deploy is
planned before it runs, cannot know whether the new release will answer, and must stay a function of a
stack file. The rollback is a converge of a stack file too, so the hosts only ever get what a stack file
describes; the operator's own file is left as written.

Example::

    upgrades = upgrade.detect(stack, hosts)         # [Upgrade(host, "openwebui.version", "0.12.4", "0.12.5")]
    upgrade.guarded(stack, upgrades, "stack.toml", progress, converge=run_pyinfra, check=ready_verdict)
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ollastack import backup
from ollastack.config import ConfigError, Stack, parse_stack
from ollastack.host import Host
from ollastack.pin import with_settings
from ollastack.state import state_dir, write_atomic

# A converge of the stack file at a path (raises on failure), and a host's ready verdict (ready.check's
# dict) within a wait in seconds.
Converge = Callable[[str], object]
Check = Callable[[Host, float], dict[str, Any]]
Installed = Callable[[Stack, Host], dict[str, Any]]


class UpgradeError(Exception):
    """An upgrade was refused, or failed and was rolled back (or could not be); the message says which."""


@dataclass(frozen=True)
class Upgrade:
    """One host going from the Open WebUI it has (``previous``) to the stack's (``wanted``) in ``setting``."""

    host: Host
    setting: str
    previous: str
    wanted: str

    @property
    def what(self) -> str:
        return f"open-webui {self.wanted}" if self.setting == "openwebui.version" else f"image {self.wanted}"

    @property
    def back(self) -> str:
        return f"open-webui {self.previous}" if self.setting == "openwebui.version" else f"image {self.previous}"


def wanted(stack: Stack) -> tuple[str, str, str] | None:
    """(setting, what the host fact is called, the stack's value) for the stack's route; None without Open WebUI."""
    # A built image is the release itself (``openwebui.build_image``): its rollback pins the version, and builds that.
    if stack.openwebui.install == "pip" or stack.openwebui.build_image:
        return "openwebui.version", "version", stack.openwebui.version
    if stack.openwebui.install == "container":
        return "openwebui.image", "image", stack.openwebui.image
    return None


def detect(stack: Stack, hosts: list[Host], installed: Installed = backup.installed) -> list[Upgrade]:
    """The hosts whose installed Open WebUI differs from the stack's; a host without one is a fresh install.

    Refuses (UpgradeError, before anything is changed) a pip release older than a host's, since Open WebUI
    cannot open a database a newer release migrated, and hosts that run different releases, which no one
    rollback stack could put back.
    """
    target = wanted(stack)
    if target is None:
        return []
    setting, fact, value = target
    upgrades = []
    for host in hosts:
        have = installed(stack, host).get(fact)
        if not have or have == value:
            continue
        if fact == "version" and backup.release_key(value) < backup.release_key(have):
            raise UpgradeError(f"{host.name}: openwebui.version {value} is older than the host's Open WebUI {have}: "
                               "Open WebUI migrates its database forward only; set openwebui.version to "
                               f"{have} or newer. Nothing was changed")
        upgrades.append(Upgrade(host, setting, have, value))
    previous = sorted({u.previous for u in upgrades})
    if len(previous) > 1:
        raise UpgradeError(f"the hosts run different Open WebUI releases ({', '.join(previous)}): upgrade them one "
                           "release at a time, so that one rollback fits all. Nothing was changed")
    return upgrades


def rollback_text(text: str, upgrades: list[Upgrade]) -> str:
    """The stack file ``text`` with the previous release pinned, validated as a whole stack description."""
    section, name = upgrades[0].setting.split(".")
    pinned = with_settings(text, section, {name: upgrades[0].previous})
    try:
        parse_stack(tomllib.loads(pinned), "the rollback stack")
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise UpgradeError(f"the host's Open WebUI ({upgrades[0].previous!r}) cannot be pinned for a rollback: "
                           f"{exc}. Nothing was changed") from None
    return pinned


def guarded(stack: Stack, upgrades: list[Upgrade], config_path: str, progress: Callable[[str], None],
            converge: Converge, check: Check, wait_s: float = 60.0) -> None:
    """Converge ``config_path``; with ``upgrades``, guarded as the module says (raises UpgradeError).

    ``wait_s``: how long the ready checks after a converge that passed retry passing errors.
    """
    if not upgrades:
        converge(config_path)
        return
    pinned = rollback_text(Path(config_path).read_text(encoding="utf-8"), upgrades)
    hosts = [u.host for u in upgrades]
    first = upgrades[0]
    label = f"before the upgrade to {first.what}"
    taken = {t["host"]: t["id"] for t in backup.take(stack, progress, hosts=hosts, label=label)}
    for u in upgrades:
        progress(f"{u.host.name}: upgrading Open WebUI from {u.back} to {u.what} (backup {taken[u.host.name]} "
                 "taken first)")
    failure = _attempt(config_path, hosts, converge, check, wait_s)
    if failure is None:
        progress(f"upgrade to {first.what}: ready on {', '.join(h.name for h in hosts)}")
        return
    progress(f"upgrade to {first.what} failed ({failure}): rolling back to {first.back}")
    ids = ", ".join(f"{name}: {backup_id}" for name, backup_id in taken.items())
    what_failed = f"the upgrade of Open WebUI to {first.what} failed: {failure}"
    try:
        for u in upgrades:
            backup.restore(stack, progress, taken[u.host.name], hosts=[u.host], stopped=True)
        path = state_dir() / f"{stack.stack.name}.rollback.toml"
        write_atomic(path, pinned, mode=0o600)
        try:
            rollback_failure = _attempt(str(path), hosts, converge, check, wait_s)
        finally:
            path.unlink(missing_ok=True)
    except Exception as exc:
        rollback_failure = str(exc)
    if rollback_failure is not None:
        raise UpgradeError(f"{what_failed}; the rollback to {first.back} failed too ({rollback_failure}). The "
                           f"backups taken before the upgrade ({ids}) are on this machine: set {first.setting} "
                           f"back to {first.previous!r}, run `ollastack up`, then `ollastack restore ID`")
    raise UpgradeError(f"{what_failed}; rolled back: {first.back} serves again with the backup taken before the "
                       f"upgrade restored ({ids}). {first.setting} in {config_path} still names {first.wanted!r}: "
                       f"set it back to {first.previous!r} or to a release that works")


def _attempt(config_path: str, hosts: list[Host], converge: Converge, check: Check,
             wait_s: float) -> str | None:
    """Converge, then the ready check of each host: None when all passed, else what failed.

    After a failed converge the hosts are checked at once too, so the message names what a visitor sees.
    """
    try:
        converge(config_path)
    except Exception as exc:
        # The advice of the converge's own message (run `up` again) is not this situation's.
        failed = str(exc).split("; ")[0]
        seen = [f"{host.name}: {verdict['problem']}" for host in hosts if not (verdict := check(host, 0.0))["ok"]]
        return "; ".join([failed, *seen])
    for host in hosts:
        verdict = check(host, wait_s)
        if not verdict["ok"]:
            return f"{host.name}: the ready check through nginx failed: {verdict['problem']}"
    return None
