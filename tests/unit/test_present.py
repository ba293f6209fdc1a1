"""deploy/present.py without a host: HostState's command run here, and what counts as already there."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

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


def test_a_file_whose_name_sha1sum_escapes_has_no_checksum_and_a_path_find_would_parse_is_refused(tmp_path):
    odd = tmp_path / "back\\slash"
    odd.write_text("x")
    os.chmod(odd, 0o640)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True).stdout.strip()
    assert state_of(str(odd))["paths"][str(odd)] == {"kind": "file", "mode": "640", "user": user, "group": group}
    for path in ("-delete", "(", "relative/x"):
        with pytest.raises(ValueError, match="absolute paths only"):
            HostState().command(paths=["/etc", path])


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
                       "services": {}, "packages": []}, asked={"paths": ["/etc/x", "/etc/y"]})
    assert present.file("/etc/x", b"text", mode="0644", user="root")
    assert not present.file("/etc/x", b"text\n", mode="0644")
    assert not present.file("/etc/x", b"text", mode="0600")
    assert not present.file("/etc/x", b"text", group="ollama")
    assert not present.directory("/etc/x")
    assert not present.absent("/etc/x") and present.absent("/etc/y")
    # A path not read is not absent either.
    assert not present.absent("/etc/z")


def test_a_read_without_some_paths_and_services_no_longer_answers_for_them():
    present = Present({"paths": {}, "services": {"nginx.service": ("dead", "disabled")}, "packages": []},
                      asked={"paths": ["/etc/a", "/etc/b"], "services": ["nginx", "ollama"]})
    after = present.without(paths=["/etc/b"], services=["nginx.service"])
    assert after.absent("/etc/a") and not after.absent("/etc/b") and present.absent("/etc/b")
    assert not after.read("services", "nginx") and after.read("services", "ollama")
    assert not after.not_enabled("nginx") and present.not_enabled("nginx")


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


def test_texts_users_and_exists_are_read_as_the_host_has_them(tmp_path):
    (tmp_path / "subuid").write_text("alice:100000:65536\ncontainers:1:2\tx\n")
    (tmp_path / "empty").write_text("\n")
    fact = HostState()
    command = fact.command(texts=[str(tmp_path / "subuid"), str(tmp_path / "empty"), str(tmp_path / "none")],
                           users=["root", "no-such-user"], exists=[str(tmp_path / "empty"), str(tmp_path / "none")])
    found = fact.process(subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout.splitlines())
    # As FileText reads them: an empty file counts as none.
    assert found["texts"] == {str(tmp_path / "subuid"): "alice:100000:65536\ncontainers:1:2\tx"}
    assert found["users"] == {"root": {"home": "/root", "shell": found["users"]["root"]["shell"]}}
    assert found["exists"] == [str(tmp_path / "empty")]


def test_prefetch_answers_what_it_covers_and_reads_the_rest_from_the_host():
    """One command for what the components ask; a call asking for more still reads the host itself."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.context import ctx_host, ctx_state

    from ollastack.deploy.present import host_state, prefetch

    inventory = Inventory(([("@fake/host", {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": {
        "find -P /etc/a /etc/b ": ["path\tf\t/etc/a\t644 root root\t", f"{'a' * 40}  /etc/a", "package\tii \tnginx"],
        "find -P /etc/a /etc/c ": ["path\td\t/etc/c\t755 root root\t"]}})], {}))
    state = State(inventory, Config())
    connect_all(state)
    fake = inventory.get_host("@fake/host")
    with ctx_state.use(state), ctx_host.use(fake):
        prefetch({"paths": ["/etc/a"], "packages": ["nginx"]}, {"paths": ["/etc/b", "/etc/a"]})
        assert len(fake.connector.executed_commands) == 1
        assert host_state(paths=["/etc/b"], packages=["nginx"]).installed(["nginx"])
        assert host_state(paths=["/etc/a"]).file_sha1("/etc/a", "a" * 40, mode="0644")
        assert len(fake.connector.executed_commands) == 1
        assert host_state(paths=["/etc/a", "/etc/c"]).directory("/etc/c")
        assert len(fake.connector.executed_commands) == 2


def test_probes_run_in_the_same_command_each_with_its_output_and_exit_status():
    fact = HostState()
    command = fact.command(paths=["/"], probes=['printf "a\\tb\\n\\nc\\n"', "echo 'it''s'; exit 3", "true",
                                                "printf '%s\\n' '  back\\slash  '"])
    output = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    found = fact.process(output.splitlines())
    assert found["paths"]["/"]["kind"] == "directory"
    assert found["probes"] == {0: {"lines": ["a\tb", "", "c"], "status": 0}, 1: {"lines": ["its"], "status": 3},
                               2: {"lines": [], "status": 0}, 3: {"lines": ["  back\\slash  "], "status": 0}}


def test_prefetched_facts_are_answered_from_the_one_command_and_a_failed_probe_asks_the_host():
    """DebianRelease answered by prefetch's command; NftTable's probe failed there, so fact() runs it itself."""
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all
    from pyinfra.context import ctx_host, ctx_state

    from ollastack.deploy.facts import DebianRelease, NftTable
    from ollastack.deploy.present import fact, prefetch

    inventory = Inventory(([("@fake/host", {"fake_delay": 0, "fake_delay_jitter": 0, "fake_responses": {
        "find -P /etc/a ": ["probe\t0\tdebian 13", "probed\t0\t0", "probe\t1\tgarbage", "probed\t1\t2"],
        "nft --stateless --numeric-protocol list table inet ollastack 2>/dev/null || true": ["table inet ollastack {", "}"]}})], {}))
    state = State(inventory, Config())
    connect_all(state)
    fake = inventory.get_host("@fake/host")
    with ctx_state.use(state), ctx_host.use(fake):
        prefetch({"paths": ["/etc/a"]}, facts=[(DebianRelease, {}), (NftTable, {"table": "inet ollastack"})])
        assert len(fake.connector.executed_commands) == 1
        assert ". /etc/os-release" in fake.connector.executed_commands[0]
        assert fact(DebianRelease) == "debian13"
        assert len(fake.connector.executed_commands) == 1
        assert fact(NftTable, table="inet ollastack") == "table inet ollastack {\n}"
        assert len(fake.connector.executed_commands) == 2
