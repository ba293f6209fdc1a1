"""Cloud providers: each module creates and destroys one stack's resources.

A provider module exposes two functions, and nothing else is called by the rest of ollastack::

    create(stack: Stack, state: StackState, progress: Progress) -> list[dict]
        Create (or finish creating) every resource, recording each in ``state`` as soon as it
        exists; return the hosts as dicts {"name", "address", "user", "tls_names"} (also stored
        with ``state.set_hosts``). Idempotent: a second call creates nothing new.
    destroy(stack: Stack, state: StackState, progress: Progress) -> list[str]
        Delete what ``state`` records and what the provider finds by the stack's tag (only
        resources tagged as this stack's), in dependency order, tolerating resources that are
        already gone; return what was removed. Works without a state file.

Errors meant for the user are raised as ``CloudError`` with one line saying what to do next.
"""

from __future__ import annotations

import importlib
import sys
import time
from types import ModuleType


class CloudError(Exception):
    """A cloud failure explained in one line (code, cause, what to do next)."""


class Progress:
    """Prints one line per step with the elapsed time; to stderr so ``--json`` stdout stays clean."""

    def __init__(self, prefix: str = "", stream=None):
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        # One write per line: steps running in parallel must not interleave within a line.
        self.stream.write(f"[{elapsed:6.1f}s] {self.prefix}{message}\n")
        self.stream.flush()


def provider(name: str) -> ModuleType:
    """The module for ``stack.provider`` (``azure`` or ``alibaba``)."""
    if name not in ("azure", "alibaba"):
        raise ValueError(f"{name!r} is not a cloud provider")
    return importlib.import_module(f"ollastack.cloud.{name}")
