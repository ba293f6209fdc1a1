"""pyinfra inventory of the stack's running lab hosts (``$OLLASTACK_CONFIG`` or ./stack.toml).

    ollastack lab up && pyinfra -y inventories/lab.py deploy/site.py   # lab up issues the certificates
"""

from ollastack.fleet import groups
from ollastack.inventory import provider_inventory

lab = provider_inventory("lab")
# A fleet's roles (fleet.backends > 0); a single host is in both.
gateway, ollama = groups(lab)
