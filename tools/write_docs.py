"""Regenerate the README settings table and stack.example.toml from the stack model (``make docs``).

A developer script: it writes into the checkout it is given (default: the current directory), never
next to an installed package.

Example: ``python tools/write_docs.py .``
"""

from __future__ import annotations

import sys
from pathlib import Path

from ollastack.cli import example_toml, settings_markdown


def write_docs(root: Path) -> None:
    readme = (root / "README.md").read_text()
    head, rest = readme.split("<!-- settings:start -->\n", 1)
    _, tail = rest.split("<!-- settings:end -->", 1)
    (root / "README.md").write_text(f"{head}<!-- settings:start -->\n{settings_markdown()}\n<!-- settings:end -->{tail}")
    (root / "stack.example.toml").write_text(example_toml())


if __name__ == "__main__":
    write_docs(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
