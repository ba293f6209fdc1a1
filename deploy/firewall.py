"""Host firewall (nftables): SSH from the admin networks, 80/443 from anywhere, all else dropped.

A fleet's backend opens no web port; it admits Ollama's port from the gateway's address alone.

The converge compares the live table with the listing recorded right after the last apply, so a
flushed or edited table (``nft flush ruleset``, a restart of Debian's nftables.service) is put back.
"""

import ipaddress
import posixpath

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.facts import NftTable, SshClientAddress, nft_list_command, normalized_nft
from ollastack.deploy.guards import plan_check
from ollastack.deploy.present import directory, fact, host_state, may_change, service_running, templated
from ollastack.config import split_host_port
from ollastack.fleet import BACKEND
from ollastack.resources import template

RULES = "/etc/ollastack/firewall.nft"
SERVICE = "ollastack-firewall"
UNIT = f"/etc/systemd/system/{SERVICE}.service"
TABLE = "inet ollastack"
# What ``nft list table`` showed right after the last apply: what applying RULES produces.
APPLIED = "/var/lib/ollastack/firewall.applied"
#: What ``firewall`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"paths": ["/etc/ollastack", RULES, UNIT], "services": [SERVICE], "texts": [APPLIED]}
#: What ``firewall`` asks ``deploy.present.fact`` (for ``prefetch``).
FACTS: list[tuple[type, dict]] = [(NftTable, {"table": TABLE})]


def admin_networks(admin_cidrs: list[str]) -> tuple[list[str], list[str]]:
    """The admin networks collapsed per family, as (IPv4, IPv6) lists: nft refuses overlapping intervals.

    Example: ``admin_networks(["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]) == (["10.0.0.0/8"], ["2001:db8::/32"])``
    """
    networks = [ipaddress.ip_network(cidr) for cidr in admin_cidrs]
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [str(n) for n in ipaddress.collapse_addresses(v4)], [str(n) for n in ipaddress.collapse_addresses(v6)]


def lockout_problem(admin_cidrs: list[str], client: str | None) -> str | None:
    """Why applying the rules would cut off this SSH client, or None when it stays allowed.

    Example: ``lockout_problem(["10.0.0.0/8"], "192.0.2.1")`` explains that 192.0.2.1 is not covered.
    """
    if not client:
        return None
    address = ipaddress.ip_address(client)
    if any(address in ipaddress.ip_network(cidr) for cidr in admin_cidrs):
        return None
    return (f"access.admin_cidrs ({', '.join(admin_cidrs)}) does not include {client}, the address this "
            f"converge connects from: the firewall would lock it out. Add {client}/32 and run again.")


def table_differs(live: str | None, applied: str | None) -> bool:
    """Whether the live table is missing or is not what the last apply produced.

    Example: ``table_differs(None, "table inet ollastack { ... }")`` is True (the table was flushed).
    """
    return live is None or applied is None or normalized_nft(live) != normalized_nft(applied)


def fleet_rules(data) -> dict:
    """Template values for a fleet host: a backend serves no web ports, and Ollama's port to the gateway alone.

    Example: ``fleet_rules(backend.data) == {"web": False, "ollama_from": "10.213.0.10", "ollama_family": "ip",
    "ollama_port": 11434}``
    """
    if data.ollastack_fleet_role != BACKEND:
        return {"web": True, "ollama_from": ""}
    gateway = ipaddress.ip_address(data.ollastack_fleet_gateway)
    return {"web": False, "ollama_from": str(gateway), "ollama_family": "ip" if gateway.version == 4 else "ip6",
            "ollama_port": split_host_port(data.ollastack_ollama_host)[1]}


@plan_check
def refuse_lockout() -> None:
    """Stop the converge before any change when the rules would cut off the SSH session it runs over."""
    problem = lockout_problem(host.data.ollastack_access_admin_cidrs, host.get_fact(SshClientAddress, _sudo=False))
    if problem:
        raise DeployError(f"{host.name}: {problem}")


@deploy("Firewall", data_defaults=DEFAULTS)
def firewall():
    refuse_lockout()
    cidrs = host.data.ollastack_access_admin_cidrs
    admin4, admin6 = admin_networks(cidrs)
    present = host_state(**READS)
    drifted = table_differs(fact(NftTable, table=TABLE), present.text(APPLIED))
    directory(present, name="ollastack config directory", path="/etc/ollastack", mode="0755")
    rules = templated(present, name="Firewall rules", src=str(template("firewall.nft.j2")), dest=RULES,
                      mode="0600", admin4=admin4, admin6=admin6, **fleet_rules(host.data))
    unit = templated(present, name="Firewall unit", src=str(template("ollastack-firewall.service.j2")),
                     dest=UNIT, mode="0644", rules=RULES)
    if may_change(unit) and not present.not_enabled(SERVICE):
        # Otherwise the enable below reloads the units itself.
        systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)
    if drifted or may_change(rules, unit):
        # Established connections are accepted first, so this SSH session survives the swap.
        server.shell(name="Apply firewall rules",
                     commands=[f"nft -c -f {RULES}", f"nft -f {RULES}",
                               f"mkdir -p {posixpath.dirname(APPLIED)} && umask 077 && "
                               f"{nft_list_command(TABLE)} > {APPLIED}.new && mv {APPLIED}.new {APPLIED}"],
                     _if=lambda: drifted or any_changed(rules, unit)())
    service_running(present, name="Firewall enabled at boot", service=SERVICE)
