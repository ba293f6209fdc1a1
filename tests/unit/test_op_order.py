"""deploy/op_order.py against pyinfra's own ``get_operation_order_from_stack``: the same line numbers from the
same stack, whether the deploy file is on it or not, in CLI mode or not, through multi-line calls."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pyinfra
import pytest
from pyinfra.api import util

from ollastack.deploy import op_order

HERE = __file__


def both(state) -> tuple[list[int], list[int]]:
    """pyinfra's order and ours, from the same multi-line call."""
    theirs, ours = (
        order(
            state,
        )
        for order in (util.get_operation_order_from_stack, op_order.operation_order)
    )
    return theirs, ours


def nested(state, depth: int) -> tuple[list[int], list[int]]:
    if depth:
        return nested(
            state,
            depth - 1,
        )
    return both(state)


@pytest.mark.parametrize("cli", [True, False])
@pytest.mark.parametrize("deploy", [HERE, None, "/nowhere/deploy.py"])
def test_same_order_as_pyinfra(monkeypatch, cli, deploy):
    monkeypatch.setattr(pyinfra, "is_cli", cli)
    state = SimpleNamespace(current_deploy_filename=deploy, current_op_file_number=3)
    theirs, ours = nested(state, 3)
    assert ours == theirs
    if deploy == "/nowhere/deploy.py":
        assert ours == ([3] if cli else [])
    else:
        # Each of nested's four frames and both's, after the test's own.
        assert len(ours) >= 5 + cli


def test_operations_use_it(monkeypatch):
    """Importing ollastack.deploy put it in place; and use_fast_operation_order puts it back over pyinfra's own."""
    module = sys.modules["pyinfra.api.operation"]
    assert module.get_operation_order_from_stack is op_order.operation_order
    monkeypatch.setattr(module, "get_operation_order_from_stack", util.get_operation_order_from_stack)
    op_order.use_fast_operation_order()
    assert module.get_operation_order_from_stack is op_order.operation_order
