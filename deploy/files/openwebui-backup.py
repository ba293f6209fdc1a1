#!/usr/bin/env python3
"""Open WebUI's data on this host, as one tar stream: snapshot it, put it back, or keep dated copies here.

Run as root, by ``ollastack backup``/``restore`` over SSH (``python3 -c <this file> MODE ...``) and by
``ollastack-backup.service`` (installed as /usr/local/lib/ollastack/openwebui-backup.py)::

    openwebui-backup.py version ROUTE PORT                 # {"version": "0.12.4", "image": ...} on stdout
    openwebui-backup.py backup ROUTE PORT EMAIL [MODELS]   # tar on stdout, progress on stderr
    openwebui-backup.py restore ROUTE PORT [MODELS] < backup.tar   # stop, put back, start, wait for /health
    openwebui-backup.py restore-stopped ROUTE PORT [MODELS] < backup.tar   # stop, put back, leave it stopped
    openwebui-backup.py scheduled ROUTE PORT EMAIL DIR KEEP [MODELS]   # DIR/<ID>.tar, newest KEEP kept
    openwebui-backup.py latest ROUTE PORT DIR              # the newest DIR/<ID>.tar on stdout

What a snapshot holds: ``webui.db`` through SQLite's online backup API (WAL mode: a file copy can miss
what is still in the -wal file), ``uploads/``, ``vector_db/`` (its SQLite files through the same API;
when it holds index segments besides them, Open WebUI is stopped for the copy and started again),
``secret-key.env``, ``config.json`` (``GET /api/v1/configs/export`` signed in as the admin of
/etc/open-webui/admin.env; left out with the reason in host.json when that fails) and ``host.json``
(version, route, when, sha256 of every file). Nothing secret is ever printed.
"""

import datetime
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

SECRET_KEY_ENV = "/etc/open-webui/secret-key.env"
ADMIN_ENV = "/etc/open-webui/admin.env"
PIP_DATA = "/var/lib/open-webui/data"
PIP_MARKER = "/opt/open-webui/.ollastack-installed"
SERVICE = "open-webui"
# The open-webui volume's mount point in the container (the Quadlet file and the container unit).
CONTAINER_DATA = "/app/backend/data"
HEALTH_WAIT_S = 300
SQLITE_SUFFIXES = (".db", ".sqlite3")
# Copied from the host's sqlite3 module in a child process running as the data's owner, so that
# no -wal or -shm file is ever created as root (Open WebUI could not open it afterwards).
SQLITE_BACKUP = ("import sqlite3, sys\n"
                 "src = sqlite3.connect(sys.argv[1]); dst = sqlite3.connect(sys.argv[2])\n"
                 "src.backup(dst); dst.execute('PRAGMA journal_mode=DELETE')\n"
                 "check = dst.execute('PRAGMA integrity_check').fetchone()[0]\n"
                 "dst.close(); src.close(); print(check)\n")


def say(message):
    print(f"open-webui backup: {message}", file=sys.stderr, flush=True)


def data_dir(route):
    """Where Open WebUI keeps its data: the pip route's DATA_DIR, or the container's ``open-webui`` volume."""
    if route == "pip":
        return PIP_DATA
    out = subprocess.run(["podman", "volume", "inspect", "-f", "{{.Mountpoint}}", "open-webui"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def http(port, path, body=None, token=""):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def version(route, port):
    """The running release (``GET /api/version``), else the pip route's install marker; None when unknown."""
    try:
        return http(port, "/api/version")["version"]
    except (OSError, ValueError, KeyError):
        pass
    if route == "pip" and os.path.exists(PIP_MARKER):
        return open(PIP_MARKER).read().strip().partition("==")[2] or None
    return None


def image(route):
    """The container route's image as the running container was created from it; None when none runs."""
    if route != "container":
        return None
    try:
        out = subprocess.run(["podman", "container", "inspect", "-f", "{{.ImageName}}", SERVICE],
                             capture_output=True, text=True)
    except OSError:
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def wait_healthy(port):
    deadline = time.monotonic() + HEALTH_WAIT_S
    while time.monotonic() < deadline:
        try:
            if http(port, "/health").get("status"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(1)
    raise SystemExit(f"Open WebUI did not answer /health within {HEALTH_WAIT_S} s; see journalctl -u {SERVICE}")


def systemctl(verb):
    subprocess.run(["systemctl", verb, SERVICE], check=True)


def sqlite_copy(src, dst, staging, route, data):
    """Copy an SQLite database to ``dst`` through the online backup API, run as the database's owner in a
    directory of its own under ``staging`` (mode 0711); returns integrity_check's verdict on the copy.

    On the container route the copy runs in the container (``podman exec``): the volume belongs to the
    container's unprivileged uid range, which cannot reach it on the host (/var/lib/containers is root's).
    """
    if route == "container":
        return container_sqlite_copy(src, dst, CONTAINER_DATA + src[len(data):])
    owner = os.stat(src)
    work = tempfile.mkdtemp(dir=staging, prefix=".sqlite-")
    os.chown(work, owner.st_uid, owner.st_gid)
    as_owner = {} if owner.st_uid == os.getuid() else {"user": owner.st_uid, "group": owner.st_gid, "extra_groups": []}
    out = subprocess.run([sys.executable, "-c", SQLITE_BACKUP, src, f"{work}/copy"], capture_output=True, text=True,
                         cwd="/", **as_owner)
    if out.returncode != 0:
        raise SystemExit(f"SQLite backup of {src} failed: {out.stderr.strip()[-300:]}")
    os.rename(f"{work}/copy", dst)
    os.rmdir(work)
    return out.stdout.strip()


def container_sqlite_copy(src, dst, inside):
    """``sqlite_copy`` in the running container, of ``src`` (``inside`` there), beside it then moved here."""
    name = f".ollastack-backup-{os.getpid()}"
    copy = f"{os.path.dirname(src)}/{name}"
    try:
        out = subprocess.run(["podman", "exec", SERVICE, "python3", "-c", SQLITE_BACKUP, inside,
                              f"{os.path.dirname(inside)}/{name}"], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"SQLite backup of {inside} in the {SERVICE} container failed (it must be running: "
                             f"systemctl start {SERVICE}): {out.stderr.strip()[-300:]}")
        shutil.move(copy, dst)
    finally:
        if os.path.exists(copy):
            os.unlink(copy)
    return out.stdout.strip()


def admin_password():
    """WEBUI_ADMIN_PASSWORD from admin.env, undoing the systemd quoting the deploy wrote it with."""
    line = open(ADMIN_ENV).read().strip()
    value = line.partition("=")[2]
    if value.startswith('"') and value.endswith('"'):
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def export_config(port, email):
    """(config, None) from the admin API, or (None, why not)."""
    try:
        token = http(port, "/api/v1/auths/signin", {"email": email, "password": admin_password()})["token"]
        return http(port, "/api/v1/configs/export", token=token), None
    except (OSError, ValueError, KeyError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]


def snapshot(route, port, email, models, staging):
    """Fill ``staging`` with one consistent snapshot; returns host.json's content."""
    data = data_dir(route)
    taken = datetime.datetime.now(datetime.timezone.utc)
    info = {"taken_at": taken.strftime("%Y-%m-%dT%H:%M:%SZ"), "id": taken.strftime("%Y%m%dT%H%M%SZ"),
            "route": route, "openwebui_version": version(route, port), "hostname": os.uname().nodename}
    say("webui.db through SQLite's online backup")
    info["integrity_check"] = sqlite_copy(f"{data}/webui.db", f"{staging}/webui.db", staging, route, data)
    if os.path.isdir(f"{data}/uploads"):
        say("uploads/")
        shutil.copytree(f"{data}/uploads", f"{staging}/uploads")
    info["vector_store"] = vector_store(route, port, data, f"{staging}/vector_db", staging)
    shutil.copy2(SECRET_KEY_ENV, f"{staging}/secret-key.env")
    config, why = export_config(port, email)
    if config is not None:
        with open(f"{staging}/config.json", "w") as out:
            json.dump(config, out, indent=2, sort_keys=True)
    else:
        info["config_export"] = f"not exported: {why}"
        say(info["config_export"])
    if models:
        say(f"models from {models}")
        shutil.copytree(models, f"{staging}/models", symlinks=True)
    return info


def vector_store(route, port, data, dst, staging):
    """Chroma's directory: online through the backup API when it is only SQLite files, else copied stopped."""
    src = f"{data}/vector_db"
    if not os.path.isdir(src):
        return "absent"
    names = os.listdir(src)
    if all(n.endswith(SQLITE_SUFFIXES) or n.endswith(("-wal", "-shm")) for n in names):
        os.makedirs(dst)
        for name in names:
            if name.endswith(SQLITE_SUFFIXES):
                say(f"vector_db/{name} through SQLite's online backup")
                sqlite_copy(f"{src}/{name}", f"{dst}/{name}", staging, route, data)
        return "online (SQLite backup API)"
    say("vector_db/ holds index segments: stopping Open WebUI for the copy")
    systemctl("stop")
    try:
        shutil.copytree(src, dst)
    finally:
        systemctl("start")
        wait_healthy(port)
    say("Open WebUI is back")
    return "copied while Open WebUI was stopped"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_tar(staging, info, out):
    """``staging`` plus host.json (with every file's sha256) as an uncompressed tar on ``out``."""
    files = {}
    for root, _, names in os.walk(staging):
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                files[os.path.relpath(path, staging)] = sha256(path)
    info["files"] = dict(sorted(files.items()))
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for rel in info["files"]:
            tar.add(os.path.join(staging, rel), arcname=rel, recursive=False)
        blob = json.dumps(info, indent=2).encode()
        member = tarfile.TarInfo("host.json")
        member.size, member.mode, member.mtime = len(blob), 0o600, int(time.time())
        tar.addfile(member, io.BytesIO(blob))


def backup(route, port, email, models, out):
    staging = tempfile.mkdtemp(prefix="ollastack-backup-", dir="/var/tmp")
    # Others may pass through (to the database owner's own subdirectory), not list or read.
    os.chmod(staging, 0o711)
    try:
        info = snapshot(route, port, email, models, staging)
        write_tar(staging, info, out)
        return info
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def scheduled(route, port, email, directory, keep, models):
    """A dated tar in ``directory`` (0700, files 0600), keeping the newest ``keep``."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=".partial-")
    with os.fdopen(fd, "wb") as out:
        info = backup(route, port, email, models, out)
    os.replace(partial, f"{directory}/{info['id']}.tar")
    tars = sorted(n for n in os.listdir(directory) if n.endswith(".tar") and not n.startswith("."))
    for old in tars[:-keep]:
        os.unlink(f"{directory}/{old}")
    say(f"{directory}/{info['id']}.tar written; {min(len(tars), keep)} kept")


def owned_tree(path, uid, gid):
    for root, dirs, names in os.walk(path):
        os.chown(root, uid, gid)
        os.chmod(root, 0o750)
        for name in names:
            os.chown(os.path.join(root, name), uid, gid)
            os.chmod(os.path.join(root, name), 0o640)


def plain_members(tar):
    """The tar's members, refusing anything but plain files and directories below the top."""
    for member in tar:
        parts = member.name.split("/")
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
            raise SystemExit(f"refusing tar member {member.name!r}; nothing was changed")
        member.mode = 0o700 if member.isdir() else 0o600
        member.uid = member.gid = 0
        yield member


def restore(route, port, models, source, start=True):
    """Unpack the tar on ``source`` beside the data, check it, stop Open WebUI, swap it in, start, wait.

    ``start`` False leaves Open WebUI stopped: an upgrade's rollback puts the data back before the
    converge starts the release the backup came from, so the failed release never opens it again.
    """
    data = data_dir(route)
    owner = os.stat(data)
    staging = tempfile.mkdtemp(prefix=".ollastack-restore-", dir=os.path.dirname(data))
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            tar.extractall(staging, members=plain_members(tar))
        info = json.load(open(f"{staging}/host.json"))
        for rel, digest in info["files"].items():
            if sha256(f"{staging}/{rel}") != digest:
                raise SystemExit(f"{rel} does not match its sha256 in the manifest; nothing was changed")
        say("stopping Open WebUI")
        systemctl("stop")
        for name in ("webui.db-wal", "webui.db-shm"):
            if os.path.exists(f"{data}/{name}"):
                os.unlink(f"{data}/{name}")
        for name in ("webui.db", "uploads", "vector_db"):
            if not os.path.exists(f"{staging}/{name}"):
                continue
            target = f"{data}/{name}"
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.rename(f"{staging}/{name}", target)
            if os.path.isdir(target):
                owned_tree(target, owner.st_uid, owner.st_gid)
            else:
                os.chown(target, owner.st_uid, owner.st_gid)
                os.chmod(target, 0o640)
        if models and os.path.isdir(f"{staging}/models"):
            say(f"models into {models}")
            shutil.copytree(f"{staging}/models", models, symlinks=True, dirs_exist_ok=True)
            owner_models = os.stat(models)
            for root, _, names in os.walk(models):
                os.chown(root, owner_models.st_uid, owner_models.st_gid)
                for name in names:
                    os.chown(os.path.join(root, name), owner_models.st_uid, owner_models.st_gid)
        shutil.copyfile(f"{staging}/secret-key.env", f"{SECRET_KEY_ENV}.new")
        os.chmod(f"{SECRET_KEY_ENV}.new", 0o600)
        os.replace(f"{SECRET_KEY_ENV}.new", SECRET_KEY_ENV)
        if not start:
            say("data put back; Open WebUI left stopped")
            return
        say("starting Open WebUI")
        systemctl("start")
        wait_healthy(port)
        say("Open WebUI answers /health")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv):
    mode, route, port = argv[1], argv[2], int(argv[3])
    if route not in ("pip", "container"):
        raise SystemExit(f"unknown route {route!r}")
    os.umask(0o077)
    if mode == "version":
        print(json.dumps({"version": version(route, port), "image": image(route)}))
    elif mode == "backup":
        backup(route, port, argv[4], argv[5] if len(argv) > 5 else "", sys.stdout.buffer)
    elif mode == "scheduled":
        scheduled(route, port, argv[4], argv[5], int(argv[6]), argv[7] if len(argv) > 7 else "")
    elif mode in ("restore", "restore-stopped"):
        restore(route, port, argv[4] if len(argv) > 4 else "", sys.stdin.buffer, start=mode == "restore")
    elif mode == "latest":
        tars = sorted(n for n in os.listdir(argv[4]) if n.endswith(".tar") and not n.startswith("."))
        if not tars:
            raise SystemExit(f"no scheduled backup in {argv[4]} yet")
        with open(f"{argv[4]}/{tars[-1]}", "rb") as fh:
            shutil.copyfileobj(fh, sys.stdout.buffer)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
