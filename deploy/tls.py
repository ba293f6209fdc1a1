"""TLS material for nginx in /etc/ollastack/tls: from the stack's private CA, or from Let's Encrypt.

In self-signed mode the certificate comes from the stack CA (``ollastack/certs.py``): the control
machine issues it before pyinfra runs (renewed before it expires, made again when a host's name falls
outside the CA's name constraints), and this component only uploads it, so ``pyinfra --dry`` writes
nothing under ssl/. In letsencrypt mode ``deploy/certbot.py`` fills the same files; this component
then only bootstraps them with a stack-CA certificate on a fresh host, because nginx cannot start its
443 server without one and certbot needs nginx to answer the HTTP-01 challenge.
"""

from __future__ import annotations

from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import File

from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.guards import plan_check
from ollastack.deploy.present import directory, host_state, put
from ollastack import certs

TLS_DIR = "/etc/ollastack/tls"
#: What ``tls`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"paths": [TLS_DIR, *(f"{TLS_DIR}/{name}" for name in ("ca.pem", "fullchain.pem", "privkey.pem"))]}


def server_names(data, name: str | None = None) -> list[str]:
    """Names and addresses the certificate must carry: configured domain, provider names, address.

    ``name`` is the host's inventory name (the current host's when omitted).
    """
    return certs.host_names(data.ollastack_tls_domain, data.ollastack_tls_names, host.name if name is None else name)


def certificate_domain(data) -> str:
    """The one name a Let's Encrypt certificate is for: ``tls.domain``, else the provider's DNS name, else ""."""
    return data.ollastack_tls_domain or next(iter(data.ollastack_tls_names), "")


def issued_files(data) -> tuple[Path, certs.ServerCertPaths]:
    """The stack CA and the current host's certificate files on the control machine (issued before pyinfra runs)."""
    stack_dir = certs.ssl_dir(data.ollastack_stack_name)
    return stack_dir / "ca.pem", certs.server_cert_paths(stack_dir, data.ollastack_name or host.name)


@plan_check
def certificate_to_upload() -> bool:
    """Whether this component uploads the stack-CA certificate (letsencrypt mode: only while certbot's is not
    there yet); stops the converge before any change when that certificate was not issued."""
    if host.data.ollastack_tls_mode == "letsencrypt" and host.get_fact(File, path=f"{TLS_DIR}/fullchain.pem"):
        return False
    ca_cert, paths = issued_files(host.data)
    missing = [str(p) for p in (ca_cert, paths.fullchain, paths.key) if not p.is_file()]
    if missing:
        raise DeployError(f"{host.name}: no stack-CA certificate on this machine ({', '.join(missing)}); "
                          "`ollastack up` issues it before converging; before a plain `pyinfra INVENTORY "
                          "deploy/site.py` run `python -m ollastack.certs INVENTORY`")
    return True


@deploy("TLS", data_defaults=DEFAULTS)
def tls():
    """Push the stack-CA certificate issued before the converge; returns the operations that replaced files nginx reads.

    Example (deploy/site.py): ``nginx(tls_changes=tls())``
    """
    if not certificate_to_upload():
        return []
    ca_cert, paths = issued_files(host.data)
    present = host_state(**READS)
    directory(present, name="TLS directory", path=TLS_DIR, mode="0755")
    put(present, name="Stack CA certificate", src=str(ca_cert), dest=f"{TLS_DIR}/ca.pem", mode="0644")
    chain = put(present, name="Server certificate chain", src=str(paths.fullchain), dest=f"{TLS_DIR}/fullchain.pem",
                mode="0644")
    key = put(present, name="Server private key", src=str(paths.key), dest=f"{TLS_DIR}/privkey.pem", mode="0600")
    return [chain, key]
