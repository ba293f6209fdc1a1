"""Open WebUI on real Debian lab hosts, behind the real nginx, talking to the Ollama stand-in.

pip route (Debian 12): the real Open WebUI (pinned release from the package index, CPU torch from
the wheelhouse in ``$PIP_FIND_LINKS``). Container route on Debian 12 (hand-written unit): registries are
out of reach here, so the image is a stand-in (tests/support/webui_standin) packed as a ``podman save``-style
archive and loaded by the deploy exactly like a real Open WebUI archive. The container route on Debian 13
(Quadlet) runs these same tests with the real Open WebUI, from the image built from the PyPI release, in
tests/lab/test_lab_webui_image.py.

Each route has its own stack (``owpip``, ``owctr-boo``) so that these
tests never touch the spine's ``citest`` hosts. Figures (install time, start-to-healthy, RSS) are
printed with ``-s``.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import socket
import ssl
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.test_lab_doctor import doctor, doctor_during, not_ok, restart_ollama
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, port_open, ssh
from tests.support.webui_standin.build_image import STANDIN_IMAGE

pytestmark = pytest.mark.lab

ADMIN = "owner@example.org"


class WebUIStack(LabStack):
    """A LabStack with its own stack name and an ``[openwebui]`` section."""

    #: What the container route runs, for the figures.
    image_label = "stand-in image"

    def __init__(self, name: str, workdir: Path, keypair, archives, openwebui: dict, release: str = "bookworm"):
        self.name = name
        self.release = release
        self.openwebui = openwebui
        super().__init__(workdir, keypair, archives)

    def write(self, ollama: dict | None = None, extra: str = "", openwebui: dict | None = None) -> None:
        settings = dict(self.openwebui, admin_email=ADMIN, offline=True, **(openwebui or {}))
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        super().write(ollama, f"[openwebui]\n{lines}\n\n{extra}")

    def password(self) -> str:
        result = self.ollastack("admin-password")
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def figure(name: str, value: float, unit: str) -> None:
    print(f"\nFIGURE {name}: {value:.1f} {unit}")


# The real Open WebUI shares the 2 cores with another lab module (CI runs two at once, one of them often
# installing another real Open WebUI): once, a sign-in took over a minute to be answered there.
TIMEOUT_S = 180


def request(url: str, ca: Path, body: dict | None = None, token: str = "", method: str = "") -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method or ("POST" if data else "GET"))
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)),
                                    timeout=TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def signin(base: str, ca: Path, email: str, password: str) -> tuple[int, dict]:
    status, body = request(f"{base}/api/v1/auths/signin", ca, {"email": email, "password": password})
    return status, json.loads(body or b"{}")


def reachable_ports(address: str, keypair) -> tuple[list[int], list[int]]:
    listening = ssh(address, "ss -Htln | awk '{print $4}'", keypair).stdout.split()
    ports = sorted({int(addr.rsplit(":", 1)[1]) for addr in listening})
    return ports, [p for p in ports if port_open(address, p)]


def restart_to_healthy(address: str, keypair, port: int = 8080) -> float:
    """Seconds from ``systemctl restart open-webui`` to /health answering 200, measured on the host."""
    out = ssh(address, f"s=$(date +%s.%N); systemctl restart open-webui; "
                       f"for i in $(seq 1200); do curl -fs -o /dev/null 127.0.0.1:{port}/health && break; sleep 0.1; done; "
                       f"curl -fs -o /dev/null 127.0.0.1:{port}/health && python3 -c \"print($(date +%s.%N) - $s)\"", keypair)
    return float(out.stdout.strip())


def rss_mib(address: str, keypair, pid_command: str) -> float:
    """Resident memory of a process and its children (MiB)."""
    pid = ssh(address, pid_command, keypair).stdout.strip()
    out = ssh(address, f"ps -o rss= --pid {pid} --ppid {pid}; pgrep -P {pid} | xargs -r -n1 pgrep -P | "
                       f"xargs -r ps -o rss= --pid", keypair).stdout
    return sum(int(x) for x in out.split()) / 1024


def websocket_status(address: str, ca: Path) -> str:
    """The status line nginx returns to a socket.io WebSocket handshake at /ws/socket.io."""
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((address, 443), timeout=15) as raw, \
            context.wrap_socket(raw, server_hostname=address) as sock:
        sock.sendall((f"GET /ws/socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {address}\r\n"
                      f"Origin: https://{address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


# --- pip route: the real Open WebUI ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pip_stack(tmp_path_factory, keypair, archives):
    wheels = os.environ.get("PIP_FIND_LINKS", "/opt/wheels")
    yield from lab_stack_fixture(lambda: WebUIStack("owpip", tmp_path_factory.mktemp("owpip"), keypair, archives,
                                                    {"install": "pip", "find_links": wheels}))


@pytest.fixture(scope="module")
def pip_host(pip_stack) -> dict:
    return pip_stack.up_one()


@pytest.fixture(scope="module")
def pip_converged(pip_stack, pip_host) -> dict:
    started = time.monotonic()
    process, report = pip_stack.pyinfra()
    figure("pip route: first converge of a bare host (apt, Ollama, Open WebUI, nginx)", time.monotonic() - started, "s")
    install = ssh(pip_host["address"], "python3 -c \"print($(stat -c %Y /opt/open-webui/.ollastack-installed) - "
                                       "$(stat -c %Y /opt/open-webui/pyvenv.cfg))\"", pip_stack.keypair).stdout
    figure("pip route: uv install of Open WebUI + CPU torch (venv created -> installed)", float(install), "s")
    password = pip_stack.password()
    assert password not in process.stdout + process.stderr
    stored = pip_stack.dir / "state" / "owpip.openwebui-admin-password"
    assert stored.stat().st_mode & 0o777 == 0o600 and pip_stack.password() == password
    return {"report": report, "base": f"https://{pip_host['address']}", "password": password}


def test_pip_page_loads_over_verified_https(pip_converged, pip_stack):
    status, body = request(pip_converged["base"] + "/", pip_stack.ca)
    assert status == 200 and b"<title>Open WebUI</title>" in body


def test_pip_admin_signs_in_and_signup_is_refused(pip_converged, pip_stack):
    base, ca = pip_converged["base"], pip_stack.ca
    status, session = signin(base, ca, ADMIN, pip_converged["password"])
    assert status == 200 and session["role"] == "admin"
    assert signin(base, ca, ADMIN, "wrong-password")[0] == 400
    status, _ = request(f"{base}/api/v1/auths/signup", ca,
                        {"email": "visitor@example.org", "password": "Visitor-Pass-1", "name": "Visitor"})
    assert status == 403
    assert signin(base, ca, "visitor@example.org", "Visitor-Pass-1")[0] == 400


def test_pip_models_and_streamed_chat_through_nginx(pip_converged, pip_stack):
    base, ca = pip_converged["base"], pip_stack.ca
    token = signin(base, ca, ADMIN, pip_converged["password"])[1]["token"]
    status, body = request(f"{base}/api/models", ca, token=token)
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["llama3.2:1b"]
    req = urllib.request.Request(f"{base}/api/chat/completions", method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                                 data=json.dumps({"model": "llama3.2:1b", "stream": True,
                                                  "messages": [{"role": "user", "content": "hello there"}]}).encode())
    pieces = []
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)),
                                    timeout=TIMEOUT_S) as response:
        for line in response:
            if line.startswith(b"data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                pieces.append(delta.get("content") or "")
    text = "".join(pieces)
    assert text.startswith("This is the Ollama stand-in (llama3.2:1b) answering: hello there")
    assert len([p for p in pieces if p]) > 3


def test_pip_session_cookie_is_secure(pip_converged, pip_stack, pip_host):
    """The real Open WebUI marks its token cookie Secure (WEBUI_AUTH_COOKIE_SECURE) when signing in."""
    connection = http.client.HTTPSConnection(pip_host["address"], 443, timeout=60,
                                             context=ssl.create_default_context(cafile=str(pip_stack.ca)))
    connection.request("POST", "/api/v1/auths/signin", json.dumps({"email": ADMIN, "password": pip_converged["password"]}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie") or ""
    assert response.status == 200 and cookie.startswith("token=") and "; Secure" in cookie, cookie
    connection.close()


def test_pip_websocket_handshake_through_nginx(pip_converged, pip_stack, pip_host):
    assert websocket_status(pip_host["address"], pip_stack.ca) == "HTTP/1.1 101 Switching Protocols"


def test_pip_runs_unprivileged_with_data_outside_the_venv(pip_converged, pip_host, keypair):
    address = pip_host["address"]
    assert ssh(address, "ps -o user= -p $(systemctl show -p MainPID --value open-webui)", keypair).stdout.strip() \
        == "open-webui"
    assert ssh(address, "test -f /var/lib/open-webui/data/webui.db && stat -c %a /etc/open-webui/secret-key.env "
                        "/etc/open-webui/admin.env", keypair).stdout.split() == ["600", "600"]
    env = ssh(address, "systemctl show open-webui -p Environment --value", keypair).stdout
    assert "ENABLE_SIGNUP=false" in env and "OLLAMA_BASE_URL=http://127.0.0.1:11434" in env
    assert "WEBUI_SECRET_KEY" not in env and "PASSWORD" not in env


def test_pip_only_ssh_http_https_reachable(pip_converged, pip_host, keypair):
    ports, reachable = reachable_ports(pip_host["address"], keypair)
    assert 8080 in ports and reachable == [22, 80, 443], (ports, reachable)


def test_pip_second_converge_changes_nothing(pip_converged, pip_stack):
    started = time.monotonic()
    _, report = pip_stack.pyinfra()
    figure("pip route: no-op re-run of the whole site", time.monotonic() - started, "s")
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


def test_pip_restart_keeps_sessions(pip_converged, pip_stack, pip_host, keypair):
    base, ca = pip_converged["base"], pip_stack.ca
    token = signin(base, ca, ADMIN, pip_converged["password"])[1]["token"]
    figure("pip route: restart -> /health", restart_to_healthy(pip_host["address"], keypair), "s")
    figure("pip route: Open WebUI RSS after start", rss_mib(pip_host["address"], keypair,
                                                               "systemctl show -p MainPID --value open-webui"), "MiB")
    status, body = request(f"{base}/api/v1/auths/", ca, token=token)
    assert status == 200 and json.loads(body)["email"] == ADMIN


def test_pip_doctor_reads_the_real_open_webui(pip_converged, pip_stack, pip_host):
    """doctor's Open WebUI checks against the real 0.12.4 (the doctor modules use the stand-in image):
    all ok on the converged host; with Ollama stopped, Open WebUI's own view of the connection fails."""
    code, report = doctor(pip_stack)
    checks = {c["name"]: c for c in report["hosts"][0]["checks"]}
    assert code == 0 and not_ok(report) == {}, not_ok(report)
    assert checks["open webui -> ollama"]["detail"].startswith("Open WebUI reaches Ollama ")
    code, report = doctor_during(pip_host, pip_stack, "systemctl stop ollama", restart_ollama)
    problems = not_ok(report)
    assert code == 1 and "open webui health" not in problems, problems
    assert {"service ollama", "open webui -> ollama"} <= set(problems)
    assert "could not connect to Ollama" in problems["open webui -> ollama"]["detail"]


def test_pip_changed_ollama_url_applies(pip_converged, pip_stack, pip_host, keypair):
    """A second Ollama stand-in on 127.0.0.1:11500 with another model; the stack points Open WebUI at it."""
    address = pip_host["address"]
    ssh(address, "systemctl is-active -q ollama-second || systemd-run -q --unit ollama-second "
                 "-E OLLAMA_HOST=127.0.0.1:11500 -E OLLAMA_MODELS=/var/tmp/second /usr/local/bin/ollama serve; "
                 "for i in $(seq 50); do curl -fs 127.0.0.1:11500/api/version && break; sleep 0.2; done; "
                 "curl -fsS 127.0.0.1:11500/api/pull -d '{\"model\": \"qwen2.5:0.5b\", \"stream\": false}'", keypair)
    try:
        pip_stack.write(openwebui={"ollama_url": "http://127.0.0.1:11500"})
        _, report = pip_stack.pyinfra()
        assert "Open WebUI | Restart Open WebUI" in changed_ops(report)
        base, ca = pip_converged["base"], pip_stack.ca
        token = signin(base, ca, ADMIN, pip_converged["password"])[1]["token"]
        status, body = request(f"{base}/api/models", ca, token=token)
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["qwen2.5:0.5b"]
    finally:
        pip_stack.write()
        pip_stack.pyinfra()
        ssh(address, "systemctl stop ollama-second", keypair, check=False)


# --- container route: an image loaded from an archive ---------------------------------------------

def container_stack(name: str, release: str, tmp_path_factory, keypair, archives, image: Path) -> Iterator[WebUIStack]:
    """Body of a module's stack fixture: the container route with the stand-in ``image`` on ``release``."""
    yield from lab_stack_fixture(lambda: WebUIStack(
        name, tmp_path_factory.mktemp(name), keypair, archives,
        {"install": "container", "image": STANDIN_IMAGE, "image_archive": str(image)}, release=release))


@pytest.fixture(scope="module", params=["bookworm"])
def ctr_stack(request, tmp_path_factory, keypair, archives, standin_image):
    """The container route's stack with the stand-in image: a hand-written unit on Debian 12 (Debian 13's Quadlet
    runs the tests below with the real Open WebUI in test_lab_webui_image.py)."""
    yield from container_stack(f"owctr-{request.param[:3]}", request.param, tmp_path_factory, keypair, archives,
                               standin_image)


@pytest.fixture(scope="module")
def ctr_host(ctr_stack) -> dict:
    return ctr_stack.up_one()


@pytest.fixture(scope="module")
def ctr_converged(ctr_stack, ctr_host) -> dict:
    started = time.monotonic()
    _, report = ctr_stack.pyinfra()
    figure(f"container route ({ctr_stack.release}): first converge of a bare host (apt incl. Podman, image load, "
           "nginx)", time.monotonic() - started, "s")
    return report


def container_id(address: str, keypair) -> str:
    return ssh(address, "podman inspect -f '{{.Id}}' open-webui", keypair, check=False).stdout.strip()


def wait_for(condition, seconds: float = 90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    raise AssertionError(f"not true within {seconds} s: {condition.__doc__ or condition}")


def test_container_unit_runs_the_loaded_image(ctr_converged, ctr_host, keypair, ctr_stack):
    address = ctr_host["address"]
    info = json.loads(ssh(address, "podman inspect open-webui", keypair).stdout)[0]
    assert info["ImageName"] == STANDIN_IMAGE
    # openwebui.autoupdate is off by default: only a converge changes the image.
    assert "io.containers.autoupdate" not in (info["Config"]["Labels"] or {})
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert ssh(address, "systemctl is-enabled podman-auto-update.timer", keypair, check=False).stdout.strip() == "disabled"
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["HOST"] == "127.0.0.1" and env["WEBUI_ADMIN_EMAIL"] == ADMIN
    assert env["WEBUI_ADMIN_PASSWORD"] == ctr_stack.password() and len(env["WEBUI_SECRET_KEY"]) == 64
    status, body = request(f"https://{address}/health", ctr_stack.ca)
    assert status == 200 and json.loads(body)["status"] is True


def test_container_unprivileged_on_the_host(ctr_converged, ctr_host, keypair):
    """Root in the container is an unprivileged uid on the host, with no capabilities and no way to gain any."""
    address = ctr_host["address"]
    pid = ssh(address, "podman inspect -f '{{.State.Pid}}' open-webui", keypair).stdout.strip()
    status = dict(line.split(":", 1) for line in ssh(address, f"cat /proc/{pid}/status", keypair).stdout.splitlines())
    uids, gids = status["Uid"].split(), status["Gid"].split()
    assert int(uids[0]) > 65535 and int(gids[0]) > 65535 and len(set(uids)) == 1, (uids, gids)
    assert ssh(address, f"ps -o uid= -p {pid}", keypair).stdout.strip() == uids[0]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    # The volume belongs to that uid (":U"), so the app can write its data.
    owner = ssh(address, "stat -c %u $(podman volume inspect -f '{{.Mountpoint}}' open-webui)", keypair).stdout.strip()
    assert owner == uids[0]


def test_container_reachable_through_nginx_only(ctr_converged, ctr_host, keypair):
    ports, reachable = reachable_ports(ctr_host["address"], keypair)
    assert 8080 in ports and reachable == [22, 80, 443], (ports, reachable)
    listening = ssh(ctr_host["address"], "ss -Htln 'sport = :8080' | awk '{print $4}'", keypair).stdout.split()
    assert listening == ["127.0.0.1:8080"]


def test_container_second_converge_changes_nothing(ctr_converged, ctr_stack):
    started = time.monotonic()
    _, report = ctr_stack.pyinfra()
    figure(f"container route ({ctr_stack.release}): no-op re-run of the whole site", time.monotonic() - started, "s")
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


def rebuilt(archive: Path, dest: Path) -> str:
    """Write to ``dest`` another build of ``archive``'s image: same tag and layers, one more label. Returns the id
    Podman will give it (its config blob's sha256)."""
    with tarfile.open(archive) as source, tarfile.open(dest, "w") as target:
        manifest = json.load(source.extractfile("manifest.json"))
        config = json.load(source.extractfile(manifest[0]["Config"]))
        config["config"].setdefault("Labels", {})["rebuilt"] = "yes"
        blob = json.dumps(config, sort_keys=True).encode()
        image_id = hashlib.sha256(blob).hexdigest()
        for member in source.getmembers():
            if member.name not in ("manifest.json", manifest[0]["Config"]):
                target.addfile(member, source.extractfile(member))
        manifest[0]["Config"] = f"{image_id}.json"
        for name, data in ((manifest[0]["Config"], blob), ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            target.addfile(info, io.BytesIO(data))
    return image_id


def test_container_image_follows_the_archive_by_id(ctr_converged, ctr_host, keypair, ctr_stack, tmp_path):
    """A converge compares the host's image id with the archive's instead of checksumming the archive: a new
    build under the same tag is loaded and run, and a removed image is loaded again."""
    address, load = ctr_host["address"], f"Open WebUI | Load {STANDIN_IMAGE} from the archive"

    def image_id() -> str:
        return ssh(address, f"podman image inspect --format '{{{{.Id}}}}' {STANDIN_IMAGE}", keypair, check=False).stdout.strip()

    def healthy():
        """the container answers /health"""
        return ssh(address, "curl -fs 127.0.0.1:8080/health", keypair, check=False).returncode == 0
    original = image_id()
    new_id = rebuilt(Path(ctr_stack.openwebui["image_archive"]), tmp_path / "rebuilt.tar")
    try:
        ctr_stack.write(openwebui={"image_archive": str(tmp_path / "rebuilt.tar")})
        _, report = ctr_stack.pyinfra()
        assert {load, "Open WebUI | Restart Open WebUI"} <= set(changed_ops(report)), changed_ops(report)
        assert image_id() == new_id != original
        info = json.loads(ssh(address, "podman inspect open-webui", keypair).stdout)[0]
        assert info["Image"] == new_id
    finally:
        ctr_stack.write()
    ssh(address, f"podman rm -f open-webui; podman rmi -f {STANDIN_IMAGE}", keypair)
    _, report = ctr_stack.pyinfra()
    assert load in changed_ops(report), changed_ops(report)
    assert image_id() == original
    wait_for(healthy)
    _, report = ctr_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


def test_container_restarted_after_being_killed(ctr_converged, ctr_host, keypair, ctr_stack):
    address = ctr_host["address"]
    before = container_id(address, keypair)
    ssh(address, "podman kill open-webui", keypair)

    def replaced():
        """a new open-webui container answers /health"""
        now = container_id(address, keypair)
        healthy = ssh(address, "curl -fs 127.0.0.1:8080/health", keypair, check=False).returncode == 0
        return now and now != before and healthy
    wait_for(replaced)
    label = f"container route ({ctr_stack.release}, {ctr_stack.image_label})"
    figure(f"{label}: restart -> /health", restart_to_healthy(address, keypair), "s")
    figure(f"{label}: app RSS", rss_mib(address, keypair, "podman inspect -f '{{.State.Pid}}' open-webui"), "MiB")


def test_container_data_volume_survives_removal(ctr_converged, ctr_host, keypair, ctr_stack):
    address = ctr_host["address"]
    # The stand-in image has Python but no shell (the built image has both).
    ssh(address, "podman exec open-webui python3.11 -c \"open('/app/backend/data/marker.txt', 'w').write('kept')\"",
        keypair)
    ssh(address, "podman rm -f open-webui", keypair)
    ctr_stack.pyinfra()

    def back():
        """the container runs again and answers /health"""
        return ssh(address, "curl -fs 127.0.0.1:8080/health", keypair, check=False).returncode == 0
    wait_for(back)
    read = "podman exec open-webui python3.11 -c \"print(open('/app/backend/data/marker.txt').read())\""
    assert ssh(address, read, keypair).stdout.strip() == "kept"


def test_container_restart_keeps_the_secret_key(ctr_converged, ctr_host, keypair, ctr_stack):
    """Sessions are signed with WEBUI_SECRET_KEY (the stand-in does as Open WebUI): a token outlives a restart."""
    base, ca = f"https://{ctr_host['address']}", ctr_stack.ca
    status, session = signin(base, ca, ADMIN, ctr_stack.password())
    assert status == 200
    ssh(ctr_host["address"], "systemctl restart open-webui", keypair)
    wait_for(lambda: request(f"{base}/health", ca)[0] == 200)
    status, body = request(f"{base}/api/v1/auths/", ca, token=session["token"])
    assert status == 200 and json.loads(body)["email"] == ADMIN


def test_container_changed_ollama_url_applies(ctr_converged, ctr_host, keypair, ctr_stack):
    base, ca = f"https://{ctr_host['address']}", ctr_stack.ca
    try:
        ctr_stack.write(openwebui={"ollama_url": "http://127.0.0.1:11500"})
        _, report = ctr_stack.pyinfra()
        assert "Open WebUI | Restart Open WebUI" in changed_ops(report)
        status, body = request(f"{base}/api/config", ca)
        assert status == 200 and json.loads(body)["ollama_base_url"] == "http://127.0.0.1:11500"
    finally:
        ctr_stack.write()
        ctr_stack.pyinfra()


def test_container_unit_per_release(ctr_converged, ctr_host, keypair, ctr_stack):
    """Debian 13: open-webui.service is generated from the Quadlet file; Debian 12: the hand-written unit."""
    address = ctr_host["address"]
    show = ssh(address, "systemctl show open-webui -p FragmentPath -p SourcePath -p ExecStart", keypair).stdout
    props = dict(line.split("=", 1) for line in show.splitlines() if "=" in line)
    assert ctr_stack.password() not in show
    files_present = ssh(address, "ls /etc/systemd/system/open-webui.service /etc/containers/systemd/open-webui.container "
                                 "2>/dev/null; true", keypair).stdout.split()
    enabled = ssh(address, "systemctl is-enabled open-webui", keypair, check=False).stdout.strip()
    if ctr_stack.release == "trixie":
        assert props["SourcePath"] == "/etc/containers/systemd/open-webui.container"
        assert props["FragmentPath"] == "/run/systemd/generator/open-webui.service"
        assert files_present == ["/etc/containers/systemd/open-webui.container"]
        assert enabled == "generated"
        ssh(address, "test -L /run/systemd/generator/multi-user.target.wants/open-webui.service", keypair)
    else:
        assert props["FragmentPath"] == "/etc/systemd/system/open-webui.service"
        assert files_present == ["/etc/systemd/system/open-webui.service"]
        assert enabled == "enabled"


@pytest.mark.releases("trixie")  # Debian 12 ships the pip route's Python 3.11
def test_pip_route_refused_at_converge_without_python(ctr_converged, ctr_host, keypair, ctr_stack):
    """A host whose release only the converge learns (static hosts, custom images) — here the route is forced
    past validation with pyinfra's --data: the converge stops before changing anything and names the way out."""
    address, probe = ctr_host["address"], "/etc/systemd/system/ollama.service.d/override.conf"
    # A drift the converge would repair before it reaches Open WebUI: still there afterwards means nothing ran.
    ssh(address, f"cp -p {probe} /root/probe.bak && echo '# drift' >> {probe}", keypair)
    try:
        process, _ = ctr_stack.pyinfra("--data", "ollastack_openwebui_install=pip", check=False)
        assert ssh(address, f"tail -n1 {probe}", keypair).stdout.strip() == "# drift"
    finally:
        ssh(address, f"mv /root/probe.bak {probe}", keypair)
    assert process.returncode == 1
    output = process.stdout + process.stderr
    assert 'openwebui.install = "pip" needs Python 3.11 or 3.12, which Debian 13 (trixie) does not ship' in output
    assert 'set openwebui.install = "container"' in output
