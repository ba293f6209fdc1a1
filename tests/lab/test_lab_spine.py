"""The spine on a real Debian 12 lab host: real pyinfra over real SSH, real nginx, real nftables.

Ollama is the stand-in from tests/support/standin (no Ollama binary can be downloaded here), installed from
an archive with the real release layout exactly as a release would be.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ollastack import lab
from tests.support import tlsprobe
from tests.support.labkit import changed_ops, port_open, processes, ssh
from tests.unit.test_ollama_env import NON_DEFAULT

pytestmark = pytest.mark.lab


def https_get(url: str, ca: Path) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, context=context, timeout=15) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def ollama_version(address: str, keypair) -> str:
    out = ssh(address, "curl -fsS 127.0.0.1:11434/api/version", keypair).stdout
    return json.loads(out)["version"]


def test_first_converge_serves_verified_https(converged, lab_stack, lab_host):
    assert converged["results"]["totals"]["error"] == 0
    # Verification uses only the stack CA and checks the host's IP address against the certificate SAN.
    status, body = https_get(f"https://{lab_host['address']}/", lab_stack.ca)
    assert status == 503 and "web UI is not running" in body
    with pytest.raises(urllib.error.URLError):
        https_get(f"https://{lab_host['address']}/", Path(ssl.get_default_verify_paths().cafile))


def test_http_redirects_to_https(converged, lab_host):
    conn = http.client.HTTPConnection(lab_host["address"], 80, timeout=10)
    conn.request("GET", "/some/page?x=1")
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://{lab_host['address']}/some/page?x=1"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_http2_is_negotiated(converged, lab_host, lab_stack):
    """nginx 1.22 (Debian 12) and 1.26 (Debian 13) spell HTTP/2 differently; both must end up serving it."""
    result = subprocess.run(["curl", "-sS", "--http2", "-o", "/dev/null", "-w", "%{http_version}",
                             "--cacert", str(lab_stack.ca), f"https://{lab_host['address']}/"],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout == "2", result.stderr


def test_tls_settings(converged, lab_host, lab_stack):
    # The probe really offers TLS 1.0/1.1 (tests/test_verdicts.py shows it completing with a server that
    # allows them), so the refusal is nginx's: a protocol_version alert, not the client giving up.
    for version in ("tls1", "tls1_1"):
        probe = tlsprobe.offer(lab_host["address"], 443, version)
        assert not probe.done and "alert protocol version" in probe.output, probe.output
    assert tlsprobe.offer(lab_host["address"], 443, "tls1_2").done
    # HSTS comes with every answer, the web UI's own or nginx's placeholder (``always``).
    connection = http.client.HTTPSConnection(lab_host["address"], 443, timeout=10,
                                             context=ssl.create_default_context(cafile=str(lab_stack.ca)))
    connection.request("GET", "/")
    assert connection.getresponse().getheader("Strict-Transport-Security") == "max-age=63072000"
    connection.close()


def test_ollama_private_but_serving_models(converged, lab_host, keypair):
    assert not port_open(lab_host["address"], 11434)
    tags = json.loads(ssh(lab_host["address"], "curl -fsS 127.0.0.1:11434/api/tags", keypair).stdout)
    assert [m["name"] for m in tags["models"]] == ["llama3.2:1b"]


def test_only_ssh_http_https_reachable(converged, lab_host, keypair):
    listening = ssh(lab_host["address"], "ss -Htln | awk '{print $4}'", keypair).stdout.split()
    ports = sorted({int(addr.rsplit(":", 1)[1]) for addr in listening})
    reachable = [p for p in ports if port_open(lab_host["address"], p)]
    assert reachable == [22, 80, 443], (ports, reachable)


def test_ollama_environment_in_systemd(converged, lab_host, keypair):
    env = ssh(lab_host["address"], "systemctl show ollama -p Environment --value", keypair).stdout
    for expected in ("OLLAMA_HOST=127.0.0.1:11434", "OLLAMA_KEEP_ALIVE=5m", "OLLAMA_CONTEXT_LENGTH=4096",
                     "OLLAMA_MODELS=/usr/share/ollama/.ollama/models", "OLLAMA_NUM_PARALLEL=1"):
        assert expected in env
    unit = ssh(lab_host["address"], "systemctl cat ollama", keypair).stdout
    assert "/etc/systemd/system/ollama.service.d/override.conf" in unit
    assert "OLLAMA_HOST" not in unit.split("# /etc/systemd/system/ollama.service.d")[0]


def test_second_converge_changes_nothing(converged, lab_stack):
    _, report = lab_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


def _starts(address: str, keypair, since: str) -> int:
    log = ssh(address, f"journalctl -u ollama --since '{since}' -o cat", keypair).stdout
    return log.count("Started ollama.service")


def test_one_setting_change_restarts_ollama_once(converged, lab_stack, lab_host, keypair):
    since = ssh(lab_host["address"], "date '+%Y-%m-%d %H:%M:%S'", keypair).stdout.strip()
    lab_stack.write(ollama={"keep_alive": "10m"})
    _, report = lab_stack.pyinfra()
    assert changed_ops(report) == ["Ollama | Ollama settings (override.conf)", "Ollama | Reload systemd units",
                                   "Ollama | Restart Ollama", "Ollama | Wait for Ollama to be healthy"]
    assert _starts(lab_host["address"], keypair, since) == 1
    env = ssh(lab_host["address"], "systemctl show ollama -p Environment --value", keypair).stdout
    assert "OLLAMA_KEEP_ALIVE=10m" in env
    _, report = lab_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0
    assert _starts(lab_host["address"], keypair, since) == 1
    lab_stack.write()
    lab_stack.pyinfra()


def test_every_ollama_setting_reaches_systemd(converged, lab_stack, lab_host, keypair):
    """Non-default values of every environment setting (tests/test_ollama_env.py), as systemd runs Ollama with them.

    The models directory stays: a new one would be empty and need a pull through the (unreachable) proxy.
    """
    settings = {key: value for key, (value, _) in NON_DEFAULT.items() if key != "models_dir"}
    lab_stack.write(ollama=settings)
    try:
        _, report = lab_stack.pyinfra()
        assert "Ollama | Restart Ollama" in changed_ops(report)
        env = ssh(lab_host["address"], "systemctl show ollama -p Environment --value", keypair).stdout.split()
        # PATH comes from the unit itself (ollama.service), everything else from override.conf.
        assert sorted(e for e in env if not e.startswith("PATH=")) == sorted(line if key != "models_dir" else "OLLAMA_MODELS=/usr/share/ollama/.ollama/models"
                                     for key, (_, line) in NON_DEFAULT.items())
        version = ssh(lab_host["address"], "curl -fsS 127.0.0.1:11500/api/version", keypair).stdout
        assert json.loads(version)["version"] == "0.13.3"
    finally:
        lab_stack.write()
        lab_stack.pyinfra()


def test_wrong_sha256_fails_before_touching_the_installed_binary(converged, lab_stack, lab_host, keypair, archives):
    """A real 0.13.4 archive whose pin is wrong (a bad mirror, a typo): nothing may be replaced.

    The archive differs from what is installed, so an install that skipped the check would change the binary.
    """
    before = ssh(lab_host["address"], "sha256sum /usr/local/bin/ollama", keypair).stdout
    newer, real = archives["0.13.4"]
    wrong = ("0" if real[0] != "0" else "1") + real[1:]
    lab_stack.write(ollama={"archive": str(newer), "sha256": wrong, "version": "0.13.4"})
    result, _ = lab_stack.pyinfra(check=False)
    assert result.returncode == 1
    assert "does not match" in result.stdout + result.stderr
    assert "not touched" in result.stdout + result.stderr
    assert ssh(lab_host["address"], "sha256sum /usr/local/bin/ollama", keypair).stdout == before
    assert ollama_version(lab_host["address"], keypair) == "0.13.3"


@pytest.fixture()
def archive_server(archives):
    """Serve the 0.13.4 .tar.zst archive from the control machine on the lab bridge (a mirror `url`)."""
    path, _ = archives["0.13.4"]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    gateway = lab._network("10.213.0.0/24")[1]
    server = http.server.ThreadingHTTPServer((gateway, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{gateway}:{server.server_address[1]}/{path.name}"
    server.shutdown()


def test_upgrade_in_place_from_a_mirror_url(converged, lab_stack, lab_host, keypair, archives, archive_server):
    _, sha = archives["0.13.4"]
    lab_stack.write(ollama={"archive": "", "url": archive_server, "sha256": sha, "version": "0.13.4"})
    _, report = lab_stack.pyinfra()
    assert "Ollama | Restart Ollama" in changed_ops(report)
    assert ollama_version(lab_host["address"], keypair) == "0.13.4"
    models = json.loads(ssh(lab_host["address"], "curl -fsS 127.0.0.1:11434/api/tags", keypair).stdout)["models"]
    assert [m["name"] for m in models] == ["llama3.2:1b"]
    _, report = lab_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0


def test_model_pull_error_fails_naming_the_model(converged, lab_stack):
    lab_stack.write(ollama={"models": ["llama3.2:1b", "broken-model:1b"]})
    result, _ = lab_stack.pyinfra(check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert ("pulling broken-model:1b failed (permanent error, not retried): pull model manifest: file does not exist"
            in output)
    assert "trying again" not in output


def test_transient_pull_failure_is_retried(converged, lab_stack, lab_host, keypair):
    lab_stack.write(ollama={"models": ["llama3.2:1b", "flaky-model:1b"]})
    _, report = lab_stack.pyinfra()
    assert "Ollama | Pull model flaky-model:1b" in changed_ops(report)
    tags = json.loads(ssh(lab_host["address"], "curl -fsS 127.0.0.1:11434/api/tags", keypair).stdout)
    assert "flaky-model:1b" in [m["name"] for m in tags["models"]]
    lab_stack.write()


def test_ollastack_up_on_the_lab_prints_a_working_url(converged, lab_stack, lab_host):
    result = lab_stack.ollastack("--json", "up")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["ok"] and report["hosts"][0]["url"] == f"https://{lab_host['address']}/"
    assert "converging with pyinfra" in result.stderr
    status, _ = https_get(report["hosts"][0]["url"], Path(report["ca"]))
    assert status == 503


def test_port_checks_from_the_controller_never_lock_it_out_of_ssh(converged, lab_host, keypair):
    """Trixie's sshd refuses a source after about 15 connections that never authenticate (CI saw a
    whole module fail on it); the lab exempts its controller, so SSH works right after a burst."""
    for _ in range(30):
        with socket.create_connection((lab_host["address"], 22), timeout=10) as sock:
            assert sock.recv(64).startswith(b"SSH-2.0-")
    assert ssh(lab_host["address"], "true", keypair, check=False).returncode == 0


def test_lab_up_two_then_down_leaves_nothing(lab_stack):
    """Runs last: replaces the test stack's single host with two, then removes everything."""
    result = lab_stack.ollastack("--json", "lab", "up", "--hosts", "2")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert len(hosts) == 2
    for host in hosts:
        assert ssh(host["address"], "systemctl is-system-running --wait", lab_stack.keypair,
                   check=False).stdout.strip() in ("running", "degraded")
    pids = [h["pid"] for h in lab.list_hosts(lab_stack.name)]
    assert len(pids) == 2 and all(Path(f"/proc/{pid}").exists() for pid in pids)
    assert all(nspawn_processes(host["name"]) for host in hosts)
    result = lab_stack.ollastack("lab", "down")
    assert result.returncode == 0, result.stderr
    # What this stack had is gone, whatever other stacks run on the machine at the same time.
    mounts = Path("/proc/mounts").read_text()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    for host in hosts:
        assert nspawn_processes(host["name"]) == []
        assert not any(d.exists() for d in lab._cgroup_dirs(host["name"]))
        assert not (lab.lab_dir() / "hosts" / host["name"]).exists()
        assert f"/hosts/{host['name']}/" not in mounts
    assert [h for h in lab.list_hosts() if h["stack"] == lab_stack.name] == []
    # The bridge and its egress rule go with the last lab host on the machine; under the lab's lock, so that
    # another module's `lab up` (CI runs two at once) cannot make them again in between.
    with lab._locked():
        if not lab.list_hosts():
            assert subprocess.run(["ip", "link", "show", lab.BRIDGE], capture_output=True).returncode != 0
            assert subprocess.run(["nft", "list", "table", "ip", lab.NFT_TABLE], capture_output=True).returncode != 0
            assert not (lab.lab_dir() / "hosts").exists() or not list((lab.lab_dir() / "hosts").iterdir())
            assert not any(root.exists() for root in lab._cgroup_roots())


def nspawn_processes(name: str) -> list[int]:
    """Pids of the systemd-nspawn processes booting lab host ``name``."""
    return processes(lambda args: args[0].endswith(b"systemd-nspawn") and f"--machine={name}".encode() in args)
