"""pyinfra inventory of an Alibaba Cloud ECS stack: the instance ``ollastack up`` recorded in the state file.

    pyinfra inventories/alibaba.py deploy/site.py    # after `ollastack up` made the instance and its certificate
"""

from ollastack.fleet import groups
from ollastack.inventory import provider_inventory

alibaba = provider_inventory("alibaba")
# A fleet's roles (fleet.backends > 0); a single host is in both.
gateway, ollama = groups(alibaba)
