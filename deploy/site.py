"""The whole stack on every host: ``pyinfra inventories/lab.py deploy/site.py``.

Order matters: the checks stop the converge before any change when it could not succeed, the firewall
closes everything but 22/80/443 before any of the stack's services listens (``base`` installs every package
of the site in one apt run before it: of those, only Debian's nginx starts at once, on port 80 with its
default site), TLS material exists before nginx loads it, nginx runs before certbot asks for a Let's
Encrypt certificate, and Ollama's models are pulled last, once the rest of the site is up.
"""

from pyinfra import host

from ollastack.deploy.backup import backup_timer
from ollastack.deploy.base import base
from ollastack.deploy.certbot import letsencrypt
from ollastack.deploy.checks import checks
from ollastack.deploy.connection import tcp_no_delay
from ollastack.deploy.conditions import settle_conditions
from ollastack.deploy.firewall import firewall
from ollastack.deploy.nginx import nginx
from ollastack.deploy.nvidia import nvidia
from ollastack.deploy.ollama import ollama, ollama_models
from ollastack.deploy.openwebui import openwebui
from ollastack.deploy.reads import read_host
from ollastack.deploy.tls import tls
from ollastack.fleet import BACKEND, GATEWAY

# A fleet's gateway runs no Ollama, its backends only Ollama (ollastack.fleet); a single host runs all.
# Read outside any deploy, so without the deploys' defaults: a single host's inventory sets no role.
role = host.data.get("ollastack_fleet_role", "")
# Before the first remote command: each one would otherwise wait up to 40 ms for a delayed ACK.
tcp_no_delay()
# One remote command for what the components below read of the host (a no-op converge's main cost).
packages = read_host(role)
checks()
base(packages)
firewall()
if role != GATEWAY:
    # Before Ollama: it finds the GPU only if the driver is up when it starts.
    gpu_changes = nvidia()
    ollama_restart = ollama(models=False)
if role != BACKEND:
    openwebui()
    backup_timer()
    tls_changes = tls()
    nginx(tls_changes=tls_changes)
    # After nginx: certbot's HTTP-01 challenge is answered by the running nginx.
    letsencrypt()
if role != GATEWAY:
    # Ollama starts while the components above are configured; the site answers before a long model download.
    ollama_models(ollama_restart, gpu_changes=gpu_changes)
# Last: what `pyinfra --dry` and `ollastack plan` report of the steps gated on an earlier change.
settle_conditions()
