"""``Progress``: how every long step (lab, cloud, converge) reports what it is doing.

A function that takes a ``progress`` calls it with one line per step. ``Progress`` is the printer the
CLI hands in; any callable taking one string does the same job (tests pass ``list.append``).

Example::

    progress = Progress("lab: ")
    progress("demo-1: booting at 10.213.0.10")   # stderr: "[   0.4s] lab: demo-1: booting at 10.213.0.10"
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints one line per step with the elapsed time; to stderr so ``--json`` stdout stays clean."""

    def __init__(self, prefix: str = "", stream: TextIO | None = None):
        self.prefix = prefix
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        # One write per line: steps running in parallel must not interleave within a line.
        self.stream.write(f"[{elapsed:6.1f}s] {self.prefix}{message}\n")
        self.stream.flush()
