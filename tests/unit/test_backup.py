"""The backup pieces that need no host: the SQLite snapshot of a WAL database, tar members, releases, retention."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import sqlite3
import tarfile

import pytest

from ollastack import backup
from ollastack.resources import deploy_file


def host_script():
    spec = importlib.util.spec_from_file_location("openwebui_backup", deploy_file("files/openwebui-backup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wal_database(path):
    """A WAL database whose last 500 rows are only in the -wal file; the open connection keeps them there."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE chat (id INTEGER PRIMARY KEY, title TEXT)")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.executemany("INSERT INTO chat (title) VALUES (?)", [(f"chat {n}",) for n in range(500)])
    db.commit()
    return db


def test_snapshot_of_a_wal_database_holds_what_a_file_copy_misses(tmp_path):
    live = wal_database(tmp_path / "webui.db")
    staging = tmp_path / "staging"
    staging.mkdir()
    verdict = host_script().sqlite_copy(str(tmp_path / "webui.db"), str(staging / "webui.db"), str(staging),
                                        "pip", str(tmp_path))
    shutil.copyfile(tmp_path / "webui.db", tmp_path / "copied.db")
    live.close()
    assert verdict == "ok"
    with sqlite3.connect(staging / "webui.db") as snap, sqlite3.connect(tmp_path / "copied.db") as copied:
        assert snap.execute("SELECT count(*) FROM chat").fetchone()[0] == 500
        assert snap.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert copied.execute("SELECT count(*) FROM chat").fetchone()[0] == 0
    assert sorted(p.name for p in staging.iterdir()) == ["webui.db"]


def test_container_route_copies_inside_the_container(tmp_path, monkeypatch):
    """The copy runs through ``podman exec open-webui`` on the volume's path in the container, lands beside
    the database there and is moved out (here a podman on PATH runs the command, the container's path
    being the same directory)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    live = wal_database(volume / "webui.db")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    podman = bin_dir / "podman"
    podman.write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n[ \"$1 $2\" = \"exec open-webui\" ] || exit 9\nshift 2\n"
                      "exec \"$@\"\n")
    podman.chmod(0o755)
    script = host_script()
    monkeypatch.setattr(script, "CONTAINER_DATA", str(volume))   # the container's view is this directory
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    staging = tmp_path / "staging"
    staging.mkdir()
    verdict = script.sqlite_copy(str(volume / "webui.db"), str(staging / "webui.db"), str(staging), "container",
                                 str(volume))
    live.close()
    assert verdict == "ok"
    assert calls.read_text().startswith("exec open-webui python3 -c ")
    with sqlite3.connect(staging / "webui.db") as snap:
        assert snap.execute("SELECT count(*) FROM chat").fetchone()[0] == 500
    assert sorted(p.name for p in volume.iterdir() if not p.name.startswith("webui.db")) == []


def tar_with(member: tarfile.TarInfo) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(member, io.BytesIO(b"x") if member.isfile() else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r")


@pytest.mark.parametrize("name, kind", [("../escape", tarfile.REGTYPE), ("/etc/passwd", tarfile.REGTYPE),
                                        ("link", tarfile.SYMTYPE)])
def test_received_tar_may_hold_only_plain_files_below_the_top(name, kind, tmp_path):
    member = tarfile.TarInfo(name)
    member.type, member.size, member.linkname = kind, 1 if kind == tarfile.REGTYPE else 0, "/etc/shadow"
    tar = tar_with(member)
    with pytest.raises(backup.BackupError, match="refusing tar member"):
        tar.extractall(tmp_path, members=backup._plain_members(tar))
    assert list(tmp_path.iterdir()) == []


def test_releases_compare_by_number_not_text():
    assert backup.release_key("0.12.10") > backup.release_key("0.12.9")
    assert backup.release_key("0.12.4") == backup.release_key("v0.12.4")


def test_retention_keeps_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path))
    home = backup.backups_dir("demo-1")
    ids = [f"202612{day:02d}T020000Z" for day in range(1, 10)]
    for backup_id in ids:
        (home / backup_id).mkdir()
        (home / backup_id / "manifest.json").write_text(json.dumps({"files": {}}))
    (home / ".partial-x").mkdir()
    removed: list[str] = []
    backup._prune("demo-1", 7, removed.append)
    assert backup._ids("demo-1") == ids[2:] and len(removed) == 2
    assert (tmp_path / "backups" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (tmp_path / "backups").stat().st_mode & 0o777 == 0o700
