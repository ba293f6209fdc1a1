"""What pyinfra's change detection (``pyinfra --dry``, ``ollastack plan``) says of an operation gated by ``_if``.

pyinfra lists every ``_if`` operation that has commands as a "conditional change", so a converged host
would show its reloads, restarts and health waits as pending. ``settle_conditions``, run last in the
deploy, evaluates each condition of the current host as the execution would, taking an operation's
"changed" to mean "would change", and takes the operations whose condition would not hold out of the
detected changes. Only that report changes: the execution evaluates ``_if`` itself, and a ``-y``
converge detects no changes, so this does nothing there.

Example (deploy/site.py, last)::

    settle_conditions()
"""

from __future__ import annotations

from typing import Any, Callable

from pyinfra import host, state
from pyinfra.api.operation import OperationMeta

_DID_CHANGE = OperationMeta.did_change


def _holds(condition: Callable[[], Any], would_change: Callable[[OperationMeta], bool]) -> bool:
    """Whether ``condition`` would hold; an operation's own ``did_change`` (``_if=op.did_change``) was bound
    before the run, so it is answered here rather than by the patched method."""
    target = getattr(condition, "__self__", None)
    if isinstance(target, OperationMeta) and getattr(condition, "__func__", None) is _DID_CHANGE:
        return would_change(target)
    try:
        return bool(condition())
    except RuntimeError:
        # A condition asking for more than "changed" (an operation's output): it may hold.
        return True


def settle_conditions() -> None:
    """Keep a conditional operation of the current host among the detected changes only if its ``_if`` would hold."""
    if not state.should_check_for_changes():
        return
    current = host._get_module()  # type: ignore[attr-defined]
    ops = state.ops[current]
    would: dict[int, bool] = {}

    def would_change(meta: OperationMeta) -> bool:
        return would.get(id(meta), bool(meta._maybe_is_change))

    # Conditions call ``op.did_change()`` (``any_changed``, lambdas): answered by what the host would do.
    # Nothing here waits on the host, so no other host's deploy runs while the method is replaced.
    setattr(OperationMeta, "did_change", would_change)
    try:
        for op_hash in current.op_hash_order:
            data = ops.get(op_hash)
            if data is None:
                continue
            meta = data.operation_meta
            conditions = data.global_arguments.get("_if")
            if conditions and meta._maybe_is_change:
                listed = conditions if isinstance(conditions, list) else [conditions]
                meta._maybe_is_change = all(_holds(c, would_change) for c in listed)
            would[id(meta)] = bool(meta._maybe_is_change)
    finally:
        setattr(OperationMeta, "did_change", _DID_CHANGE)
