"""The upgrade guard without hosts: when an upgrade is seen, the order of its steps, the rollback, the messages.

Only the host side is faked (what a host has installed, the backup and restore over SSH, the converge and
the ready check); the decisions, the rollback stack file and the messages are the real ones.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tomllib

import pytest

from ollastack import backup, upgrade
from ollastack.config import parse_stack
from ollastack.host import Host
from tests.unit.test_backup import host_script

HOSTS = [Host("demo-1", "10.213.0.10"), Host("demo-2", "10.213.0.11")]
ACCESS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def keys(keypair):
    ACCESS.update(ssh_public_key=str(keypair[0]), ssh_private_key=str(keypair[1]))


def stack_text() -> str:
    return (f'# the team\'s stack\n[stack]\nname = "demo"\n\n[lab]\nrelease = "bookworm"\n\n[access]\nssh_public_key = "{ACCESS["ssh_public_key"]}"\n'
            f'ssh_private_key = "{ACCESS["ssh_private_key"]}"\n\n[openwebui]\ninstall = "pip"\n'
            'version = "0.12.5"  # raised today\n')


def stack(install="pip", **openwebui):
    return parse_stack({"stack": {"name": "demo"}, "lab": {"release": "bookworm"}, "access": ACCESS, "openwebui": {"install": install, **openwebui}})


def having(**facts):
    return lambda stack, host: facts.get(host.name, {"version": None, "image": None})


def test_a_changed_pip_release_is_an_upgrade_a_fresh_or_current_host_is_not():
    found = upgrade.detect(stack(version="0.12.5"), HOSTS, having(**{"demo-1": {"version": "0.12.4", "image": None}}))
    assert found == [upgrade.Upgrade(HOSTS[0], "openwebui.version", "0.12.4", "0.12.5")]
    current = having(**{h.name: {"version": "0.12.5", "image": None} for h in HOSTS})
    assert upgrade.detect(stack(version="0.12.5"), HOSTS, current) == []
    assert upgrade.detect(stack(version="0.12.5"), HOSTS, having()) == []


def test_the_container_route_compares_images_and_none_asks_nothing():
    image = "ghcr.io/open-webui/open-webui:v0.12.5"
    facts = having(**{"demo-2": {"version": "0.12.4", "image": "ghcr.io/open-webui/open-webui:v0.12.4"}})
    assert upgrade.detect(stack("container", image=image), HOSTS, facts) == [
        upgrade.Upgrade(HOSTS[1], "openwebui.image", "ghcr.io/open-webui/open-webui:v0.12.4", image)]

    def never(stack, host):
        raise AssertionError("asked a host")
    assert upgrade.detect(stack("none"), HOSTS, never) == []


def test_an_older_pip_release_and_mixed_releases_are_refused_before_anything():
    with pytest.raises(upgrade.UpgradeError, match=r"demo-1: openwebui.version 0.12.3 is older than the host's "
                                                   r"Open WebUI 0.12.4: .* Nothing was changed"):
        upgrade.detect(stack(version="0.12.3"), HOSTS[:1], having(**{"demo-1": {"version": "0.12.4"}}))
    mixed = having(**{"demo-1": {"version": "0.12.3"}, "demo-2": {"version": "0.12.4"}})
    with pytest.raises(upgrade.UpgradeError, match=r"different Open WebUI releases \(0.12.3, 0.12.4\)"):
        upgrade.detect(stack(version="0.12.5"), HOSTS, mixed)


def test_the_rollback_stack_pins_the_previous_release_and_keeps_the_rest():
    found = [upgrade.Upgrade(HOSTS[0], "openwebui.version", "0.12.4", "0.12.5")]
    text = upgrade.rollback_text(stack_text(), found)
    assert text.startswith("# the team's stack\n") and tomllib.loads(text)["openwebui"] == {
        "install": "pip", "version": "0.12.4"}
    hostile = [upgrade.Upgrade(HOSTS[0], "openwebui.version", "0.12.4; rm -rf /", "0.12.5")]
    with pytest.raises(upgrade.UpgradeError, match="cannot be pinned for a rollback: .* Nothing was changed"):
        upgrade.rollback_text(stack_text(), hostile)


class Host_side:
    """Records every step in order; ``fail`` names the steps that fail."""

    def __init__(self, monkeypatch, fail=()):
        self.steps, self.fail = [], set(fail)
        monkeypatch.setattr(backup, "take", self.take)
        monkeypatch.setattr(backup, "restore", self.restore)

    def take(self, stack, progress, fetch=False, hosts=None, label=""):
        self.steps.append(("backup", [h.name for h in hosts], label))
        return [{"host": h.name, "id": f"2026120{n}T170000Z"} for n, h in enumerate(hosts, 1)]

    def restore(self, stack, progress, backup_id=None, hosts=None, stopped=False):
        self.steps.append(("restore", [h.name for h in hosts], backup_id, stopped))
        if "restore" in self.fail:
            raise backup.BackupError(f"{hosts[0].name}: the restore of {backup_id} failed on the host")
        return [{"host": hosts[0].name, "id": backup_id}]

    def converge(self, path):
        text = open(path).read()
        version = tomllib.loads(text)["openwebui"]["version"]
        self.steps.append(("converge", version))
        if path.endswith("rollback.toml"):
            mode = os.stat(path).st_mode & 0o777
            self.steps.append(("rollback file mode", oct(mode)))
        if f"converge {version}" in self.fail:
            raise RuntimeError("the converge failed on at least one host (pyinfra exit 1); fix what it reported "
                               "above and run `ollastack up` again: finished steps are skipped")

    def check(self, host, wait_s):
        version = [s for s in self.steps if s[0] == "converge"][-1][1]
        self.steps.append(("check", host.name, wait_s))
        if f"check {version}" in self.fail:
            return {"ok": False, "problem": "Open WebUI answered 502 on /health"}
        return {"ok": True, "problem": None}


@pytest.fixture
def stack_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "stack.toml"
    path.write_text(stack_text())
    return path


UPGRADES = [upgrade.Upgrade(h, "openwebui.version", "0.12.4", "0.12.5") for h in HOSTS]


def guarded(side, path, upgrades=UPGRADES):
    lines = []
    upgrade.guarded(stack(version="0.12.5"), upgrades, str(path), lines.append, side.converge, side.check, wait_s=60)
    return lines


def test_no_upgrade_is_a_plain_converge(monkeypatch, stack_file):
    side = Host_side(monkeypatch)
    guarded(side, stack_file, [])
    assert side.steps == [("converge", "0.12.5")]


def test_an_upgrade_takes_a_labelled_backup_first_and_checks_every_host_after(monkeypatch, stack_file):
    side = Host_side(monkeypatch)
    lines = guarded(side, stack_file)
    assert side.steps == [("backup", ["demo-1", "demo-2"], "before the upgrade to open-webui 0.12.5"),
                          ("converge", "0.12.5"), ("check", "demo-1", 60), ("check", "demo-2", 60)]
    assert "demo-1: upgrading Open WebUI from open-webui 0.12.4 to open-webui 0.12.5 (backup 20261201T170000Z " \
           "taken first)" in lines


def test_a_failed_converge_restores_stopped_then_converges_the_previous_release(monkeypatch, stack_file):
    side = Host_side(monkeypatch, fail={"converge 0.12.5"})
    with pytest.raises(upgrade.UpgradeError) as caught:
        guarded(side, stack_file)
    assert side.steps == [
        ("backup", ["demo-1", "demo-2"], "before the upgrade to open-webui 0.12.5"),
        ("converge", "0.12.5"), ("check", "demo-1", 0.0), ("check", "demo-2", 0.0),
        ("restore", ["demo-1"], "20261201T170000Z", True), ("restore", ["demo-2"], "20261202T170000Z", True),
        ("converge", "0.12.4"), ("rollback file mode", "0o600"), ("check", "demo-1", 60), ("check", "demo-2", 60)]
    message = str(caught.value)
    assert message.startswith("the upgrade of Open WebUI to open-webui 0.12.5 failed: the converge failed on at "
                              "least one host (pyinfra exit 1); rolled back: open-webui 0.12.4 serves again with "
                              "the backup taken before the upgrade restored (demo-1: 20261201T170000Z, "
                              "demo-2: 20261202T170000Z). ")
    assert message.endswith(f"openwebui.version in {stack_file} still names '0.12.5': set it back to '0.12.4' "
                            "or to a release that works")
    assert "run `ollastack up` again" not in message
    assert not (stack_file.parent / "state" / "demo.rollback.toml").exists()
    assert tomllib.loads(stack_file.read_text())["openwebui"]["version"] == "0.12.5"   # the operator's file


def test_a_failed_ready_check_rolls_back_and_names_the_check(monkeypatch, stack_file):
    side = Host_side(monkeypatch, fail={"check 0.12.5"})
    with pytest.raises(upgrade.UpgradeError) as caught:
        guarded(side, stack_file)
    assert [s[0] for s in side.steps] == ["backup", "converge", "check", "restore", "restore", "converge",
                                          "rollback file mode", "check", "check"]
    assert str(caught.value).startswith("the upgrade of Open WebUI to open-webui 0.12.5 failed: demo-1: the ready "
                                        "check through nginx failed: Open WebUI answered 502 on /health; rolled back")


@pytest.mark.parametrize("fail, why", [
    ({"converge 0.12.5", "converge 0.12.4"}, "the converge failed on at least one host (pyinfra exit 1)"),
    ({"check 0.12.5", "check 0.12.4"}, "demo-1: the ready check through nginx failed: Open WebUI answered 502"),
    ({"check 0.12.5", "restore"}, "demo-1: the restore of 20261201T170000Z failed on the host"),
])
def test_a_failed_rollback_says_so_and_where_the_backups_are(monkeypatch, stack_file, fail, why):
    side = Host_side(monkeypatch, fail=fail)
    with pytest.raises(upgrade.UpgradeError) as caught:
        guarded(side, stack_file)
    message = str(caught.value)
    assert f"; the rollback to open-webui 0.12.4 failed too ({why}" in message, message
    assert message.endswith("The backups taken before the upgrade (demo-1: 20261201T170000Z, demo-2: "
                            "20261202T170000Z) are on this machine: set openwebui.version back to '0.12.4', run "
                            "`ollastack up`, then `ollastack restore ID`"), message
    assert not (stack_file.parent / "state" / "demo.rollback.toml").exists()


def test_backup_list_shows_the_label(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    for backup_id, label in (("20261201T170000Z", "before the upgrade to open-webui 0.12.5"),
                             ("20261201T180000Z", "")):
        home = backup.backups_dir("demo-1") / backup_id
        home.mkdir()
        manifest = {"taken_at": backup_id, "openwebui_version": "0.12.4", "files": {},
                    **({"label": label} if label else {})}
        (home / "manifest.json").write_text(json.dumps(manifest))
    assert [(r["id"], r["label"]) for r in backup.list_backups()] == [
        ("20261201T170000Z", "before the upgrade to open-webui 0.12.5"), ("20261201T180000Z", "")]


def test_the_host_script_restores_stopped_for_a_rollback(tmp_path, monkeypatch):
    """``restore-stopped`` puts the data and the key back and never starts Open WebUI (the converge does)."""
    script = host_script()
    data = tmp_path / "data"
    data.mkdir()
    (data / "webui.db").write_bytes(b"after the failed upgrade")
    monkeypatch.setattr(script, "data_dir", lambda route: str(data))
    monkeypatch.setattr(script, "SECRET_KEY_ENV", str(tmp_path / "secret-key.env"))
    calls = []
    monkeypatch.setattr(script, "systemctl", calls.append)
    monkeypatch.setattr(script, "wait_healthy", lambda port: calls.append("waited"))
    files = {"webui.db": b"before the upgrade", "secret-key.env": b"WEBUI_SECRET_KEY=k\n"}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        sums = {name: script.hashlib.sha256(blob).hexdigest() for name, blob in files.items()}
        for name, blob in {**files, "host.json": json.dumps({"files": sums}).encode()}.items():
            member = tarfile.TarInfo(name)
            member.size = len(blob)
            tar.addfile(member, io.BytesIO(blob))
    buffer.seek(0)
    monkeypatch.setattr(script.os, "chown", lambda *a: None)
    monkeypatch.setattr(script.sys, "argv", ["x", "restore-stopped", "pip", "8080"])
    monkeypatch.setattr(script.sys, "stdin", io.TextIOWrapper(buffer))
    assert script.main(script.sys.argv) == 0
    assert calls == ["stop"]
    assert (data / "webui.db").read_bytes() == b"before the upgrade"
    assert (tmp_path / "secret-key.env").read_text() == "WEBUI_SECRET_KEY=k\n"


def test_the_host_script_names_the_running_container_s_image(tmp_path, monkeypatch, capsys):
    """``version`` on the container route: the image the ``open-webui`` container was created from (podman)."""
    podman = tmp_path / "podman"
    podman.write_text('#!/bin/sh\n[ "$*" = "container inspect -f {{.ImageName}} open-webui" ] || exit 125\n'
                      'echo ghcr.io/open-webui/open-webui:v0.12.4\n')
    podman.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    script = host_script()
    monkeypatch.setattr(script, "version", lambda route, port: "0.12.4")
    assert script.main(["x", "version", "container", "8080"]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": "0.12.4", "image": "ghcr.io/open-webui/open-webui:v0.12.4"}
    assert script.image("pip") is None
    podman.write_text("#!/bin/sh\necho 'no such container' >&2\nexit 125\n")
    assert script.image("container") is None


def test_a_built_image_compares_releases_not_image_names():
    """build_image: the host runs localhost/ollastack/open-webui:<version>-<inputs>; the release is what counts."""
    built = "localhost/ollastack/open-webui:0.12.4-f8f3866d8167"
    current = having(**{"demo-1": {"version": "0.12.4", "image": built}})
    assert upgrade.detect(stack("container", build_image=True), HOSTS, current) == []
    # Switching a host from the pulled image to a built one of the same release is no upgrade either.
    pulled = having(**{"demo-1": {"version": "0.12.4", "image": "ghcr.io/open-webui/open-webui:v0.12.4"}})
    assert upgrade.detect(stack("container", build_image=True), HOSTS, pulled) == []
    assert upgrade.detect(stack("container", build_image=True, version="0.12.5"), HOSTS, current) == [
        upgrade.Upgrade(HOSTS[0], "openwebui.version", "0.12.4", "0.12.5")]
