"""pyinfra inventory of the stack's running lab hosts (``$OLLASTACK_CONFIG`` or ./stack.toml).

    ollastack lab up && pyinfra -y inventories/lab.py deploy/site.py   # lab up issues the certificates
"""

from ollastack.inventory import provider_inventory

lab = provider_inventory("lab")
