"""What ``up`` would change on a lab or static stack's hosts and on this machine, changing nothing.

``run`` takes the steps ``up`` takes once the hosts exist, ``orchestrate.issue_certificates`` and
``orchestrate.converge`` (``dry=True``: ``pyinfra --dry``), against a scratch view of this machine's
files: the state directory and the stack's ssl/ directory as symlinks to the real files. Every writer
replaces a file whole (``state.write_atomic``), so what ``up`` would write (a certificate to issue, an
admin password to generate) lands in the scratch directory and the real files stay as they are;
known_hosts files are copied, since ssh appends to them. The scratch directory goes when the run ends.

Example::

    operations, written = dryrun.run(stack, hosts, Progress())
    operations["10.213.0.12"]   # [{"name": "Ollama | Ollama settings (override.conf)", "conditional": False}]
    written                     # [(Path(".../ssl/demo/demo-1.pem"), "create")]
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ollastack import certs, orchestrate
from ollastack.config import Stack, config_path
from ollastack.host import Host
from ollastack.progress import Progress
from ollastack.state import STATE_ENV, state_dir

CREATE, UPDATE = "create", "update"


def _mirror(real: Path, scratch: Path) -> None:
    """``scratch`` as a view of ``real``: directories made anew, files as symlinks, known_hosts files copied."""
    scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not real.is_dir():
        return
    for entry in real.iterdir():
        target = scratch / entry.name
        if entry.is_dir():
            _mirror(entry, target)
        elif entry.name.endswith("known_hosts"):
            shutil.copy2(entry, target)
        # The dry run takes its own lock: a plan never waits for, nor blocks, an `up`.
        elif not entry.name.endswith(".lock"):
            target.symlink_to(entry)


def written(real: Path, scratch: Path) -> list[tuple[Path, str]]:
    """The files of ``real`` that the run wrote in ``scratch``: (real path, CREATE or UPDATE).

    Example: ``written(Path("ssl/demo"), scratch / "ssl" / "demo")`` -> ``[(Path("ssl/demo/ca.pem"), "create")]``
    """
    found = []
    for path in sorted(scratch.rglob("*")):
        # Dotfiles (.gitignore, half-written temporaries) and locks say nothing about what `up` would do.
        if path.is_symlink() or not path.is_file() or path.name.startswith(".") or path.name.endswith(".lock"):
            continue
        original = real / path.relative_to(scratch)
        if not original.exists():
            found.append((original, CREATE))
        elif original.read_bytes() != path.read_bytes():
            found.append((original, UPDATE))
    return found


@contextlib.contextmanager
def scratch_files(stack_name: str) -> Iterator[list[tuple[Path, Path]]]:
    """Point the state and ssl/ directories of this process (and of the pyinfra it starts) at scratch views.

    Yields the (real, scratch) directory pairs; the environment is restored and the scratch removed afterwards.
    """
    real_state, real_ssl = state_dir(create=False), certs.ssl_dir(stack_name)
    saved = {name: os.environ.get(name) for name in (STATE_ENV, certs.SSL_ENV)}
    with tempfile.TemporaryDirectory(prefix="ollastack-plan-") as tmp:
        pairs = [(real_state, Path(tmp, "state")), (real_ssl, Path(tmp, "ssl", stack_name))]
        for real, scratch in pairs:
            _mirror(real, scratch)
        os.environ[STATE_ENV], os.environ[certs.SSL_ENV] = str(Path(tmp, "state")), str(Path(tmp, "ssl"))
        try:
            yield pairs
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def by_host(plan: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """pyinfra's dry-run plan as the operations each host (inventory name) would change, in order.

    Example: ``by_host([{"name": "nginx | nginx site", "hosts_with_change": ["10.0.0.4"],
    "hosts_with_conditional_change": []}])`` -> ``{"10.0.0.4": [{"name": "nginx | nginx site", "conditional": False}]}``
    """
    found: dict[str, list[dict[str, Any]]] = {}
    for op in plan:
        for key, conditional in (("hosts_with_change", False), ("hosts_with_conditional_change", True)):
            for name in op.get(key, []):
                found.setdefault(name, []).append({"name": op["name"], "conditional": conditional})
    return found


def run(stack: Stack, hosts: list[Host], progress: Progress) -> tuple[dict[str, list[dict[str, Any]]], list[tuple[Path, str]]]:
    """The operations ``up``'s converge would change per host address, and the files it would write here.

    Raises ``orchestrate.ConvergeError`` when the dry run fails (a host unreachable, a check refusing).
    """
    with scratch_files(stack.stack.name) as pairs:
        orchestrate.issue_certificates(stack, hosts)
        plan = orchestrate.converge(stack, str(config_path()), progress, dry=True)
        files = [item for real, scratch in pairs for item in written(real, scratch)]
    return by_host(plan), files
