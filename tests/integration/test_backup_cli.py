"""``ollastack backup list`` and the refusals of ``restore`` that come before any host is reached (a fake ``ssh``
records whether one was)."""

from __future__ import annotations

import hashlib
import json

from tests.integration.test_cli import home, run  # noqa: F401 (fixture: a static stack under tmp_path)
from tests.support.azure_fixtures import keys  # noqa: F401 (fixture: an SSH key pair)
from tests.support.controlkit import fake_ssh, loopback_address


def stored_backup(state, host: str, backup_id: str, db: bytes = b"SQLite format 3\0") -> dict:
    """A backup as ``ollastack backup`` leaves it, written by hand."""
    path = state / "backups" / host / backup_id
    path.mkdir(parents=True)
    (path / "webui.db").write_bytes(db)
    manifest = {"id": backup_id, "taken_at": "2026-12-01T14:30:00Z", "openwebui_version": "0.12.4",
                "files": {"webui.db": hashlib.sha256(db).hexdigest()}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_restore_without_a_backup_stops_before_ssh(home, capsys):
    home(openwebui={"install": "pip"})
    fake_ssh(home.bin)
    code, _, err = run(capsys, "restore")
    assert code == 1 and "no backup under" in err and "nothing was changed" in err
    assert not (home.bin / "ssh.args").exists()


def test_restore_of_a_damaged_backup_stops_before_ssh(home, capsys):
    home(openwebui={"install": "pip"})
    fake_ssh(home.bin)
    stored_backup(home.state, loopback_address(), "20261201T143000Z")
    (home.state / "backups" / loopback_address() / "20261201T143000Z" / "webui.db").write_bytes(b"changed")
    code, _, err = run(capsys, "restore", "20261201T143000Z")
    assert code == 1 and "missing or damaged" in err and "nothing was changed" in err
    assert not (home.bin / "ssh.args").exists()


def test_backup_list_shows_what_exists(home, capsys):
    home(openwebui={"install": "pip"})
    for backup_id in ("20261201T143000Z", "20261202T020000Z"):
        stored_backup(home.state, "demo-1", backup_id)
    code, out, _ = run(capsys, "--json", "backup", "list")
    assert code == 0 and [(r["host"], r["id"]) for r in json.loads(out)] == [
        ("demo-1", "20261201T143000Z"), ("demo-1", "20261202T020000Z")]
    code, out, _ = run(capsys, "backup", "list")
    assert out.splitlines()[1].startswith("demo-1\t20261202T020000Z\tOpen WebUI 0.12.4\t")


def test_backup_of_a_stack_without_open_webui_is_refused(home, capsys):
    home(openwebui={"install": "none"})
    fake_ssh(home.bin)
    code, _, err = run(capsys, "backup")
    assert code == 1 and 'openwebui.install = "none"' in err
    assert not (home.bin / "ssh.args").exists()
