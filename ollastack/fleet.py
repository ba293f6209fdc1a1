"""A fleet: one gateway (nginx, Open WebUI, TLS; the only public host) and ``fleet.backends`` Ollama hosts.

The gateway's nginx balances the backends on the gateway's loopback (``ollama.host``), where Open WebUI
finds Ollama as it does on a single host. Each backend's Ollama listens on the backend's private
address, and the backend's firewall admits that port from the gateway's address alone. The provider
lists the gateway first, then the backends.

Example::

    gateway, backends = fleet.split(stack, hosts)   # Host("demo-1", ...), [Host("demo-2", ...), Host("demo-3", ...)]
    fleet.host_settings(stack, hosts)["demo-2"]     # {"ollastack_fleet_role": "backend", ...}
    fleet.probe_backends(stack, gateway, backends)  # [{"name": "demo-2", "reachable": True, "models": [...]}, ...]
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ollastack.config import split_host_port
from ollastack.host import Host
from ollastack.hostdata import key
from ollastack.remote import host_command

if TYPE_CHECKING:
    from ollastack.config import Stack

GATEWAY, BACKEND = "gateway", "backend"
PROBE_TIMEOUT_S = 60
# One line per backend: its address, then /api/tags' answer (or nothing), asked from the gateway.
PROBE = 'for a in "$@"; do printf "%s " "$a"; curl -fsS --max-time 5 "http://$a/api/tags" 2>/dev/null | tr -d "\\n"; echo; done'


class FleetError(ValueError):
    """The provider's hosts do not make the fleet the stack describes."""


def split(stack: Stack, hosts: Iterable[Host]) -> tuple[Host | None, list[Host]]:
    """(gateway, backends) of a fleet stack; ``(None, [])`` for a single-host stack.

    Raises FleetError when the provider lists another number of hosts than 1 + ``fleet.backends``
    (a host stopped or missing: taking the next one as the gateway would expose a backend), or an
    address that is not an IP address (it goes into the firewall rules and nginx's upstream).

    Example: ``split(stack, [gw, b1, b2]) == (gw, [b1, b2])``
    """
    hosts = list(hosts)
    if not stack.fleet.backends:
        return None, []
    if len(hosts) != 1 + stack.fleet.backends:
        names = ", ".join(h.name for h in hosts) or "none"
        raise FleetError(f"fleet.backends = {stack.fleet.backends} needs a gateway and {stack.fleet.backends} "
                         f"backends running, and the provider lists {len(hosts)} host(s) ({names}): `ollastack up` "
                         "starts the missing ones")
    for host in hosts:
        for address in filter(None, (host.address, host.private_address)):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise FleetError(f"{host.name}: a fleet host needs an IP address, not {address!r}") from None
    return hosts[0], hosts[1:]


def backend_address(stack: Stack, host: Host) -> str:
    """Where the backend's Ollama listens: its address and ``ollama.host``'s port (``10.213.0.11:11434``)."""
    port = split_host_port(stack.ollama.host)[1]
    return f"[{host.address}]:{port}" if ":" in host.address else f"{host.address}:{port}"


def host_settings(stack: Stack, hosts: Iterable[Host]) -> dict[str, dict[str, Any]]:
    """Host name -> the host-data keys its role changes; {} for a single-host stack.

    The gateway learns the backends' addresses (nginx's upstream); a backend its own listening
    address (``ollama.host``) and the gateway's address in their network (its firewall's only source for
    Ollama's port). A backend reached through the gateway (a cloud's, ``Host.jump``) also admits SSH
    from the gateway's address, which is where pyinfra's and ollastack's SSH then arrive from.
    """
    gateway, backends = split(stack, hosts)
    if gateway is None:
        return {}
    inside = gateway.private_address or gateway.address
    settings = {gateway.name: {key("fleet_role"): GATEWAY,
                               key("fleet_upstreams"): [backend_address(stack, b) for b in backends]}}
    for backend in backends:
        settings[backend.name] = {key("fleet_role"): BACKEND, key("fleet_gateway"): inside,
                                  key("ollama.host"): backend_address(stack, backend)}
        if backend.jump is not None:
            jump_cidr = str(ipaddress.ip_network(inside))
            admins = [*stack.access.admin_cidrs, *([] if jump_cidr in stack.access.admin_cidrs else [jump_cidr])]
            settings[backend.name][key("access.admin_cidrs")] = admins
    return settings


def groups(entries: Iterable[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """pyinfra groups ``gateway`` and ``ollama`` (inventory names) of a fleet's inventory entries.

    A single host runs Ollama and is its own gateway, so it is in both.

    Example: ``gateway, ollama = groups(lab)`` in ``inventories/lab.py``
    """
    entries = list(entries)
    gateway = [name for name, data in entries if data.get(key("fleet_role"), "") != BACKEND]
    ollama = [name for name, data in entries if data.get(key("fleet_role"), "") != GATEWAY]
    return gateway, ollama


def parse_probe(output: str, backends: list[Host], addresses: list[str]) -> list[dict[str, Any]]:
    """``PROBE``'s lines as one report per backend: reachable from the gateway, and the models it lists.

    Example: ``parse_probe('10.213.0.11:11434 {"models": []}\\n', [b1], ["10.213.0.11:11434"])[0]["reachable"] is True``
    """
    answers = {}
    for line in output.splitlines():
        address, _, text = line.partition(" ")
        answers[address] = text.strip()
    reports = []
    for backend, address in zip(backends, addresses):
        try:
            tags = json.loads(answers.get(address) or "null")
        except ValueError:
            tags = None
        if isinstance(tags, dict):
            models = sorted(str(m.get("name")) for m in tags.get("models", []) if isinstance(m, dict))
            reports.append({"name": backend.name, "address": address, "reachable": True, "models": models})
        else:
            reports.append({"name": backend.name, "address": address, "reachable": False, "models": []})
    return reports


def probe_backends(stack: Stack, gateway: Host, backends: list[Host]) -> list[dict[str, Any]] | str:
    """Each backend's Ollama as the gateway reaches it (one SSH to the gateway), or why the gateway did not answer."""
    addresses = [backend_address(stack, b) for b in backends]
    argv = host_command(stack, gateway, "sh", "-c", PROBE, "fleet", *addresses)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"the gateway {gateway.address} gave no answer within {PROBE_TIMEOUT_S}s"
    if result.returncode != 0:
        return f"SSH to the gateway {gateway.address} failed: {result.stderr.strip()[-200:]}"
    return parse_probe(result.stdout, backends, addresses)


def status(stack: Stack, hosts: list[Host]) -> dict[str, Any]:
    """``status``'s fleet part: {"backends": [...]} per backend, {"backends": "why not"}; {} for one host."""
    try:
        gateway, backends = split(stack, hosts)
    except FleetError as exc:
        return {"backends": str(exc)}
    if gateway is None:
        return {}
    return {"backends": probe_backends(stack, gateway, backends)}
