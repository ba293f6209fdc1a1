"""pyinfra inventory of existing hosts listed in the stack description (``provider = "static"``).

    python -m ollastack.certs inventories/static.py && pyinfra inventories/static.py deploy/site.py
"""

from ollastack.inventory import provider_inventory

static = provider_inventory("static")
