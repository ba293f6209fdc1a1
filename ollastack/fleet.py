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
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ollastack import providers
from ollastack.config import split_host_port
from ollastack.host import Host
from ollastack.hostdata import key
from ollastack.ollama_names import client_address, tagged
from ollastack.remote import host_command

if TYPE_CHECKING:
    from ollastack.config import Stack

GATEWAY, BACKEND = "gateway", "backend"
PROBE_TIMEOUT_S = 60
# One line per backend: its address, then /api/tags' answer (or nothing), a tab and /api/ps' (its load),
# asked from the gateway.
PROBE = ('for a in "$@"; do printf "%s " "$a"; curl -fsS --max-time 5 "http://$a/api/tags" 2>/dev/null | tr -d "\\n"; '
         'printf "\\t"; curl -fsS --max-time 5 "http://$a/api/ps" 2>/dev/null | tr -d "\\n"; echo; done')


class FleetError(ValueError):
    """The provider's hosts do not make the fleet the stack describes."""


def split(stack: Stack, hosts: Iterable[Host]) -> tuple[Host | None, list[Host]]:
    """(gateway, backends) of a fleet stack; ``(None, [])`` for a single-host stack.

    Raises FleetError when the provider lists fewer hosts than 1 + ``fleet.backends``, naming the
    missing ones (a host stopped or missing: taking the next one as the gateway would expose a
    backend), or an address that is not an IP address (it goes into the firewall rules and nginx's
    upstream). Hosts beyond them are a fleet being shrunk (``surplus``), in neither part.

    Example: ``split(stack, [gw, b1, b2]) == (gw, [b1, b2])``
    """
    hosts = list(hosts)
    if not stack.fleet.backends:
        return None, []
    if len(hosts) < 1 + stack.fleet.backends:
        names = ", ".join(h.name for h in hosts) or "none"
        raise FleetError(f"fleet.backends = {stack.fleet.backends} needs a gateway and {stack.fleet.backends} "
                         f"backends running, and the provider lists {len(hosts)} host(s) ({names}){missing(stack, hosts)}: "
                         "`ollastack up` starts the missing ones")
    expected = providers.get(stack.stack.provider).fleet_names(stack)
    if expected and hosts[0].name != expected[0] and any(h.name in expected[1:] for h in hosts):
        # A stopped gateway beside a shrunk fleet's surplus: the count adds up, but a backend would be first.
        raise FleetError(f"the fleet's gateway is not running{missing(stack, hosts)}: `ollastack up` starts it")
    for host in hosts:
        for address in filter(None, (host.address, host.private_address)):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise FleetError(f"{host.name}: a fleet host needs an IP address, not {address!r}") from None
    return hosts[0], hosts[1:1 + stack.fleet.backends]


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
    settings.update(placement_settings(stack, gateway, backends, settings))
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
        tags_text, _, ps_text = answers.get(address, "").partition("\t")
        tags, ps = _json(tags_text), _json(ps_text)
        if isinstance(tags, dict):
            models = sorted(str(m.get("name")) for m in tags.get("models", []) if isinstance(m, dict))
            loaded = ps.get("models", []) if isinstance(ps, dict) else []
            running = sorted(str(m.get("name")) for m in loaded if isinstance(m, dict))
            reports.append({"name": backend.name, "address": address, "reachable": True, "models": models,
                            "running": running})
        else:
            reports.append({"name": backend.name, "address": address, "reachable": False, "models": [], "running": []})
    return reports


def _json(text: str) -> Any:
    """``text`` as JSON, or None when it is none (no answer, or cut off)."""
    try:
        return json.loads(text.strip() or "null")
    except ValueError:
        return None


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


def placed_models(stack: Stack, index: int) -> list[str]:
    """The models backend ``index`` (0: the first backend) pulls and serves: its ``fleet.placement`` entry, else all.

    Example: ``placed_models(stack, 1) == ["llama3.2:1b", "mistral:7b"]``
    """
    placement = stack.fleet.placement
    return list(placement[index]) if index < len(placement) else list(stack.ollama.models)


def placement_groups(stack: Stack, backends: list[Host]) -> list[list[Host]]:
    """The backends grouped by the models they serve, in the order of each group's first backend; one group
    without a placement. A chat may go to any backend of its model's group, never to one without the model.

    Example: ``placement_groups(stack, [b1, b2, b3]) == [[b1, b3], [b2]]`` (b1 and b3 serve the same models)
    """
    groups: dict[frozenset[str], list[Host]] = {}
    for index, backend in enumerate(backends):
        groups.setdefault(frozenset(tagged(m) for m in placed_models(stack, index)), []).append(backend)
    return list(groups.values())


def group_listen(ollama_host: str, index: int) -> str:
    """Where the gateway's upstream of group ``index`` listens: ``ollama.host``, then the next ports (loopback).

    Example: ``group_listen("127.0.0.1:11434", 1) == "127.0.0.1:11435"``
    """
    address, port = split_host_port(client_address(ollama_host))
    return f"[{address}]:{port + index}" if ":" in address else f"{address}:{port + index}"


def placement_settings(stack: Stack, gateway: Host, backends: list[Host],
                       settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``host_settings``' additions of a placement: each backend's own ``ollama.models`` and the gateway's groups
    (the backends' addresses of each); {} without one, so a fleet without placement converges as before.

    The presets' default base is pinned to the stack's (first of ``ollama.models``): a backend's own first
    model would make the same preset from another model on each backend.
    """
    if not stack.fleet.placement:
        return {}
    groups = [[backend_address(stack, b) for b in group] for group in placement_groups(stack, backends)]
    result = {gateway.name: {**settings[gateway.name], key("fleet_groups"): groups}}
    for index, backend in enumerate(backends):
        result[backend.name] = {**settings[backend.name], key("ollama.models"): placed_models(stack, index)}
        if stack.presets.use:
            result[backend.name][key("presets.base")] = stack.presets.base or stack.ollama.models[0]
    return result


# A shrink waits this long for the gateway's streams to a removed backend to end, then removes it anyway.
DRAIN_WAIT_S = 300
DRAIN_POLL_S = 2
# One line per backend address: how many established connections the gateway has open to it.
CONNECTIONS = 'for a in "$@"; do ss -tnH state established dst "$a" | wc -l; done'


def missing(stack: Stack, hosts: Iterable[Host]) -> str:
    """``"; missing: demo-3 (backend 2)"``: the fleet's hosts, with their role, that the provider does not list."""
    listed = {h.name for h in hosts}
    names = providers.get(stack.stack.provider).fleet_names(stack)
    gone = [f"{name} ({'the gateway' if index == 0 else f'backend {index}'})"
            for index, name in enumerate(names) if name not in listed]
    return f"; missing: {', '.join(gone)}" if gone else ""


def surplus(stack: Stack, hosts: Iterable[Host]) -> list[Host]:
    """The backends a fleet has beyond ``fleet.backends`` (it was shrunk), the highest index first.

    ``ollastack up`` drains them from the gateway's upstream, then has the provider remove them.
    Example: ``surplus(stack, [gw, b1, b2, b3]) == [b3]`` with ``fleet.backends = 2``
    """
    hosts = list(hosts)
    if not stack.fleet.backends:
        return []
    return hosts[1 + stack.fleet.backends:][::-1]


def open_connections(stack: Stack, gateway: Host, backends: list[Host]) -> dict[str, int]:
    """Backend name -> the connections the gateway has open to its Ollama (``ss`` over one SSH)."""
    argv = host_command(stack, gateway, "sh", "-c", CONNECTIONS, "fleet", *(backend_address(stack, b) for b in backends))
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise FleetError(f"the gateway {gateway.address} gave no answer within {PROBE_TIMEOUT_S}s") from None
    counts = result.stdout.split()
    if result.returncode != 0 or len(counts) != len(backends) or not all(c.isdigit() for c in counts):
        raise FleetError(f"asking the gateway {gateway.address} for its connections failed: "
                         f"{result.stderr.strip()[-200:] or result.stdout.strip()[-200:]}")
    return {b.name: int(c) for b, c in zip(backends, counts)}


def drain(stack: Stack, gateway: Host, removed: list[Host], progress: Callable[[str], None],
          wait_s: float = DRAIN_WAIT_S) -> None:
    """Wait until the gateway holds no connection to the ``removed`` backends, at most ``wait_s``.

    Call it once the gateway's upstream no longer lists them: nginx's reload sends new requests to
    the others, and its old workers finish their streams (to the removed ones too) before exiting.
    Example: ``drain(stack, gateway, [b3], progress)`` -> "demo-4: drained from the gateway's upstream"
    """
    deadline = time.monotonic() + wait_s
    said = ""
    while True:
        busy = {name: n for name, n in open_connections(stack, gateway, removed).items() if n}
        if not busy:
            for backend in removed:
                progress(f"{backend.name}: drained from the gateway's upstream")
            return
        if time.monotonic() >= deadline:
            progress(f"{', '.join(busy)}: still streaming after {wait_s:.0f}s: removed anyway")
            return
        line = f"waiting for {sum(busy.values())} open connection(s) from the gateway to {', '.join(busy)} to end"
        if line != said:
            progress(line)
            said = line
        time.sleep(DRAIN_POLL_S)
