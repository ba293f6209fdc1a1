"""What a stack created, one JSON file per stack, written atomically after every change.

Each resource is recorded as soon as it exists, so an interrupted ``up`` can be resumed and
``down`` can remove everything created so far. Secrets are never written here.

The state directory is ``.ollastack/state`` beside the stack file (``$OLLASTACK_STATE_DIR`` wins),
so every command finds the same state whatever directory it runs from. Directories ollastack
creates for state and certificates are 0700 and carry a ``.gitignore`` of ``*``: a ``git add -A``
in the user's own repository never picks up a key or the admin password.

Example::

    state = StackState.load("demo")
    state.record("resource_group", "demo-rg", id="/subscriptions/.../resourceGroups/demo-rg")
    state.set_hosts([Host("demo-1", "10.0.0.4", user="ollastack")])
    state.saved_hosts()   # [Host(name="demo-1", ...)]
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ollastack.host import Host

STATE_ENV = "OLLASTACK_STATE_DIR"
# An open file descriptor of the stack's lock, handed by ``ollastack up`` to the pyinfra run it starts.
LOCK_FD_ENV = "OLLASTACK_LOCK_FD"
_held_locks: dict[str, int] = {}


class StackBusy(Exception):
    """Another ollastack command holds the stack's lock."""


def stack_home() -> Path:
    """The directory holding the stack file (``config_path()``): state and ``ssl/`` live beside it."""
    from ollastack.config import config_path

    return config_path().resolve().parent


def private_dir(path: Path) -> Path:
    """Create ``path`` (0700) holding a ``.gitignore`` of ``*``; return it.

    Example: ``private_dir(Path("ssl"))`` -> ssl/ (drwx------) with ssl/.gitignore
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    ignore = path / ".gitignore"
    if not ignore.exists():
        write_atomic(ignore, "# written by ollastack: keys and state never belong in git\n*\n", mode=0o644)
    return path


def state_dir(create: bool = True) -> Path:
    """``$OLLASTACK_STATE_DIR``, else ``.ollastack/state`` beside the stack file; created on first use
    (``create=False``: only its path, for a command that writes nothing)."""
    override = os.environ.get(STATE_ENV)
    if override:
        path = Path(override).absolute()
        return private_dir(path) if create else path
    if not create:
        return stack_home() / ".ollastack" / "state"
    return private_dir(private_dir(stack_home() / ".ollastack") / "state")


def known_hosts_file(stack_name: str) -> Path:
    """Where host keys of a stack's cloud/static hosts are remembered (trusted on first use)."""
    return state_dir() / f"{stack_name}.known_hosts"


def ssh_config_file(stack_name: str) -> Path:
    """The ssh config (ProxyCommand per host) pyinfra reaches a stack's jumped hosts by (a cloud fleet's backends)."""
    return state_dir() / f"{stack_name}.ssh_config"


def _lock_fd(stack_name: str) -> int:
    """Take the stack's lock without waiting; raise StackBusy naming the holder's pid."""
    path = state_dir() / f"{stack_name}.lock"
    inherited = os.environ.get(LOCK_FD_ENV, "")
    if inherited.isdigit():
        try:
            held, wanted = os.fstat(int(inherited)), os.stat(path)
        except OSError:
            pass
        else:
            if (held.st_dev, held.st_ino) == (wanted.st_dev, wanted.st_ino):
                return int(inherited)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StackBusy(f"another ollastack up/down of stack {stack_name} is running (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


@contextlib.contextmanager
def stack_lock(stack_name: str) -> Iterator[int]:
    """Hold the stack's lock (``<state dir>/<stack>.lock``, flock) for the block; fail at once if taken.

    Example::

        with stack_lock("demo"):
            orchestrate.up(stack, progress, config_path)
    """
    fd = _lock_fd(stack_name)
    _held_locks[stack_name] = fd
    try:
        yield fd
    finally:
        _held_locks.pop(stack_name, None)
        os.close(fd)


def held_lock(stack_name: str) -> int | None:
    """The descriptor of the stack's lock if this process holds it (to hand to a child process)."""
    return _held_locks.get(stack_name)


def hold_lock_until_exit(stack_name: str) -> None:
    """Take the stack's lock for the rest of this process (a plain ``pyinfra`` converge).

    A converge started by ``ollastack up`` inherits the lock its parent holds. When another
    command holds it, the process ends with that one line (pyinfra would print a traceback).
    """
    if stack_name not in _held_locks:
        try:
            _held_locks[stack_name] = _lock_fd(stack_name)
        except StackBusy as exc:
            raise SystemExit(f"error: {exc}") from None


def write_atomic(path: Path, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def admin_password_file(stack_name: str, configured: str = "") -> Path:
    """The 0600 file on the control machine holding Open WebUI's admin password: ``configured`` (the
    stack's ``openwebui.admin_password``) when given, else one generated once. Deploys read the password
    from here, so it never travels in host data.

    Example::

        password = admin_password_file(stack.stack.name, stack.openwebui.admin_password.get_secret_value())
    """
    return _password_file(state_dir() / f"{stack_name}.openwebui-admin-password", configured)


def user_password_file(stack_name: str, user: str) -> Path:
    """The 0600 file on the control machine holding the password an Open WebUI account of the stack
    (``accounts.users.<user>``) was created with, generated once.

    Example: ``user_password_file("demo", "alice").read_text().strip()``
    """
    return _password_file(state_dir() / f"{stack_name}.openwebui-user-{user}-password")


def _password_file(path: Path, configured: str = "") -> Path:
    """``path`` holding ``configured`` when given, else a password generated on first use."""
    current = path.read_text().strip() if path.exists() else None
    if configured and configured != current:
        write_atomic(path, configured + "\n", mode=0o600)
    elif not configured and current is None:
        write_atomic(path, secrets.token_urlsafe(18) + "\n", mode=0o600)
    return path.resolve()


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
        """The hosts as recorded in the file (JSON records); ``saved_hosts`` gives them as Host."""
        return self.data["hosts"]

    def saved_hosts(self) -> list[Host]:
        return [Host.from_record(record) for record in self.hosts]

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

    def set_hosts(self, hosts: Iterable[Host | Mapping[str, Any]]) -> None:
        self.data["hosts"] = [Host.from_record(host).to_record() for host in hosts]
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")

    def remove_if_empty(self) -> bool:
        if self.resources:
            return False
        self.path.unlink(missing_ok=True)
        return True
