"""nginx: HTTP->HTTPS redirect and the TLS reverse proxy in front of the web UI.

Only the stack's names are served (``deploy.tls.server_names``); other Host headers get 444 and,
when the canonical name is a DNS name, a TLS handshake for any other name (or none) is refused. Sign-in attempts are
rate-limited per client address; the TLS 1.2 suites are ``TLS12_CIPHERS``. On a fleet's gateway the site also
balances the backends' Ollama on loopback (``upstream_arguments``).
"""

from __future__ import annotations

import ipaddress

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.present import directory, host_state, link, may_change, service_running, templated
from ollastack.deploy.release import host_release
from ollastack.deploy.tls import TLS_DIR, server_names
from ollastack.config import split_host_port
from ollastack.fleet import GATEWAY, group_listen
from ollastack.ollama_names import client_address
from ollastack.resources import template

SITE = "/etc/nginx/sites-available/ollastack.conf"
ENABLED = "/etc/nginx/sites-enabled/ollastack.conf"
DEFAULT_SITE = "/etc/nginx/sites-enabled/default"
ACME_ROOT = "/var/www/ollastack-acme"
#: What ``nginx`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"paths": [ACME_ROOT, SITE, ENABLED, DEFAULT_SITE], "services": ["nginx"], "packages": ["nginx"]}
#: Mozilla's "intermediate" TLS 1.2 suites without the three DHE-RSA ones (no dhparam to manage).
#: Which half a handshake can use follows the certificate's key: ECDSA for ollastack's own CA.
TLS12_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                 "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305")
#: ``systemctl reload nginx`` only signals the master, which reads the new configuration afterwards: until its
#: workers of the old one have stopped accepting (gone, or retitled "is shutting down") they still answer. So
#: every reload (the converge's, the certbot deploy hook's) waits for that, up to RELOAD_WAIT_S seconds: whoever
#: checks right after (ollastack up, a monitor) sees the new site and certificate.
RELOAD_WAIT_S = 30
# The workers' process titles, read from /proc with grep: minimal Debian images have no pgrep.
WORKERS = "grep -lsxz 'nginx: worker process' /proc/[0-9]*/cmdline | tr '\\n' ' '"
RELOAD = (f"workers_old=$({WORKERS}); systemctl reload nginx || exit 1; for i in $(seq {RELOAD_WAIT_S * 20}); do "
          f"workers_now=$({WORKERS}); stale=; "
          'for p in $workers_old; do case " $workers_now " in *" $p "*) stale=$p;; esac; done; '
          '[ -n "$workers_now" ] && [ -z "$stale" ] && exit 0; sleep 0.05; done; '
          f"echo 'nginx still served the old configuration {RELOAD_WAIT_S}s after its reload: journalctl -u nginx' >&2; "
          "exit 1")
#: POSTs under /api/v1/auths/ per client address: 20 at once, then one per 6 s.
AUTH_RATE, AUTH_BURST = "10r/m", 20


def is_address(name: str) -> bool:
    """Whether ``name`` is an IP address literal: ``is_address("10.0.0.1") is True``."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def site_arguments(data) -> dict:
    """Template values of the site for a host's names.

    The first name is canonical (redirects, upstream Host), as in ``orchestrate.host_url_name``.
    Handshakes without a known SNI are refused only when that name is a DNS name: clients never
    send an address as SNI, so a stack reached by its address must complete them (its catch-all
    then answers nothing for a Host it does not know).

    Example: ``site_arguments(host.data)["url_host"] == "chat.example.com"``
    """
    names = server_names(data)
    primary = names[0]
    return {"server_names": " ".join(names), "reject_handshake": not is_address(primary),
            "url_host": f"[{primary}]" if ":" in primary else primary, "ciphers": ":".join(TLS12_CIPHERS),
            "auth_rate": AUTH_RATE, "auth_burst": AUTH_BURST}


def upstream_arguments(data) -> dict:
    """Template values of a fleet gateway's Ollama upstream (``ollastack.fleet``); no upstream on other hosts.

    Every address is checked whole (an IP address and a port): they are written into nginx's configuration.

    Example: ``upstream_arguments(gateway.data)["upstreams"] == ["10.213.0.11:11434", "10.213.0.12:11434"]``
    """
    upstreams = list(data.ollastack_fleet_upstreams) if data.ollastack_fleet_role == GATEWAY else []
    for address in upstreams:
        try:
            split_host_port(address)
        except ValueError as exc:
            raise DeployError(f"{data.ollastack_name}: fleet backend {address!r}: {exc}") from None
    return {"upstreams": upstreams, "ollama_listen": client_address(data.ollastack_ollama_host),
            "max_fails": int(data.ollastack_fleet_max_fails), "fail_timeout": int(data.ollastack_fleet_fail_timeout),
            "connect_timeout": int(data.ollastack_fleet_connect_timeout), "groups": upstream_groups(data, upstreams)}


def upstream_groups(data, upstreams: list[str]) -> list[dict]:
    """The gateway's upstreams, one per placement group (``ollastack.fleet.placement_groups``): its nginx name,
    loopback address and backends. Without a placement, one group of every backend on ``ollama.host``.

    Example: ``upstream_groups(gateway.data, ups)[1] == {"name": "ollastack_ollama_2", "listen": "127.0.0.1:11435",
    "upstreams": ["10.213.0.12:11434"]}``
    """
    groups = [list(g) for g in data.ollastack_fleet_groups] or [upstreams]
    if strays := sorted({a for g in groups for a in g} - set(upstreams)):
        raise DeployError(f"{data.ollastack_name}: fleet groups name backends not in the upstream: {strays}")
    return [{"name": "ollastack_ollama" if i == 0 else f"ollastack_ollama_{i + 1}", "upstreams": group,
             "listen": group_listen(data.ollastack_ollama_host, i)} for i, group in enumerate(groups)]


@deploy("nginx", data_defaults=DEFAULTS)
def nginx(tls_changes=()):
    """Install and configure nginx; ``tls_changes`` are the operations that replaced certificate files."""
    data = host.data
    present = host_state(**READS)
    ensure_packages(["nginx"], "Install nginx", present)
    if not present.installed(["nginx"]):
        # The package install starts nginx and may enable Debian's default site; the stack's own paths are as read.
        present = present.without(paths=[DEFAULT_SITE], services=["nginx"])
    directory(present, name="ACME challenge directory", path=ACME_ROOT, mode="0755")
    site = templated(present, name="nginx site", src=str(template("nginx-site.conf.j2")), dest=SITE,
                     tls_dir=TLS_DIR, upstream_port=data.ollastack_openwebui_port, acme_root=ACME_ROOT,
                     http2_directive=host_release().nginx_http2_directive, **site_arguments(data),
                     **upstream_arguments(data))
    enabled = link(present, name="nginx site enabled", path=ENABLED, target=SITE)
    default = link(present, name="Debian's default site disabled", path=DEFAULT_SITE, present_=False)
    service_running(present, name="nginx running and enabled", service="nginx")
    if may_change(site, enabled, default, *tls_changes):
        # nginx -t first: a broken config must never reach the running server.
        server.shell(name="Check and reload nginx", commands=[f"nginx -t -q || exit 1; {RELOAD}"],
                     _if=any_changed(site, enabled, default, *tls_changes))
