"""pyinfra inventory of existing hosts listed in the stack description (``provider = "static"``).

    pyinfra inventories/static.py deploy/site.py
"""

from ollastack.inventory import provider_inventory

static = provider_inventory("static")
