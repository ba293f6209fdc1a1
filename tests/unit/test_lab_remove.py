"""``lab down`` says which host directory it could not remove instead of leaving it behind unnoticed.

The refusal is the kernel's own: an immutable file (``chattr +i``) as root, a read-only directory otherwise.
The lab's network and cgroups are the machine's, shared by every lab test: this test keeps away from them.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ollastack import lab


def unremovable(path: Path) -> Callable[[], None]:
    """Make the kernel refuse to delete ``path``; returns what undoes that."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
            pytest.skip("this file system has no immutable attribute (chattr +i)")
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.parent.chmod(0o500)
    return lambda: path.parent.chmod(0o755)


def make_host(lab_dir: Path, name: str, address: str) -> Path:
    host_dir = lab_dir / "hosts" / name
    (host_dir / "rootfs" / "etc").mkdir(parents=True)
    (host_dir / "rootfs" / "etc" / "hostname").write_text(f"{name}\n")
    (host_dir / "host.json").write_text(json.dumps({"name": name, "stack": "rmtest", "address": address,
                                                     "user": "root", "host_key": "ssh-ed25519 AAAA", "pid": None}))
    return host_dir


@pytest.fixture
def lab_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(lab.LAB_ENV, str(tmp_path))
    monkeypatch.setattr(lab, "remove_network", lambda: [])
    monkeypatch.setattr(lab, "_cgroup_roots", lambda: [])
    return tmp_path


def test_a_host_directory_that_stays_is_named(lab_dir):
    stuck_dir = make_host(lab_dir, "rmtest-1", "192.0.2.71")
    gone_dir = make_host(lab_dir, "rmtest-2", "192.0.2.72")
    stuck = stuck_dir / "rootfs" / "etc" / "hostname"
    undo = unremovable(stuck)
    lines: list[str] = []
    try:
        with pytest.raises(lab.LabError) as error:
            lab._remove("rmtest", lines.append)
    finally:
        undo()
    refusal = "Operation not permitted" if os.geteuid() == 0 else "Permission denied"
    left = f"{stuck_dir} ({stuck} stayed: {refusal})"
    assert str(error.value) == (f"could not remove {left}: delete it as root (`lsattr -R` and `findmnt -R` show what "
                                "holds it), then run `ollastack lab down` again")
    assert stuck.exists() and not gone_dir.exists()
    assert lines == [f"rmtest-1: stopped, but not removed: {left}", "rmtest-2: stopped and removed"]


def test_removable_hosts_go_without_a_word_of_trouble(lab_dir):
    make_host(lab_dir, "rmtest-1", "192.0.2.71")
    lines: list[str] = []
    assert lab._remove("rmtest", lines.append) == ["host rmtest-1 (192.0.2.71)"]
    assert lines == ["rmtest-1: stopped and removed"] and not (lab_dir / "hosts" / "rmtest-1").exists()
