"""Turn a stack description and its hosts into pyinfra inventory entries.

This is the only bridge between where hosts come from (a provider of ``ollastack.providers``) and
the deploys: the deploys read nothing but ``host.data``. Every ``inventories/<provider>.py`` is one
call of ``provider_inventory``.

Example (an inventory file)::

    from ollastack.inventory import provider_inventory
    azure = provider_inventory("azure")      # the pyinfra group is the variable's name
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ollastack import fleet, providers
from ollastack.config import Stack, load_stack
from ollastack.host import SSH_PORT, Host
from ollastack.hostdata import host_data, key
from ollastack.state import hold_lock_until_exit, known_hosts_file


def pyinfra_hosts(stack: Stack, hosts: Iterable[Host], known_hosts: Path | None = None,
                  strict: str = "accept-new") -> list[tuple[str, dict[str, Any]]]:
    """One ``(address, data)`` pair per host, carrying every host setting of the stack."""
    _, private_key = stack.key_paths()
    common = host_data(stack)
    hosts = list(hosts)
    roles = fleet.host_settings(stack, hosts)
    entries = []
    for host in hosts:
        data = dict(common)
        data.update(roles.get(host.name, {}))
        data.update({
            key("name"): host.name,
            key("tls_names"): list(host.tls_names),
            "ssh_user": host.user,
            "ssh_key": str(private_key),
            "ssh_strict_host_key_checking": strict,
        })
        if host.user != "root":
            data["_sudo"] = True
        if host.port != SSH_PORT:
            data["ssh_port"] = host.port
        if known_hosts is not None:
            data["ssh_known_hosts_file"] = str(known_hosts)
        entries.append((host.address, data))
    return entries


def provider_inventory(name: str) -> list[tuple[str, dict[str, Any]]]:
    """Entries for the hosts provider ``name`` has for the stack (``$OLLASTACK_CONFIG`` or ./stack.toml).

    Host keys are checked against the provider's known_hosts file. The stack's lock is held until
    pyinfra exits, so a converge never runs beside an ``up`` or ``down`` of it.
    """
    stack = load_stack()
    hold_lock_until_exit(stack.stack.name)
    provider = providers.get(name)
    return pyinfra_hosts(provider.host_settings(stack), provider.hosts(stack), known_hosts=provider.known_hosts(stack),
                         strict=provider.strict_host_keys)


def stack_inventory(hosts: Iterable[Host | Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Entries for hosts listed by hand (``inventories/hosts.example.py``), with the stack's settings.

    Host keys are trusted on first use and remembered in the stack's known_hosts file; the stack's
    lock is held as in ``provider_inventory``.
    """
    stack = load_stack()
    hold_lock_until_exit(stack.stack.name)
    return pyinfra_hosts(stack, [Host.from_record(h) for h in hosts], known_hosts=known_hosts_file(stack.stack.name))
