"""Waiting for a host's SSH with the key and known_hosts pyinfra will use."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path


class SshTimeout(Exception):
    """The host did not accept an SSH login in time."""


def ssh_command(address: str, user: str, private_key: str | Path, known_hosts: str | Path, *remote: str,
                port: int = 22, strict: str = "yes") -> list[str]:
    """The ssh argv for ``user@address``: options first, then ``--`` so that nothing after it (the
    destination, the remote command) can become an ssh option; each remote word is shell-quoted,
    since the remote side hands them to a shell joined by spaces.

    Example: ``ssh_command("10.213.0.10", "root", key, known, "cat", "/etc/os-release")``
    """
    return ["ssh", "-i", str(Path(private_key).expanduser()), "-p", str(port), "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", f"StrictHostKeyChecking={strict}", "--", f"{user}@{address}",
            *([shlex.join(remote)] if remote else [])]


def wait_for_ssh(address: str, user: str, private_key: str | Path, known_hosts: str | Path,
                 strict: str = "yes", timeout: float = 300, port: int = 22) -> float:
    """Seconds until ``ssh user@address true`` succeeds; raises SshTimeout after ``timeout``.

    Example: ``wait_for_ssh("10.213.0.10", "root", "~/.ssh/id_ed25519", "/var/lib/ollastack/lab/known_hosts")``
    """
    started = time.monotonic()
    cmd = ssh_command(address, user, private_key, known_hosts, "true", port=port, strict=strict)
    last = ""
    while time.monotonic() - started < timeout:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode == 0:
            return time.monotonic() - started
        last = (result.stderr.strip().splitlines() or [""])[-1]
        time.sleep(1)
    raise SshTimeout(f"{user}@{address} did not accept SSH within {timeout:.0f}s ({last or 'no answer'}); "
                     "check access.admin_cidrs and access.ssh_private_key")
