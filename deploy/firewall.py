"""Host firewall (nftables): SSH from the admin networks, 80/443 from anywhere, all else dropped."""

import ipaddress
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from deploy.defaults import DEFAULTS
from deploy.facts import SshClientAddress
from ollastack import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"
RULES = "/etc/ollastack/firewall.nft"


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


@deploy("Firewall", data_defaults=DEFAULTS)
def firewall():
    cidrs = host.data.access_admin_cidrs
    problem = lockout_problem(cidrs, host.get_fact(SshClientAddress, _sudo=False))
    if problem:
        server.shell(name="Firewall would lock out this SSH session", commands=[f"echo {shlex.quote(problem)} >&2; exit 1"])
        return
    networks = [ipaddress.ip_network(c) for c in cidrs]
    files.directory(name="ollastack config directory", path="/etc/ollastack", mode="0755")
    rules = files.template(name="Firewall rules", src=str(TEMPLATES / "firewall.nft.j2"), dest=RULES, mode="0600",
                           admin4=[str(n) for n in networks if n.version == 4],
                           admin6=[str(n) for n in networks if n.version == 6])
    unit = files.template(name="Firewall unit", src=str(TEMPLATES / "ollastack-firewall.service.j2"),
                          dest="/etc/systemd/system/ollastack-firewall.service", rules=RULES)
    systemd.daemon_reload(name="Reload systemd units", _if=unit.did_change)
    # Established connections are accepted first, so this SSH session survives the swap.
    server.shell(name="Apply firewall rules", commands=[f"nft -c -f {RULES}", f"nft -f {RULES}"],
                 _if=any_changed(rules, unit))
    systemd.service(name="Firewall enabled at boot", service="ollastack-firewall", running=True, enabled=True)
