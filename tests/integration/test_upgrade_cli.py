"""``ollastack up`` guarding an Open WebUI upgrade, with no lab: a static stack whose host is the Open WebUI
stand-in over TLS on a loopback address, and a fake ``ssh`` answering the host script's ``version``.

The detection (``backup.installed`` through ssh), the ready checks (``ready.check`` through TLS) and the
command's exit code and message are the real ones; the converge and the backup/restore over SSH are
faked, since they need a real host (tests/lab/test_lab_upgrade.py does them for real).
"""

from __future__ import annotations

import json
import tomllib

import pytest

from ollastack import backup, orchestrate
from ollastack.cli import main
from ollastack.host import Host
from tests.integration.test_orchestrate import control  # noqa: F401 (fixture: state, certificates, PATH)
from tests.support.controlkit import fake_host, fake_ssh, loopback_address

PASSWORD = "Upgrade-Admin-1"


@pytest.fixture
def setup(control, monkeypatch, tmp_path):  # noqa: F811
    host = fake_host(monkeypatch, tmp_path, "orch", ("admin@example.com", PASSWORD))
    stack = control(static={"hosts": [loopback_address()]})
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "orch"\nprovider = "static"\n\n[static]\nhosts = ["{loopback_address()}"]\n\n'
                      f'[access]\nssh_public_key = "{stack.access.ssh_public_key}"\n'
                      f'ssh_private_key = "{stack.access.ssh_private_key}"\n\n'
                      f'[openwebui]\ninstall = "pip"\nversion = "0.12.5"\nadmin_password = "{PASSWORD}"\n')
    fake_ssh(control.bin)
    (control.bin / "ssh.out").write_text(json.dumps({"version": "0.12.4", "image": None}) + "\n")
    steps, broken = [], set()

    def converge(stack, path, progress):
        version = tomllib.loads(open(path).read())["openwebui"]["version"]
        steps.append(("converge", version))
        # A broken release answers 503; the previous one, put back by the rollback, is healthy.
        if version in broken:
            host.fail(health=503)
        else:
            (host.data / "standin-faults.json").unlink(missing_ok=True)

    monkeypatch.setattr(orchestrate, "converge", converge)
    # The 503 is retried for as long as up waits for a restarted Open WebUI.
    monkeypatch.setattr(orchestrate, "UP_READY_WAIT_S", 2.0)
    monkeypatch.setattr(backup, "take", lambda stack, progress, hosts, label: steps.append(("backup", label)) or [
        {"host": hosts[0].name, "id": "20261201T170000Z"}])
    monkeypatch.setattr(backup, "restore", lambda stack, progress, backup_id, hosts, stopped: steps.append(
        ("restore", backup_id, stopped)))
    yield config, steps, broken
    host.stop()


def test_up_of_a_broken_release_rolls_back_and_exits_1_naming_it(setup, capsys):
    config, steps, broken = setup
    broken.add("0.12.5")
    assert main(["--config", str(config), "up"]) == 1
    assert steps == [("backup", "before the upgrade to open-webui 0.12.5"), ("converge", "0.12.5"),
                     ("restore", "20261201T170000Z", True), ("converge", "0.12.4")]
    err = capsys.readouterr().err
    assert f"{loopback_address()}: upgrading Open WebUI from open-webui 0.12.4 to open-webui 0.12.5" in err
    assert err.splitlines()[-1] == (
        f"error: the upgrade of Open WebUI to open-webui 0.12.5 failed: {loopback_address()}: the ready check through "
        "nginx failed: Open WebUI answered 503 on /health; rolled back: open-webui 0.12.4 serves again with the "
        f"backup taken before the upgrade restored ({loopback_address()}: 20261201T170000Z). openwebui.version in "
        f"{config} still names '0.12.5': set it back to '0.12.4' or to a release that works")
    assert PASSWORD not in err


def test_up_of_the_release_the_host_has_takes_no_backup(setup, capsys):
    config, steps, _ = setup
    (config.parent / "bin" / "ssh.out").write_text(json.dumps({"version": "0.12.5", "image": None}) + "\n")
    assert main(["--config", str(config), "up"]) == 0, capsys.readouterr().err
    assert steps == [("converge", "0.12.5")]


def test_up_of_a_working_release_upgrades_after_a_backup(setup, capsys):
    config, steps, _ = setup
    assert main(["--config", str(config), "up"]) == 0, capsys.readouterr().err
    assert steps == [("backup", "before the upgrade to open-webui 0.12.5"), ("converge", "0.12.5")]
    assert f"upgrade to open-webui 0.12.5: ready on {loopback_address()}" in capsys.readouterr().err


def test_a_host_without_python3_has_no_open_webui_a_failed_probe_stops_up(control, tmp_path):  # noqa: F811
    """Exit 127 (no python3: no converge ever ran, base installs it) is a fresh host; another failure, or an
    answer that is not text, is an error."""
    stack = control(static={"hosts": [loopback_address()]}, openwebui={"install": "pip"})
    fake_ssh(control.bin, exit_code=127, stderr="sh: 1: python3: not found")
    assert backup.installed(stack, Host("fresh", loopback_address())) == {"version": None, "image": None}
    fake_ssh(control.bin, exit_code=255, stderr="Connection refused")
    with pytest.raises(backup.BackupError, match="fresh: cannot read the host's Open WebUI release: Connection refused"):
        backup.installed(stack, Host("fresh", loopback_address()))
    fake_ssh(control.bin)
    (control.bin / "ssh.out").write_text('{"version": 12, "image": null}\n')
    with pytest.raises(backup.BackupError, match="fresh: the host's answer about its Open WebUI release was not understood"):
        backup.installed(stack, Host("fresh", loopback_address()))
