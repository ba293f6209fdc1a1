"""What a stack created, one JSON file per stack, written atomically after every change.

Each resource is recorded as soon as it exists, so an interrupted ``up`` can be resumed and
``down`` can remove everything created so far. Secrets are never written here.

Example::

    state = StackState.load("demo")
    state.record("resource_group", "demo-rg", id="/subscriptions/.../resourceGroups/demo-rg")
    state.set_hosts([{"name": "demo-1", "address": "10.0.0.4", "user": "ollastack"}])
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_ENV = "OLLASTACK_STATE_DIR"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or ".ollastack/state")


def known_hosts_file(stack_name: str) -> Path:
    """Where host keys of a stack's cloud/static hosts are remembered (trusted on first use)."""
    return state_dir() / f"{stack_name}.known_hosts"


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class StackState:
    """Resources and hosts of one stack. ``resources`` keeps creation order (``down`` reverses it)."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def load(cls, stack_name: str, provider: str = "") -> "StackState":
        path = state_dir() / f"{stack_name}.json"
        if path.exists():
            data = json.loads(path.read_text())
        else:
            data = {"stack": stack_name, "provider": provider, "resources": [], "hosts": []}
        return cls(path, data)

    @property
    def provider(self) -> str:
        return self.data.get("provider", "")

    @property
    def resources(self) -> list[dict[str, Any]]:
        return self.data["resources"]

    @property
    def hosts(self) -> list[dict[str, Any]]:
        return self.data["hosts"]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((r for r in self.resources if r["kind"] == kind and r["name"] == name), None)

    def record(self, kind: str, name: str, **attrs: Any) -> dict[str, Any]:
        """Add or update a resource and save at once."""
        entry = self.find(kind, name)
        if entry is None:
            entry = {"kind": kind, "name": name}
            self.resources.append(entry)
        entry.update(attrs)
        self.save()
        return entry

    def forget(self, kind: str, name: str) -> None:
        self.data["resources"] = [r for r in self.resources if not (r["kind"] == kind and r["name"] == name)]
        self.save()

    def set_hosts(self, hosts: list[dict[str, Any]]) -> None:
        self.data["hosts"] = hosts
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def remove_if_empty(self) -> bool:
        if self.resources:
            return False
        self.path.unlink(missing_ok=True)
        return True
