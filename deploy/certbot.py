"""Let's Encrypt certificates with certbot (``tls.mode = "letsencrypt"``): issue once, renew by timer.

HTTP-01 goes through nginx's webroot location (``/.well-known/acme-challenge/`` from
/var/www/ollastack-acme), so nginx is never stopped. nginx reads copies of the certificate in
/etc/ollastack/tls, written by a certbot deploy hook that also reloads nginx: the certbot timer's
renewals are served without anyone running a converge. A converge requests a certificate only when
none is there for the domain, it came from another ACME server, or it is due for renewal.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.facts import LetsEncryptCertificate
from ollastack.deploy.guards import plan_check
from ollastack.deploy.nginx import ACME_ROOT, RELOAD
from ollastack.deploy.present import absent, host_state
from ollastack.deploy.tls import TLS_DIR, certificate_domain
from ollastack.resources import template
from ollastack.config import acme_directory

HOOK = "/etc/letsencrypt/renewal-hooks/deploy/ollastack-nginx"
#: What ``letsencrypt`` reads of the host in self-signed mode (``deploy.present.host_state`` arguments).
PACKAGES = ["certbot", "openssl"]


def reads(data) -> dict[str, list[str]]:
    """What ``letsencrypt`` reads of the host (``deploy.present.host_state`` arguments)."""
    return {"paths": [HOOK], "packages": PACKAGES if data.ollastack_tls_mode == "letsencrypt" else []}
ISSUE_SCRIPT = "/usr/local/lib/ollastack/certbot-issue.py"
ACME_CA = "/etc/ollastack/acme-ca.pem"
CERTBOT_DROPIN = "/etc/systemd/system/certbot.service.d/ollastack.conf"
def needs_request(cert: dict, directory: str) -> bool:
    """Whether a converge must ask the ACME server: no certificate, another server's, or due for renewal.

    Example: ``needs_request({"exists": True, "due": False, "server": url}, url) is False``
    """
    return not cert["exists"] or cert["due"] or cert["server"] != directory


def _trust(data):
    """certbot's trust for a private ACME server (REQUESTS_CA_BUNDLE), for converges and the timer alike."""
    if not data.ollastack_tls_acme_ca_bundle:
        files.file(name="No private ACME CA", path=ACME_CA, present=False)
        dropin = files.file(name="certbot timer uses the system CAs", path=CERTBOT_DROPIN, present=False)
    else:
        files.put(name="Private ACME server CA", src=data.ollastack_tls_acme_ca_bundle, dest=ACME_CA, mode="0644")
        dropin = files.template(name="certbot timer trusts the private ACME CA",
                                src=str(template("certbot-service-override.conf.j2")), dest=CERTBOT_DROPIN,
                                ca_bundle=ACME_CA)
    systemd.daemon_reload(name="Reload systemd units", _if=dropin.did_change)


@plan_check
def refuse_without_domain() -> None:
    """Stop the converge before any change when letsencrypt mode has no name to ask a certificate for."""
    if host.data.ollastack_tls_mode == "letsencrypt" and not certificate_domain(host.data):
        raise DeployError(f"{host.name}: tls.domain: tls.mode = \"letsencrypt\" needs a DNS name pointing at "
                          f"{host.name} (or a provider DNS name such as azure.dns_label); set it and run again")


@deploy("Let's Encrypt", data_defaults=DEFAULTS)
def letsencrypt():
    """Get and keep a Let's Encrypt certificate for nginx; in self-signed mode only remove the deploy hook.

    Runs after ``nginx()``: the challenge is answered by the running nginx.
    """
    data = host.data
    if data.ollastack_tls_mode != "letsencrypt":
        # Without the hook a later renewal can no longer overwrite the self-signed certificate.
        absent(host_state(**reads(data)), name="certbot deploy hook removed (self-signed mode)", path=HOOK)
        return
    refuse_without_domain()
    domain = certificate_domain(data)
    ensure_packages(PACKAGES, "Install certbot", host_state(**reads(data)))
    _trust(data)
    files.directory(name="ollastack helper directory", path="/usr/local/lib/ollastack", mode="0755")
    files.put(name="certbot request helper", src=str(template("certbot-issue.py")), dest=ISSUE_SCRIPT, mode="0755")
    files.template(name="certbot deploy hook (install + reload nginx)", src=str(template("certbot-deploy-hook.sh.j2")),
                   dest=HOOK, mode="0755", live=shlex.quote(f"/etc/letsencrypt/live/{domain}"),
                   tls_dir=TLS_DIR, reload=RELOAD)
    systemd.service(name="certbot renewal timer", service="certbot.timer", running=True, enabled=True)
    directory = acme_directory(data.ollastack_tls_acme_server)
    cert = host.get_fact(LetsEncryptCertificate, domain=domain, tls_dir=TLS_DIR)
    if needs_request(cert, directory):
        args = [ISSUE_SCRIPT, domain, data.ollastack_tls_email, directory, ACME_ROOT]
        if data.ollastack_tls_acme_ca_bundle:
            args += ["--ca-bundle", ACME_CA]
        server.shell(name=f"Request a certificate for {domain}", commands=[shlex.join(args)])
    elif cert["installed"]:
        return
    # Runs only after a successful request: a failed one stops this host's converge first.
    server.shell(name=f"Serve the certificate for {domain}", commands=[HOOK])
