"""pyinfra inventory of existing hosts listed in the stack description (``provider = "static"``).

    pyinfra inventories/static.py deploy/site.py
"""

from ollastack.config import load_stack
from ollastack.inventory import stack_inventory

_stack = load_stack()
static = stack_inventory(hosts=[{"name": h, "address": h, "user": _stack.static.user} for h in _stack.static.hosts])
