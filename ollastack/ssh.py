"""Waiting for a host's SSH with the key and known_hosts pyinfra will use."""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ollastack.host import Host


# A login name as Debian's adduser takes it: nothing ssh could read as an option or a token.
LOGIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,31}")


class SshTimeout(Exception):
    """The host did not accept an SSH login in time."""


def _options(private_key: str | Path, known_hosts: str | Path, port: int, strict: str) -> list[str]:
    return ["-i", str(Path(private_key).expanduser()), "-p", str(port), "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", f"StrictHostKeyChecking={strict}"]


def proxy_command(jump: Host, address: str, port: int, private_key: str | Path, known_hosts: str | Path,
                  strict: str = "yes") -> str:
    """The ProxyCommand reaching ``address``:``port`` through ``jump`` (``ssh -W``), as one shell-quoted line.

    The jump logs in with the same key, known_hosts and host key checking as the target; both
    addresses must be IP addresses and the user a plain login name, so nothing in the line is read as
    an option or a token (``%h``) by ssh or paramiko.

    Example: ``proxy_command(Host("gw", "192.0.2.30", user="ollastack"), "10.0.0.5", 22, key, known)``
    """
    ipaddress.ip_address(address)
    ipaddress.ip_address(jump.address)
    if not LOGIN_RE.fullmatch(jump.user):
        raise ValueError(f"jump host user {jump.user!r}: expected a login name (letters, digits, - and _)")
    for path in (str(private_key), str(known_hosts)):
        if "%" in path:
            raise ValueError(f"{path}: ssh would read % in a ProxyCommand as a token; use a path without it")
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return shlex.join(["ssh", *_options(private_key, known_hosts, jump.port, strict), "-W", target,
                       "--", f"{jump.user}@{jump.address}"])


def ssh_command(address: str, user: str, private_key: str | Path, known_hosts: str | Path, *remote: str,
                port: int = 22, strict: str = "yes", jump: Host | None = None) -> list[str]:
    """The ssh argv for ``user@address``: options first, then ``--`` so that nothing after it (the
    destination, the remote command) can become an ssh option; each remote word is shell-quoted,
    since the remote side hands them to a shell joined by spaces. ``jump``: reach it through that
    host (``proxy_command``).

    Example: ``ssh_command("10.213.0.10", "root", key, known, "cat", "/etc/os-release")``
    """
    proxy = ["-o", f"ProxyCommand={proxy_command(jump, address, port, private_key, known_hosts, strict)}"] if jump else []
    return ["ssh", *_options(private_key, known_hosts, port, strict), *proxy, "--", f"{user}@{address}",
            *([shlex.join(remote)] if remote else [])]


def wait_for_ssh(address: str, user: str, private_key: str | Path, known_hosts: str | Path,
                 strict: str = "yes", timeout: float = 300, port: int = 22, jump: Host | None = None) -> float:
    """Seconds until ``ssh user@address true`` succeeds; raises SshTimeout after ``timeout``.

    Example: ``wait_for_ssh("10.213.0.10", "root", "~/.ssh/id_ed25519", "/var/lib/ollastack/lab/known_hosts")``
    """
    started = time.monotonic()
    cmd = ssh_command(address, user, private_key, known_hosts, "true", port=port, strict=strict, jump=jump)
    last = ""
    while time.monotonic() - started < timeout:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            return time.monotonic() - started
        last = (result.stderr.strip().splitlines() or [""])[-1]
        time.sleep(1)
    raise SshTimeout(f"{user}@{address} did not accept SSH within {timeout:.0f}s ({last or 'no answer'}); "
                     "check access.admin_cidrs and access.ssh_private_key")
