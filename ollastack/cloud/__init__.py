"""Cloud providers: each module creates and destroys one stack's resources.

A cloud module exposes these functions, and nothing else is called by the rest of ollastack (through
its provider in ``ollastack.providers``)::

    create(stack: Stack, state: StackState, progress: Progress) -> list[dict | Host]
        Create (or finish creating) every resource, recording each in ``state`` as soon as it
        exists; return the hosts (``Host`` or its record {"name", "address", "user", "tls_names"}),
        also stored with ``state.set_hosts``. Idempotent: a second call creates nothing new.
    destroy(stack: Stack, state: StackState, progress: Progress) -> list[str]
        Delete what ``state`` records and what the provider finds by the stack's tag (only
        resources tagged as this stack's), in dependency order, tolerating resources that are
        already gone; return what was removed. Works without a state file.
    fleet_names(stack: Stack) -> list[str]
        The names ``create`` gives a fleet's gateway and then each backend.
    remove_hosts(stack: Stack, state: StackState, names: list[str], progress: Progress) -> list[str]
        Delete only these backends' resources (a shrunk fleet's), keeping their records until each is gone.
    warnings(stack: Stack) -> list[str]   (optional)
        Lines to show before anything is created.

``Progress`` is the one the lab uses too (``ollastack.progress``).

Errors meant for the user are raised as ``CloudError`` with one line saying what to do next.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ollastack.progress import Progress

__all__ = ["CloudError", "Progress", "provider"]


class CloudError(Exception):
    """A cloud failure explained in one line (code, cause, what to do next)."""


def provider(name: str) -> ModuleType:
    """The module for ``stack.provider`` (``azure`` or ``alibaba``)."""
    if name not in ("azure", "alibaba"):
        raise ValueError(f"{name!r} is not a cloud provider")
    return importlib.import_module(f"ollastack.cloud.{name}")
