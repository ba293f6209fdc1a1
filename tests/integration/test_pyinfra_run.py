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


def test_entry_points_read_once_are_the_same(monkeypatch):
    from importlib import metadata

    from ollastack.pyinfra_run import read_entry_points_once

    original = metadata.entry_points
    # Restored after the test, whatever read_entry_points_once put in its place.
    monkeypatch.setattr(metadata, "entry_points", original)
    read_entry_points_once()
    assert metadata.entry_points is not original
    for group in ("console_scripts", "pyinfra.connectors", "gevent.plugins.monkey.will_patch_all", "none.such"):
        assert sorted(metadata.entry_points(group=group)) == sorted(original(group=group))
    assert [ep.name for ep in metadata.entry_points(group="pyinfra.connectors", name="ssh")] == ["ssh"]
