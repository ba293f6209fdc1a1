"""pyinfra inventory of an Azure stack: the VM ``ollastack up`` recorded in the stack's state file.

    pyinfra inventories/azure.py deploy/site.py    # after `ollastack up` made the VM and its certificate
"""

from ollastack.fleet import groups
from ollastack.inventory import provider_inventory

azure = provider_inventory("azure")
# A fleet's roles (fleet.backends > 0); a single host is in both.
gateway, ollama = groups(azure)
