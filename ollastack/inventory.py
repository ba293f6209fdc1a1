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
from ollastack.ssh import proxy_command
from ollastack.state import hold_lock_until_exit, known_hosts_file, ssh_config_file, write_atomic


def pyinfra_hosts(stack: Stack, hosts: Iterable[Host], known_hosts: Path | None = None,
                  strict: str = "accept-new") -> list[tuple[str, dict[str, Any]]]:
    """One ``(address, data)`` pair per host, carrying every host setting of the stack.

    Hosts with a ``jump`` (a cloud fleet's backends) are reached through it: their ProxyCommand goes
    into the stack's ssh config file (``jump_config``), which their entries name.
    """
    _, private_key = stack.key_paths()
    common = host_data(stack)
    hosts = list(hosts)
    # A shrunk fleet's surplus backends are drained and removed by `ollastack up`, never converged.
    hosts = [h for h in hosts if h not in fleet.surplus(stack, hosts)]
    roles = fleet.host_settings(stack, hosts)
    config = jump_config(stack, hosts, known_hosts, strict)
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
        if host.jump is not None and config is not None:
            data["ssh_config_file"] = str(config)
        entries.append((host.address, data))
    return entries


def jump_config(stack: Stack, hosts: list[Host], known_hosts: Path | None, strict: str) -> Path | None:
    """Write the ssh config reaching each jumped host through its jump (0600); None when no host has one.

    pyinfra's ssh connector has no proxy setting of its own, and follows an ssh config's
    ``ProxyCommand``; every value in the line is checked and quoted by ``ssh.proxy_command``.

    Example: ``jump_config(stack, [gateway, backend], known, "accept-new")`` -> ``.ollastack/state/demo.ssh_config``
    """
    _, private_key = stack.key_paths()
    known = known_hosts or known_hosts_file(stack.stack.name)
    lines = []
    for host in hosts:
        if host.jump is not None:
            # proxy_command checks that the address is an IP address: it is the ``Host`` pattern too.
            command = proxy_command(host.jump, host.address, host.port, private_key, known, strict)
            lines += [f"Host {host.address}", f"    ProxyCommand {command}"]
    if not lines:
        return None
    path = ssh_config_file(stack.stack.name)
    write_atomic(path, "# Written by ollastack: the hosts reached through another (a fleet's backends "
                       "through its gateway).\n" + "\n".join(lines) + "\n")
    return path


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
