"""Every control-machine module imports on its own, first, in a fresh interpreter.

A cycle between modules (``config`` checks model names with ``ollama_names``, which needs ``config``)
only breaks whoever imports the later one first: a plain pyinfra project, a stand-in, a script.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ollastack

# The deploy, inventory and template packages run against pyinfra's state when imported; the lab
# tests import them as pyinfra does.
SKIPPED = ("ollastack.deploy", "ollastack.inventories", "ollastack.templates")
MODULES = sorted(m.name for m in pkgutil.walk_packages(ollastack.__path__, "ollastack.")
                 if not m.name.startswith(SKIPPED))


def test_each_module_imports_first_and_alone():
    script = ("import subprocess, sys\n"
              "bad = []\n"
              "for name in sys.argv[1:]:\n"
              "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
              "    if r.returncode:\n"
              "        bad.append(f'{name}: {r.stderr.strip().splitlines()[-1]}')\n"
              "print('\\n'.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", script, *MODULES], capture_output=True, text=True, timeout=300)
    assert len(MODULES) > 30 and result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", result.stdout
