"""``python -m ollastack.pyinfra_run ARGS``: pyinfra's CLI, with gevent's patches in place before paramiko loads.

``python -m pyinfra`` imports the ``pyinfra`` package, and paramiko with it, before the CLI patches the
standard library for gevent: paramiko's ProxyCommand then keeps the blocking ``select``, which stops
every other greenlet, and a host reached through a jump host (a cloud fleet's backend) hangs at
"Connecting to hosts". The ``pyinfra`` script imports the CLI first, as this does.

Example: ``subprocess.run([sys.executable, "-m", "ollastack.pyinfra_run", "-y", "inventories/lab.py", "deploy/site.py"])``
"""

from pyinfra_cli.main import main

if __name__ == "__main__":
    main()
