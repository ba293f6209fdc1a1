"""TLS material for nginx in /etc/ollastack/tls: from the stack's private CA, or from Let's Encrypt.

In self-signed mode the certificate comes from the stack CA (``ollastack/certs.py``), which the
converge renews before it expires and makes again when a host's name falls outside its name
constraints. In letsencrypt mode ``deploy/certbot.py`` fills the same files; this component then
only bootstraps them with a stack-CA certificate on a fresh host, because nginx cannot start its
443 server without one and certbot needs nginx to answer the HTTP-01 challenge.
"""

from __future__ import annotations

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files

from deploy.defaults import DEFAULTS
from ollastack import certs

TLS_DIR = "/etc/ollastack/tls"


def server_names(data, name: str | None = None) -> list[str]:
    """Names and addresses the certificate must carry: configured domain, provider names, address.

    ``name`` is the host's inventory name (the current host's when omitted).
    """
    names = [data.ollastack_tls_domain] if data.ollastack_tls_domain else []
    names += [n for n in data.ollastack_tls_names if n not in names]
    name = host.name if name is None else name
    if name not in names:
        names.append(name)
    return names


def stack_names() -> list[str]:
    """Every host's server names: what the stack CA must permit (its name constraints).

    All hosts, not just the current one, so that converging the second host keeps the CA the
    first one's certificate was issued by.
    """
    return list(dict.fromkeys(n for other in inventory for n in server_names(other.data, other.name)))


def certificate_domain(data) -> str:
    """The one name a Let's Encrypt certificate is for: ``tls.domain``, else the provider's DNS name, else ""."""
    return data.ollastack_tls_domain or next(iter(data.ollastack_tls_names), "")


@deploy("TLS", data_defaults=DEFAULTS)
def tls():
    """Push the stack-CA certificate; returns the operations that replaced files nginx reads.

    Example (deploy/site.py): ``nginx(tls_changes=tls())``
    """
    data = host.data
    if data.ollastack_tls_mode == "letsencrypt" and host.get_fact(File, path=f"{TLS_DIR}/fullchain.pem"):
        return []
    stack_dir = certs.ssl_dir(data.ollastack_stack_name)
    label = data.ollastack_name or host.name
    certs.ensure_server_cert(stack_dir, label, server_names(data), days=data.ollastack_tls_days,
                             renew_before_days=data.ollastack_tls_renew_before_days, ca_names=stack_names())
    ca_cert = stack_dir / "ca.pem"
    paths = certs.server_cert_paths(stack_dir, label)
    files.directory(name="TLS directory", path=TLS_DIR, mode="0755")
    files.put(name="Stack CA certificate", src=str(ca_cert), dest=f"{TLS_DIR}/ca.pem", mode="0644")
    chain = files.put(name="Server certificate chain", src=str(paths.fullchain), dest=f"{TLS_DIR}/fullchain.pem",
                      mode="0644")
    key = files.put(name="Server private key", src=str(paths.key), dest=f"{TLS_DIR}/privkey.pem", mode="0600")
    return [chain, key]
