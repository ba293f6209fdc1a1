"""One read of the host for the whole site: what every component's ``host_state`` will ask, in one command.

Each component still reads through ``deploy.present.host_state`` and decides exactly as before; the answers
come from this one remote command instead of one per component (see ``deploy.present.prefetch``). A
component's reads name the packages it installs, so the same list tells ``base`` what to install at once.

Example (deploy/site.py, before the checks)::

    packages = read_host(role)
"""

from pyinfra import host
from pyinfra.api import deploy

from ollastack.deploy import backup, base, certbot, firewall, nginx, nvidia, ollama, openwebui, podman, release, tls
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.present import prefetch
from ollastack.fleet import BACKEND, GATEWAY


@deploy("Read the host", data_defaults=DEFAULTS)
def read_host(role: str = "") -> list[str]:
    """Prefetch the reads of the components ``deploy/site.py`` runs for a host of this fleet ``role``; returns
    the packages they install."""
    data = host.data
    reads = [base.READS, firewall.READS]
    facts = [*release.FACTS, *nvidia.facts(data), *firewall.FACTS]
    if role != GATEWAY:
        reads.append(ollama.reads(data))
        facts.extend(ollama.facts(data))
    if role != BACKEND:
        if data.ollastack_openwebui_install == "container":
            reads.append(podman.READS)
        reads.extend([openwebui.reads(data), backup.READS, tls.READS, nginx.READS, certbot.reads(data)])
    prefetch(*reads, facts=facts)
    return list(dict.fromkeys(p for read in reads for p in read.get("packages", ())))
