"""pyinfra's order of operations from the call stack, without reading source files.

In CLI mode pyinfra places each operation in the run's order by the line numbers of the deploy's frames on
the call stack (``pyinfra.api.util.get_operation_order_from_stack``). It gets them from
``inspect.stack()``, which also reads every frame's source line and code positions: about 5 ms per
operation on the lab, 0.15 s of a first converge. The frames' own file names and line numbers give the
same list; ``tests/unit/test_op_order.py`` compares the two on the pinned pyinfra.

Example (once, before the first operation; ``ollastack.deploy`` does it on import)::

    use_fast_operation_order()
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import pyinfra
from pyinfra.api import util

if TYPE_CHECKING:
    from types import FrameType

    from pyinfra.api.state import State


def operation_order(state: State) -> list[int]:
    """The line numbers that order the operation being made, as ``get_operation_order_from_stack`` gives.

    Example: ``[3, 27, 12]`` for an operation made at line 12 of a function called at line 27 of the
    deploy file that is pyinfra's third, in CLI mode.
    """
    frames = []
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    if state.current_deploy_filename:
        start = next((i for i, frame in enumerate(frames) if frame.f_code.co_filename == state.current_deploy_filename),
                     len(frames))
        # pyinfra's own walk ends on its own frame when the deploy file is not on the stack: no line counts.
        frames = frames[start:]
    order = [state.current_op_file_number] if pyinfra.is_cli else []
    order.extend(frame.f_lineno for frame in frames
                 if not frame.f_code.co_filename.startswith(util.PYINFRA_INSTALL_DIR))
    return order


def use_fast_operation_order() -> None:
    """Make pyinfra order operations with :func:`operation_order`.

    Example: ``use_fast_operation_order()``; pyinfra's ``@operation`` decorator then uses it.
    """
    # The decorator's module: ``pyinfra.api.operation`` is also the name of the decorator itself.
    setattr(sys.modules["pyinfra.api.operation"], "get_operation_order_from_stack", operation_order)
