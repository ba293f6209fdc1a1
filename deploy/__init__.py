"""pyinfra deploys of ollastack: one component per module, composed by ``deploy/site.py``."""

from ollastack.deploy.op_order import use_fast_operation_order

# Before any of the deploys makes an operation: pyinfra's own way costs 5 ms an operation (deploy/op_order.py).
use_fast_operation_order()
