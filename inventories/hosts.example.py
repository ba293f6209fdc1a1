"""A static inventory: existing Debian hosts, settings from ./stack.toml (or $OLLASTACK_CONFIG).

    cp inventories/hosts.example.py inventories/hosts.py   # edit the addresses
    python -m ollastack.certs inventories/hosts.py && pyinfra -y inventories/hosts.py deploy/site.py
"""

from ollastack.host import Host
from ollastack.inventory import stack_inventory

servers = stack_inventory([
    Host("chat-1", "192.0.2.10", user="debian"),
])
