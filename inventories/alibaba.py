"""pyinfra inventory of an Alibaba Cloud ECS stack: the instance ``ollastack up`` recorded in the state file.

    ollastack up                                       # creates the instance, issues its certificate
    pyinfra inventories/alibaba.py deploy/site.py       # the converge step again, by hand
"""

from ollastack.inventory import provider_inventory

alibaba = provider_inventory("alibaba")
