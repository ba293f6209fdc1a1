"""pyinfra inventory of an Azure stack: the VM that ``ollastack up`` recorded in the state file.

Reads the stack description (``$OLLASTACK_CONFIG`` or ./stack.toml) and its state file
(``.ollastack/state/<name>.json`` beside the stack file); host keys are remembered in
``<name>.known_hosts`` beside it, trusted on first connection.

Example::

    pyinfra inventories/azure.py deploy/site.py
"""

from ollastack.config import load_stack
from ollastack.inventory import stack_inventory
from ollastack.state import StackState, state_dir

_name = load_stack().stack.name
azure = stack_inventory(hosts=StackState.load(_name).hosts, known_hosts=state_dir() / f"{_name}.known_hosts")
