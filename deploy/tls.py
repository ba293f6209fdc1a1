"""TLS material for nginx: a certificate from the stack's private CA (self-signed mode)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files

from deploy.defaults import DEFAULTS
from ollastack import certs

TLS_DIR = "/etc/ollastack/tls"


def server_names(data) -> list[str]:
    """Names and addresses the certificate must carry: configured domain, provider names, address."""
    names = [data.tls_domain] if data.tls_domain else []
    names += [n for n in data.tls_names if n not in names]
    if host.name not in names:
        names.append(host.name)
    return names


@deploy("TLS", data_defaults=DEFAULTS)
def tls():
    data = host.data
    stack_dir = certs.ssl_dir(data.stack_name)
    ca_cert, _ = certs.ensure_ca(stack_dir)
    label = data.ollastack_name or host.name
    certs.ensure_server_cert(stack_dir, label, server_names(data), days=data.tls_days,
                             renew_before_days=data.tls_renew_before_days)
    paths = certs.server_cert_paths(stack_dir, label)
    files.directory(name="TLS directory", path=TLS_DIR, mode="0755")
    files.put(name="Stack CA certificate", src=str(ca_cert), dest=f"{TLS_DIR}/ca.pem", mode="0644")
    chain = files.put(name="Server certificate chain", src=str(paths.fullchain), dest=f"{TLS_DIR}/fullchain.pem",
                      mode="0644")
    key = files.put(name="Server private key", src=str(paths.key), dest=f"{TLS_DIR}/privkey.pem", mode="0600")
    return [chain, key]
