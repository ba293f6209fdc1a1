"""The whole stack on every host: ``pyinfra inventories/lab.py deploy/site.py``.

Order matters: the firewall closes everything but 22/80/443 before any service listens, TLS
material exists before nginx loads it, and nginx runs before certbot asks for a Let's Encrypt certificate.
"""

from deploy.base import base
from deploy.certbot import letsencrypt
from deploy.firewall import firewall
from deploy.nginx import nginx
from deploy.ollama import ollama
from deploy.openwebui import openwebui
from deploy.tls import tls

base()
firewall()
ollama()
openwebui()
tls_changes = tls()
nginx(tls_changes=tls_changes)
# After nginx: certbot's HTTP-01 challenge is answered by the running nginx.
letsencrypt()
