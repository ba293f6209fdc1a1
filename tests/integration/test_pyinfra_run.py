"""ollastack runs pyinfra as ``python -m ollastack.pyinfra_run``: gevent's patches are in place before paramiko
loads, so a ProxyCommand (a fleet backend reached through its gateway) waits without blocking the other
greenlets; under ``python -m pyinfra`` paramiko keeps the blocking ``select`` and such a converge hangs."""

from __future__ import annotations

import subprocess
import sys

INVENTORY = ("import gevent.select, paramiko.proxy\n"
             "print('proxy select patched:', paramiko.proxy.select is gevent.select.select)\n"
             "hosts = ['@local']\n")


def proxy_select_patched(tmp_path, module: str) -> bool:
    inventory = tmp_path / "inventory.py"
    inventory.write_text(INVENTORY)
    result = subprocess.run([sys.executable, "-m", module, str(inventory), "debug-inventory"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("proxy select patched:")]
    return line.endswith("True")


def test_pyinfra_run_patches_before_paramiko_loads_where_python_m_pyinfra_does_not(tmp_path):
    assert proxy_select_patched(tmp_path, "ollastack.pyinfra_run")
    assert not proxy_select_patched(tmp_path, "pyinfra")

