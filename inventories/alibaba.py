"""pyinfra inventory for a stack on Alibaba Cloud ECS: the hosts ``ollastack up`` recorded.

Reads the stack description (``$OLLASTACK_CONFIG`` or ./stack.toml) and the stack's state file, so
the converge step can be run as plain pyinfra after ``ollastack up`` created the instance::

    pyinfra inventories/alibaba.py deploy/site.py
"""

from ollastack.config import load_stack
from ollastack.inventory import stack_inventory
from ollastack.state import StackState

alibaba = stack_inventory(hosts=StackState.load(load_stack().stack.name).hosts)
