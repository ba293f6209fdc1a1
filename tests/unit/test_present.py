"""deploy/present.py without a host: HostState's command run here, and what counts as already there."""

from __future__ import annotations

import hashlib
import os
import subprocess

from ollastack.deploy.present import NOTHING, HostState, Present, unit_name


def state_of(*paths: str, packages: tuple[str, ...] = ()) -> dict:
    fact = HostState()
    command = fact.command(paths=list(paths), packages=list(packages))
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    return fact.process(output.splitlines())


def test_host_state_reads_files_directories_links_and_leaves_out_what_is_missing(tmp_path):
    (tmp_path / "dir with space").mkdir(mode=0o750)
    os.chmod(tmp_path / "dir with space", 0o750)
    conf = tmp_path / "dir with space" / "a.conf"
    conf.write_text("x = 1\n")
    os.chmod(conf, 0o600)
    (tmp_path / "link").symlink_to(conf)
    found = state_of(str(conf), str(tmp_path / "dir with space"), str(tmp_path / "link"), str(tmp_path / "none"))
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    assert found["paths"] == {
        str(conf): {"kind": "file", "mode": "600", "user": user, "group": group,
                    "sha1": hashlib.sha1(b"x = 1\n").hexdigest()},
        str(tmp_path / "dir with space"): {"kind": "directory", "mode": "750", "user": user, "group": group},
        str(tmp_path / "link"): {"kind": "link", "target": str(conf)},
    }
    assert found["services"] == {}


def test_packages_count_only_when_installed():
    found = HostState().process(["package\tii \tnginx", "package\trc \thtop", "package\thi \tzstd"])
    assert found["packages"] == ["nginx", "zstd"]


def test_systemctl_show_blocks_become_services():
    lines = ["unit\tId=nginx.service", "unit\tSubState=running", "unit\tUnitFileState=disabled", "unit\t",
             "unit\tId=ollama.service", "unit\tUnitFileState=enabled", "unit\tSubState=dead"]
    assert HostState().process(lines)["services"] == {"nginx.service": ("running", "disabled"),
                                                     "ollama.service": ("dead", "enabled")}


def test_a_file_matches_only_with_its_content_mode_and_owner():
    present = Present({"paths": {"/etc/x": {"kind": "file", "mode": "644", "user": "root", "group": "root",
                                            "sha1": hashlib.sha1(b"text").hexdigest()}},
                       "services": {}, "packages": []})
    assert present.file("/etc/x", b"text", mode="0644", user="root")
    assert not present.file("/etc/x", b"text\n", mode="0644")
    assert not present.file("/etc/x", b"text", mode="0600")
    assert not present.file("/etc/x", b"text", group="ollama")
    assert not present.directory("/etc/x")
    assert not present.absent("/etc/x") and present.absent("/etc/y")


def test_nothing_matches_nothing():
    assert not NOTHING.file("/etc/x", b"")
    assert not NOTHING.directory("/etc")
    assert not NOTHING.link("/etc/nginx/sites-enabled/ollastack.conf", "/etc/nginx/sites-available/ollastack.conf")
    assert not NOTHING.installed(["nginx"])
    # Debian's nginx enables its default site on install: what was not read ahead is not absent either.
    assert not NOTHING.absent("/etc/nginx/sites-enabled/default")


def test_unit_name():
    assert unit_name("nginx") == "nginx.service"
    assert unit_name("podman-auto-update.timer") == "podman-auto-update.timer"
