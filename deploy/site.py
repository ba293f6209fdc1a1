"""The whole stack on every host: ``pyinfra inventories/lab.py deploy/site.py``.

Order matters: the firewall closes everything but 22/80/443 before any service listens, TLS
material exists before nginx loads it.
"""

from deploy.base import base
from deploy.firewall import firewall
from deploy.nginx import nginx
from deploy.ollama import ollama
from deploy.tls import tls

base()
firewall()
ollama()
tls_changes = tls()
nginx(tls_changes=tls_changes)
