"""The one way a converge stops: a plan-time check that raises ``DeployError`` before any operation runs.

A check is a function of the current host decorated with ``plan_check``. ``deploy/checks.py`` runs
every component's checks first, so ``deploy/site.py`` stops before its first operation; a component
called on its own (from another pyinfra project) still runs its own checks before its operations.
Each check runs once per host and run; what it returns (a fact it read) is handed to later callers.

Example::

    @plan_check
    def refuse_lockout() -> None:
        if problem := lockout_problem(...):
            raise DeployError(f"{host.name}: {problem}")
"""

from __future__ import annotations

import functools
from typing import Any, Callable
from weakref import WeakKeyDictionary

from pyinfra import host

# Per pyinfra host object: the checks already run and what they returned.
_done: WeakKeyDictionary = WeakKeyDictionary()


def plan_check(check: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``check`` once for the current host; a later call returns its first result without asking the host again."""
    @functools.wraps(check)
    def once() -> Any:
        # The host object itself, not the context proxy: a later pyinfra state (another run in the same
        # process) has new host objects and so runs its checks afresh.
        current = host._get_module()  # type: ignore[attr-defined]
        results = _done.setdefault(current, {})
        if check not in results:
            results[check] = check()
        return results[check]
    return once
