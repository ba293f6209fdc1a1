"""Backups of the real Open WebUI (pip route, Debian 12): snapshot while it runs, restore onto a fresh host.

One lab host of its own stack (``backuptest``), reused by every test in order: data is made through the
API, ``ollastack backup`` takes it, ``down`` + ``up`` replace the host, ``restore`` brings the data back.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.lab.test_lab_openwebui import ADMIN, WebUIStack, request, signin
from tests.support.labkit import lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

USER, USER_PASSWORD = "alice@example.org", "Alice-Pass-1"
DB = "/var/lib/open-webui/data/webui.db"
KEY = "/etc/open-webui/secret-key.env"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives):
    wheels = os.environ.get("PIP_FIND_LINKS", "/opt/wheels")
    yield from lab_stack_fixture(lambda: WebUIStack("backuptest", tmp_path_factory.mktemp("backuptest"), keypair,
                                                    archives, {"install": "pip", "find_links": wheels}))


def up(stack: WebUIStack) -> dict:
    result = stack.ollastack("--json", "up", timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    host = json.loads(result.stdout)["hosts"][0]
    return {"address": host["address"], "base": f"https://{host['address']}"}


@pytest.fixture(scope="module")
def host(stack) -> dict:
    return up(stack)


def admin_token(stack: WebUIStack, host: dict) -> str:
    status, session = signin(host["base"], stack.ca, ADMIN, stack.password())
    assert status == 200, session
    return session["token"]


def add_user(stack: WebUIStack, host: dict, name: str, email: str, password: str) -> dict:
    """A user made by the admin through the API, signed in: their session (``token``, ``id``, ...)."""
    status, body = request(f"{host['base']}/api/v1/auths/add", stack.ca,
                           {"name": name, "email": email, "password": password, "role": "user"},
                           token=admin_token(stack, host))
    assert status == 200, body
    status, session = signin(host["base"], stack.ca, email, password)
    assert status == 200, session
    return session


def new_chat(host: dict, ca: Path, token: str, title: str) -> str:
    status, body = request(f"{host['base']}/api/v1/chats/new", ca, {"chat": {"title": title, "messages": []}}, token=token)
    assert status == 200, body
    return json.loads(body)["id"]


def backups(stack: WebUIStack) -> Path:
    return stack.dir / "state" / "backups"


def newest(stack: WebUIStack) -> Path:
    homes = [p for p in backups(stack).iterdir() if p.is_dir()]
    assert len(homes) == 1, homes
    return sorted(p for p in homes[0].iterdir() if not p.name.startswith("."))[-1]


def backup(stack: WebUIStack, *extra: str) -> Path:
    result = stack.ollastack("backup", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    path = Path(result.stdout.strip())
    secret = (path / "secret-key.env").read_text().split("=", 1)[1].strip()
    assert secret not in result.stdout + result.stderr and stack.password() not in result.stdout + result.stderr
    return path


def test_backup_down_up_restore(stack, host):
    """A user, their chat and their session survive ``backup``, ``down``, ``up`` (a fresh host), ``restore``."""
    ca = stack.ca
    session = add_user(stack, host, "Alice", USER, USER_PASSWORD)
    chat_id = new_chat(host, ca, session["token"], "kept across hosts")

    path = backup(stack)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["openwebui_version"] == "0.12.4" and manifest["ollastack_version"]
    assert manifest["integrity_check"] == "ok" and "config_export" not in manifest
    assert {"webui.db", "secret-key.env", "config.json"} <= set(manifest["files"])
    assert isinstance(json.loads((path / "config.json").read_text()), dict)
    listed = stack.ollastack("--json", "backup", "list")
    assert [row["id"] for row in json.loads(listed.stdout)] == [path.name]

    down = stack.ollastack("down", "--yes")
    assert down.returncode == 0, down.stderr
    fresh = up(stack)
    host.update(fresh)
    assert signin(host["base"], ca, USER, USER_PASSWORD)[0] == 400   # a new, empty Open WebUI

    restored = stack.ollastack("restore")
    assert restored.returncode == 0, restored.stderr[-3000:]
    status, again = signin(host["base"], ca, USER, USER_PASSWORD)
    assert status == 200
    status, body = request(f"{host['base']}/api/v1/chats/{chat_id}", ca, token=again["token"])
    assert status == 200 and json.loads(body)["title"] == "kept across hosts"
    status, body = request(f"{host['base']}/api/v1/auths/", ca, token=session["token"])
    assert status == 200 and json.loads(body)["email"] == USER

    owners = ssh(host["address"], f"stat -c '%U %a' {DB} {KEY}", stack.keypair).stdout.split("\n")
    assert owners[:2] == ["open-webui 640", "root 600"], owners
    key_before = ssh(host["address"], f"sha256sum {KEY}", stack.keypair).stdout
    stack.pyinfra()
    assert ssh(host["address"], f"sha256sum {KEY}", stack.keypair).stdout == key_before
    status, _ = request(f"{host['base']}/api/v1/auths/", ca, token=session["token"])
    assert status == 200


def test_backups_are_private_and_ignored_by_git(stack, host):
    root = backups(stack)
    assert (root / ".gitignore").read_text().splitlines()[-1] == "*"
    for item in [root, *root.rglob("*")]:
        if item.name != ".gitignore":
            assert item.stat().st_mode & 0o777 == (0o700 if item.is_dir() else 0o600), item


def test_backup_while_chats_are_written(stack, host):
    """Chats acknowledged before the snapshot began are all in it, and the restored database is sound."""
    token, acked, stop = admin_token(stack, host), [], threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            status, body = request(f"{host['base']}/api/v1/chats/new", stack.ca,
                                   {"chat": {"title": f"load {n}", "messages": []}}, token=token)
            if status == 200:
                acked.append((time.monotonic(), json.loads(body)["id"]))
            n += 1
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acked) < 20:
            time.sleep(0.2)
        began = time.monotonic()
        path = backup(stack)
    finally:
        stop.set()
        thread.join()
    before = {chat_id for at, chat_id in acked if at < began}
    assert len(acked) > len(before) > 0   # writes went on during the snapshot
    with sqlite3.connect(path / "webui.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert before <= {row[0] for row in db.execute("SELECT id FROM chat")}

    restored = stack.ollastack("restore", path.name)
    assert restored.returncode == 0, restored.stderr[-3000:]
    check = ("import sqlite3, json; db = sqlite3.connect('file:%s?mode=ro', uri=True); "
             "print(json.dumps([db.execute('PRAGMA integrity_check').fetchone()[0], "
             "[r[0] for r in db.execute('SELECT id FROM chat')]]))" % DB)
    verdict, ids = json.loads(ssh(host["address"], f'python3 -c "{check}"', stack.keypair).stdout)
    assert verdict == "ok" and before <= set(ids)


def test_restore_of_a_newer_release_is_refused_untouched(stack, host):
    path = newest(stack)
    forged = path.parent / "29991231T000000Z"
    shutil.copytree(path, forged)
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["openwebui_version"] = "99.0.0"
    (forged / "manifest.json").write_text(json.dumps(manifest))
    probe = f"stat -c %i {DB}; sha256sum {KEY}; systemctl show -p MainPID --value open-webui"
    before = ssh(host["address"], probe, stack.keypair).stdout
    try:
        result = stack.ollastack("restore", forged.name)
    finally:
        shutil.rmtree(forged)
    assert result.returncode == 1
    assert "Open WebUI 99.0.0, newer than the host's 0.12.4" in result.stderr and "Nothing was changed" in result.stderr
    assert ssh(host["address"], probe, stack.keypair).stdout == before


def test_scheduled_backups_on_the_host_and_fetch(stack, host):
    """backup.schedule installs a persistent daily timer; its service keeps backup.keep tars; --fetch copies the newest."""
    address, keypair = host["address"], stack.keypair
    stack.write(extra='[backup]\nschedule = "03:30"\nkeep = 2\n')
    try:
        stack.pyinfra()
        show = ssh(address, "systemctl show ollastack-backup.timer -p Persistent -p TimersCalendar -p UnitFileState "
                            "-p ActiveState", keypair).stdout
        props = dict(line.split("=", 1) for line in show.splitlines())
        assert props["Persistent"] == "yes" and "OnCalendar=*-*-* 03:30:00" in props["TimersCalendar"]
        assert props["UnitFileState"] == "enabled" and props["ActiveState"] == "active"
        for _ in range(3):
            ssh(address, "systemctl start ollastack-backup.service", keypair)
        listing = ssh(address, "stat -c '%a %n' /var/backups/ollastack/openwebui /var/backups/ollastack/openwebui/*",
                      keypair).stdout.splitlines()
        assert listing[0] == "700 /var/backups/ollastack/openwebui" and len(listing) == 3, listing
        assert all(line.startswith("600 ") and line.endswith(".tar") for line in listing[1:]), listing
        fetched = backup(stack, "--fetch")
        assert f"/var/backups/ollastack/openwebui/{fetched.name}.tar" == listing[-1].split()[1]
        assert json.loads((fetched / "manifest.json").read_text())["integrity_check"] == "ok"
    finally:
        stack.write()
        stack.pyinfra()
    assert ssh(address, "test -e /etc/systemd/system/ollastack-backup.timer", keypair, check=False).returncode == 1
