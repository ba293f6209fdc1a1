"""``python -m ollastack.pyinfra_run ARGS``: pyinfra's CLI, with gevent's patches in place before paramiko loads.

``python -m pyinfra`` imports the ``pyinfra`` package, and paramiko with it, before the CLI patches the
standard library for gevent: paramiko's ProxyCommand then keeps the blocking ``select``, which stops
every other greenlet, and a host reached through a jump host (a cloud fleet's backend) hangs at
"Connecting to hosts". The ``pyinfra`` script imports the CLI first, as this does. Before it, the installed
distributions' entry points are made to be read once (``read_entry_points_once``): a faster start for every run.

Example: ``subprocess.run([sys.executable, "-m", "ollastack.pyinfra_run", "-y", "inventories/lab.py", "deploy/site.py"])``
"""

from __future__ import annotations

import functools
from importlib import metadata


def read_entry_points_once() -> None:
    """Make ``importlib.metadata.entry_points`` read the installed distributions once for this process.

    gevent's ``patch_all`` asks for the plugins of 25 events, one by one, and each question reads every
    installed distribution's entry points again: 0.2 s of every pyinfra run (its floor included) in a virtual
    environment of 90 distributions. No distribution is installed into this Python while pyinfra runs.

    Example: ``read_entry_points_once()``, then ``metadata.entry_points(group="console_scripts")`` reads none.
    """
    every = functools.cache(metadata.entry_points)

    def entry_points(**params):
        return every().select(**params) if params else every()

    metadata.entry_points = entry_points


if __name__ == "__main__":
    read_entry_points_once()
    from pyinfra_cli.main import main

    main()
