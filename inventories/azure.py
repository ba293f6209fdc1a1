"""pyinfra inventory of an Azure stack: the VM ``ollastack up`` recorded in the stack's state file.

    ollastack up                                       # creates the VM, issues its certificate
    pyinfra inventories/azure.py deploy/site.py         # the converge step again, by hand
"""

from ollastack.inventory import provider_inventory

azure = provider_inventory("azure")
