"""nginx: HTTP->HTTPS redirect and the TLS reverse proxy in front of the web UI."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from deploy.base import ensure_packages
from deploy.defaults import DEFAULTS
from deploy.release import host_release
from deploy.tls import TLS_DIR, server_names
from ollastack import PROJECT_ROOT

SITE = "/etc/nginx/sites-available/ollastack.conf"
ACME_ROOT = "/var/www/ollastack-acme"


@deploy("nginx", data_defaults=DEFAULTS)
def nginx(tls_changes=()):
    """Install and configure nginx; ``tls_changes`` are the operations that replaced certificate files."""
    data = host.data
    ensure_packages(["nginx"], "Install nginx")
    files.directory(name="ACME challenge directory", path=ACME_ROOT, mode="0755")
    site = files.template(name="nginx site", src=str(PROJECT_ROOT / "templates/nginx-site.conf.j2"), dest=SITE,
                          server_names=" ".join(server_names(data)), tls_dir=TLS_DIR,
                          upstream_port=data.openwebui_port, acme_root=ACME_ROOT,
                          http2_directive=host_release().nginx_http2_directive)
    enabled = files.link(name="nginx site enabled", path="/etc/nginx/sites-enabled/ollastack.conf", target=SITE)
    default = files.link(name="Debian's default site disabled", path="/etc/nginx/sites-enabled/default",
                         present=False)
    systemd.service(name="nginx running and enabled", service="nginx", running=True, enabled=True)
    # nginx -t first: a broken config must never reach the running server.
    server.shell(name="Check and reload nginx", commands=["nginx -t -q", "systemctl reload nginx"],
                 _if=any_changed(site, enabled, default, *tls_changes))
