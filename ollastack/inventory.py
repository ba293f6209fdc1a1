"""Turn a stack description and its hosts into pyinfra inventory entries.

This is the only bridge between where hosts come from (lab, cloud state, a static list) and the
deploys: the deploys read nothing but ``host.data``.

Example (an inventory file)::

    from ollastack.inventory import stack_inventory
    lab = stack_inventory(hosts=[{"name": "demo-1", "address": "10.213.0.10", "user": "root"}])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ollastack.config import Stack, load_stack
from ollastack.hostdata import host_data, key
from ollastack.state import hold_lock_until_exit, known_hosts_file


def pyinfra_hosts(stack: Stack, hosts: list[dict[str, Any]], known_hosts: Path | None = None,
                  strict: str = "accept-new") -> list[tuple[str, dict[str, Any]]]:
    """One ``(address, data)`` pair per host, carrying every host setting of the stack."""
    _, private_key = stack.key_paths()
    common = host_data(stack)
    entries = []
    for host in hosts:
        data = dict(common)
        data.update({
            key("name"): host["name"],
            key("tls_names"): list(host.get("tls_names") or []),
            "ssh_user": host.get("user", "root"),
            "ssh_key": str(private_key),
            "ssh_strict_host_key_checking": strict,
        })
        if host.get("user", "root") != "root":
            data["_sudo"] = True
        if host.get("port"):
            data["ssh_port"] = int(host["port"])
        if known_hosts is not None:
            data["ssh_known_hosts_file"] = str(known_hosts)
        entries.append((host["address"], data))
    return entries


def stack_inventory(hosts: list[dict[str, Any]] | None = None, **kwargs: Any) -> list[tuple[str, dict[str, Any]]]:
    """Load the stack description (``$OLLASTACK_CONFIG`` or ./stack.toml) and build entries for ``hosts``.

    Host keys are trusted on first use and remembered in the stack's known_hosts file. The stack's
    lock is held until pyinfra exits, so a converge never runs beside an ``up`` or ``down`` of it.
    """
    stack = load_stack()
    hold_lock_until_exit(stack.stack.name)
    kwargs.setdefault("known_hosts", known_hosts_file(stack.stack.name))
    return pyinfra_hosts(stack, hosts or [], **kwargs)
