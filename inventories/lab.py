"""pyinfra inventory of the running lab hosts of the stack (``$OLLASTACK_CONFIG`` or ./stack.toml).

    ollastack lab up && pyinfra -y inventories/lab.py deploy/site.py
"""

from ollastack import lab as _lab
from ollastack.config import load_stack
from ollastack.state import hold_lock_until_exit

_stack = load_stack()
hold_lock_until_exit(_stack.stack.name)
lab = _lab.inventory(_stack)
