"""``ollastack doctor`` and ``ollastack logs`` on the control machine: parsing what a host answers, each
check's verdict, and the CLI's exit codes with a fake ``ssh`` replaying a host's probe output (the lab
module tests/test_lab_doctor.py runs the same against a real host)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import jinja2
import pytest

from ollastack import cli, doctor, logs
from ollastack.config import parse_stack
from ollastack.deploy.ollama import environment
from ollastack.deploy.units import systemd_quoted
from ollastack.hostdata import host_data
from tests.support.repo import REPO
from tests.support.controlkit import fake_host, fake_ssh, loopback_address
from tests.integration.test_standin import Ollama, free_port

SS = """\
LISTEN 0      511          0.0.0.0:80        0.0.0.0:*    users:(("nginx",pid=812,fd=6),("nginx",pid=811,fd=6))
LISTEN 0      511          0.0.0.0:443       0.0.0.0:*    users:(("nginx",pid=812,fd=7),("nginx",pid=811,fd=7))
LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=301,fd=3))
LISTEN 0      4096       127.0.0.1:11434     0.0.0.0:*    users:(("ollama",pid=977,fd=3))
LISTEN 0      511             [::]:80           [::]:*    users:(("nginx",pid=812,fd=8),("nginx",pid=811,fd=8))
"""
CGROUPS = """\
811 0::/system.slice/nginx.service
812 0::/system.slice/nginx.service
301 0::/system.slice/ssh.service
977 0::/system.slice/ollama.service
"""
TAGS = {"models": [{"name": "llama3.2:1b", "size": 1_321_098_329}]}


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 test\n")
    private.write_text("key\n")

    def make(**sections):
        data = {"stack": {"name": "doctorunit", "provider": "static"},
                "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                "static": {"hosts": [loopback_address()]}, "openwebui": {"install": "none"}, **sections}
        return parse_stack(data)

    return make


def override_text(stack) -> str:
    """override.conf exactly as the deploy writes it (its template and quoting)."""
    template = jinja2.Template((REPO / "templates/ollama-override.conf.j2").read_text())
    env = environment(SimpleNamespace(**host_data(stack)))
    return template.render(environment={k: systemd_quoted(v) for k, v in env.items()})


def healthy(stack, **replace: str) -> dict[str, str]:
    """The probe sections a healthy converged host answers for ``stack``; ``replace`` swaps sections."""
    env = environment(SimpleNamespace(**host_data(stack)))
    probe = {
        "services": "\n".join(f"{unit} active" for unit in doctor.units(stack).values()),
        "listeners": SS, "cgroups": CGROUPS, "tags": json.dumps(TAGS), "ps": json.dumps({"models": []}),
        "nginx": "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
                 "nginx: configuration file /etc/nginx/nginx.conf test is successful\nexit=0",
        "webui": "000", "webuiollama": 'signin=200\n{"version": "0.13.3"}\nstatus=200', "override": override_text(stack),
        "liveenv": "\n".join(f"{k}={v}" for k, v in env.items()), "journal": "", "webuijournal": "",
        "disk": "Filesystem 1-blocks Used Available Capacity Mounted on\n"
                "/dev/vda 270553210880 25769803776 84825604096 24% /",
        "gpu": "", "gpuapps": "", "pci": "0", "end": ""}
    probe.update(replace)
    return probe


def verdicts(stack, probe) -> dict[str, doctor.Check]:
    return {c.name: c for check in doctor.HOST_CHECKS for c in check(stack, probe)}


def problems(stack, probe) -> dict[str, doctor.Check]:
    return {name: c for name, c in verdicts(stack, probe).items() if c.status != doctor.OK}


def test_sections_split_the_probe_output():
    output = "motd line\n\n@@doctor:tags\n{\"models\": []}\n\n@@doctor:nginx\nline 1\nline 2\n@@doctor:end\n"
    assert doctor.sections(output) == {"tags": '{"models": []}', "nginx": "line 1\nline 2", "end": ""}


def test_parse_listeners_reads_ss_and_the_units():
    listeners = doctor.parse_listeners(SS, CGROUPS)
    assert doctor.Listener("0.0.0.0", 80, (("nginx", 812), ("nginx", 811)), "nginx.service") in listeners
    assert doctor.Listener("::", 80, (("nginx", 812), ("nginx", 811)), "nginx.service") in listeners
    assert doctor.Listener("127.0.0.1", 11434, (("ollama", 977),), "ollama.service") in listeners
    squatter = doctor.parse_listeners(
        'LISTEN 0 5 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=1234,fd=3))',
        "1234 0::/user.slice/user-0.slice/session-4.scope")[0]
    assert squatter.holder() == "python3 (pid 1234) in session-4.scope"
    assert doctor.parse_listeners("State Recv-Q\nnot a line\n", "") == []
    # Podman 4.3's hand-written unit: the container has its own scope; its parent conmon is in the unit.
    container = doctor.parse_listeners(
        'LISTEN 0 2048 127.0.0.1:8080 0.0.0.0:* users:(("python3.11",pid=1409,fd=3))',
        "1409 0::/machine.slice/libpod-91e3.scope/container\n1409 ppid=1398\n"
        "1398 0::/system.slice/open-webui.service\n")[0]
    assert container.unit == "open-webui.service"
    assert doctor.parse_listeners(
        'LISTEN 0 2048 127.0.0.1:8080 0.0.0.0:* users:(("python3.11",pid=1409,fd=3))',
        "1409 0::/machine.slice/libpod-91e3.scope/container\n")[0].unit == "libpod-91e3.scope"


def test_journal_findings_count_each_known_line():
    lines = ["time=... level=ERROR msg=\"CUDA error: out of memory\"",
             "level=WARN msg=\"truncating input prompt\" limit=4096 prompt=5210",
             "cuda error: OUT OF MEMORY (second)", "an unrelated line"]
    found = doctor.journal_findings(lines)
    assert found == {"CUDA error: out of memory": (2, "cuda error: OUT OF MEMORY (second)"),
                     "truncating input prompt": (1, lines[1])}


def test_parse_environment_reads_what_the_deploy_writes(stack):
    s = stack(ollama={"https_proxy": "http://proxy.example.com:3128"})
    assert doctor.parse_environment(override_text(s)) == environment(SimpleNamespace(**host_data(s)))
    assert doctor.parse_environment('Environment="A=50%% \\"x\\" \\\\ y"\n') == {"A": '50% "x" \\ y'}


def test_a_healthy_host_passes_every_check(stack):
    s = stack()
    checks = verdicts(s, healthy(s))
    assert problems(s, healthy(s)) == {}
    assert {"service ollama", "service nginx", "service ollastack-firewall", "port 80 (HTTP)",
            "port 11434 (Ollama's API)", "port 8080 (Open WebUI)", "model llama3.2:1b", "nginx config",
            "ollama settings", "journal ollama", "disk", "gpu"} <= set(checks)


def test_letsencrypt_and_open_webui_add_their_units(stack):
    s = stack(openwebui={"install": "container"}, tls={"mode": "letsencrypt", "email": "a@example.com",
                                                      "domain": "chat.example.com"})
    assert list(doctor.units(s).values()) == ["ollastack-firewall", "ollama", "nginx", "open-webui", "certbot.timer"]
    probe = healthy(s, services="ollastack-firewall active\nollama active\nnginx active\nopen-webui active\n"
                                "certbot.timer inactive")
    assert set(problems(s, probe)) == {"service certbot.timer", "port 8080 (Open WebUI)", "open webui health"}
    assert "ollastack logs certbot" in problems(s, probe)["service certbot.timer"].fix


def test_each_fault_is_named_with_its_fix(stack):
    s = stack()
    stopped = healthy(s, services="ollastack-firewall active\nollama failed\nnginx active",
                      listeners="\n".join(line for line in SS.splitlines() if "11434" not in line),
                      tags="curl: (7) Failed to connect to 127.0.0.1 port 11434: Connection refused")
    assert set(problems(s, stopped)) == {"service ollama", "port 11434 (Ollama's API)", "ollama api"}
    assert "ollastack logs ollama" in problems(s, stopped)["service ollama"].fix

    deleted = healthy(s, tags=json.dumps({"models": []}))
    assert set(problems(s, deleted)) == {"model llama3.2:1b"}

    edited = healthy(s, override=override_text(s).replace("OLLAMA_KEEP_ALIVE=5m", "OLLAMA_KEEP_ALIVE=-1"))
    assert problems(s, edited)["ollama settings"].detail.endswith("OLLAMA_KEEP_ALIVE=-1 (stack: 5m)")
    assert set(problems(s, edited)) == {"ollama settings"}

    added = healthy(s, override=override_text(s) + 'Environment="OLLAMA_DEBUG=1"\n')
    assert "OLLAMA_DEBUG=1 (not set by the stack)" in problems(s, added)["ollama settings"].detail

    not_restarted = healthy(s, liveenv="OLLAMA_KEEP_ALIVE=30m")
    assert problems(s, not_restarted)["ollama settings"].status == doctor.WARN

    squatter = 'LISTEN 0 5 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=4242,fd=3))\n'
    squatted = healthy(s, listeners=SS + squatter, cgroups=CGROUPS + "4242 0::/system.slice/squat.service\n")
    # Without Open WebUI, what listens on its port is the operator's own (nginx proxies to it).
    assert problems(s, squatted) == {}
    assert "yours" in verdicts(s, squatted)["port 8080 (Open WebUI)"].detail
    webui = stack(openwebui={"install": "container"})
    squatted = healthy(webui, listeners=SS + squatter, cgroups=CGROUPS + "4242 0::/system.slice/squat.service\n",
                       webui="200")
    check = problems(webui, squatted)["port 8080 (Open WebUI)"]
    assert set(problems(webui, squatted)) == {"port 8080 (Open WebUI)"}
    assert "python3 (pid 4242) in squat.service" in check.detail and "kill 4242" in check.fix
    assert "nginx serves it" in check.fix

    broken = healthy(s, nginx="nginx: [emerg] unknown directive \"this\" in /etc/nginx/conf.d/x.conf:1\n"
                              "nginx: configuration file /etc/nginx/nginx.conf test failed\nexit=1")
    assert "unknown directive" in problems(s, broken)["nginx config"].detail

    full = healthy(s, disk="Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/loop0 1073741824 "
                           "900000000 173741824 84% /srv/models")
    assert problems(s, full)["disk"].status == doctor.FAIL
    tight = healthy(s, disk="Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/loop0 4294967296 "
                            "3294967296 1000000000 77% /srv/models")
    assert problems(s, tight)["disk"].status == doctor.WARN


def df(free: int) -> str:
    return f"Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/loop0 {free * 2} {free} {free} 50% /srv/models"


def test_disk_against_the_models_still_to_pull(stack):
    s = stack(ollama={"models": ["llama3.2:1b", "qwen2.5:7b", "tinyllama"]})
    short = problems(s, healthy(s, disk=df(3 * 10**9)))
    assert set(short) == {"disk", "model qwen2.5:7b", "model tinyllama"}
    assert short["disk"].status == doctor.FAIL and "ollastack up" in short["disk"].fix
    assert "need about 3.9 GiB: qwen2.5:7b ~4.2 GB, tinyllama (size unknown)" in short["disk"].detail
    assert set(problems(s, healthy(s, disk=df(5 * 10**9)))) == {"model qwen2.5:7b", "model tinyllama"}
    # Pulled models count by their real size: less free space than the largest is a warning.
    pulled = stack(ollama={"models": ["llama3.2:1b"]})
    assert problems(pulled, healthy(pulled, disk=df(10**9)))["disk"].status == doctor.WARN
    assert problems(pulled, healthy(pulled, disk=df(2 * 10**9))) == {}


def test_open_webui_stopped(stack):
    s = stack(openwebui={"install": "container"})
    probe = healthy(s, services="ollastack-firewall active\nollama active\nnginx active\nopen-webui inactive",
                    webui="000", webuijournal="")
    found = problems(s, probe)
    assert set(found) == {"service open-webui", "port 8080 (Open WebUI)", "open webui health"}
    assert "ollastack logs openwebui" in found["service open-webui"].fix
    assert found["port 8080 (Open WebUI)"].detail == "nothing listens"
    refused = healthy(s, services=probe["services"].replace("inactive", "active"), webui="200",
                      listeners=SS + 'LISTEN 0 2048 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=55,fd=9))',
                      cgroups=CGROUPS + "55 0::/system.slice/open-webui.service/libpod-payload-abc\n",
                      webuijournal="ERROR | Connection error: Cannot connect to host 127.0.0.1:11434 "
                                   "[Connection refused]")
    assert set(problems(s, refused)) == {"journal openwebui: connection refused"}


def test_parse_webui_ollama_reads_the_section():
    assert doctor.parse_webui_ollama('signin=200\n{"version": "0.13.3"}\nstatus=200') == (
        "200", "200", {"version": "0.13.3"})
    assert doctor.parse_webui_ollama("signin=000") == ("000", "", None)
    assert doctor.parse_webui_ollama("") == ("", "", None)
    assert doctor.parse_webui_ollama('signin=200\ncurl: (28) timed out\nstatus=000') == ("200", "000", None)


def test_open_webuis_view_of_ollama(stack):
    s = stack(openwebui={"install": "container"})
    up = "ollastack-firewall active\nollama active\nnginx active\nopen-webui active"
    listeners = SS + 'LISTEN 0 2048 127.0.0.1:8080 0.0.0.0:* users:(("python3",pid=55,fd=9))'
    cgroups = CGROUPS + "55 0::/system.slice/open-webui.service/libpod-payload-abc\n"

    def view(section: str, webui: str = "200") -> dict[str, doctor.Check]:
        return problems(s, healthy(s, services=up, listeners=listeners, cgroups=cgroups, webui=webui,
                                   webuiollama=section))

    assert view('signin=200\n{"version": "0.13.3"}\nstatus=200') == {}
    assert verdicts(s, healthy(s, services=up, listeners=listeners, cgroups=cgroups, webui="200"))[
        "open webui -> ollama"].detail == "Open WebUI reaches Ollama 0.13.3"
    lost = view('signin=200\n{"detail": "WebUI could not connect to Ollama"}\nstatus=500')
    assert set(lost) == {"open webui -> ollama"} and lost["open webui -> ollama"].status == doctor.FAIL
    assert "WebUI could not connect to Ollama" in lost["open webui -> ollama"].detail
    assert "Admin Settings > Connections" in lost["open webui -> ollama"].fix
    off = view('signin=200\n{"version": false}\nstatus=200')["open webui -> ollama"]
    assert off.status == doctor.FAIL and "turned off" in off.detail
    refused = view("signin=400")["open webui -> ollama"]
    assert refused.status == doctor.WARN and "openwebui.admin_password" in refused.fix
    assert "again in a few minutes" in view("signin=429")["open webui -> ollama"].fix
    # Open WebUI down: its health check says so; its view of Ollama is not asked.
    assert "open webui -> ollama" not in verdicts(s, healthy(s, services=up, webui="000", webuiollama=""))
    assert "open webui -> ollama" not in verdicts(stack(), healthy(stack(), webui="200"))


def test_probe_asks_open_webui_about_ollama_with_the_admin_on_stdin(stack, binary, tmp_path):
    """The probe's script itself, run here against the Open WebUI and Ollama stand-ins on loopback."""
    ollama = Ollama(binary, tmp_path / "models", tmp_path / "ollama.log").start()
    port, password = free_port(), "Doctor-Admin-Pass-1"
    env = dict(os.environ, HOST="127.0.0.1", PORT=str(port), DATA_DIR=str(tmp_path / "webui"),
               WEBUI_SECRET_KEY="k" * 64, WEBUI_ADMIN_EMAIL="owner@example.org", WEBUI_ADMIN_PASSWORD=password,
               OLLAMA_BASE_URL=ollama.url)
    webui = subprocess.Popen([sys.executable, str(REPO / "tests/support/webui_standin/app.py")], env=env)
    s = stack(openwebui={"install": "container", "port": port, "admin_email": "owner@example.org",
                         "admin_password": password})

    def probe() -> dict[str, doctor.Check]:
        result = subprocess.run(["sh", "-c", doctor.PROBE, "doctor", ollama.url, str(tmp_path), str(port)],
                                input=doctor.signin_body(s), capture_output=True, text=True, timeout=120)
        sections = doctor.sections(result.stdout)
        assert password not in result.stdout + result.stderr
        return {c.name: c for c in doctor.check_webui(s, sections) + doctor.check_webui_ollama(s, sections)}

    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        seen = probe()
        assert seen["open webui health"].status == doctor.OK
        assert seen["open webui -> ollama"].status == doctor.OK, seen
        ollama.stop()
        seen = probe()
        assert seen["open webui health"].status == doctor.OK
        assert seen["open webui -> ollama"].status == doctor.FAIL
        assert "500: WebUI could not connect to Ollama" in seen["open webui -> ollama"].detail
    finally:
        webui.terminate()
        webui.wait(timeout=10)
        if ollama.proc.poll() is None:
            ollama.stop()


def test_the_admin_password_goes_to_the_host_on_stdin_only(stack, monkeypatch):
    s = stack(openwebui={"install": "container", "admin_password": "Doctor-Admin-Pass-1"})
    seen = {}

    def fake_run(argv, **kwargs):
        seen.update(argv=argv, **kwargs)
        return subprocess.CompletedProcess(argv, 255, "", "refused")

    monkeypatch.setattr(doctor.subprocess, "run", fake_run)
    doctor.probe_host(s, doctor.providers.get("static").hosts(s)[0])
    assert "Doctor-Admin-Pass-1" not in " ".join(seen["argv"])
    assert json.loads(seen["input"]) == {"email": "admin@example.com", "password": "Doctor-Admin-Pass-1"}
    assert doctor.signin_body(stack()) == ""


def test_journal_lines_come_with_counts_and_advice(stack):
    s = stack()
    probe = healthy(s, journal="CUDA error: out of memory\nCUDA error: out of memory\n"
                               "failure during GPU discovery\n" + "starting runner\n" * 3)
    found = problems(s, probe)
    assert set(found) == {"journal ollama: CUDA error: out of memory", "journal ollama: failure during GPU discovery"}
    assert found["journal ollama: CUDA error: out of memory"].detail.startswith("2 line(s)")
    churn = healthy(s, journal="starting runner\n" * doctor.RUNNER_STARTS_WARN)
    assert problems(s, churn)["journal ollama: starting runner"].status == doctor.WARN


def test_gpu_checks(stack):
    s = stack()
    smi = "Tesla T4, 570.172.08, 15360, 1200"
    loaded = {"models": [{"name": "llama3.2:1b", "size": 1_321_098_329, "size_vram": 0}]}
    found = problems(s, healthy(s, gpu=smi, pci="1", ps=json.dumps(loaded)))
    assert set(found) == {"loaded llama3.2:1b"} and found["loaded llama3.2:1b"].status == doctor.FAIL
    assert found["loaded llama3.2:1b"].detail.startswith("size_vram 0: running on the CPU")
    loaded["models"][0]["size_vram"] = 660_000_000
    assert problems(s, healthy(s, gpu=smi, pci="1", ps=json.dumps(loaded)))["loaded llama3.2:1b"].status == doctor.WARN
    loaded["models"][0]["size_vram"] = 1_321_098_329
    assert problems(s, healthy(s, gpu=smi, pci="1", ps=json.dumps(loaded))) == {}
    lost = problems(s, healthy(s, pci="1"))
    assert lost["gpu driver"].status == doctor.FAIL
    assert problems(s, healthy(s, gpu="Tesla T4, 550.54.15, 15360, 100", pci="1"))["gpu Tesla T4"].status == doctor.WARN
    others = healthy(s, gpu=smi, pci="1", gpuapps="4321, /usr/bin/python3, 9000")
    assert "9000 MiB" in problems(s, others)["gpu memory"].detail
    assert problems(stack(gpu={"mode": "required"}), healthy(s))["gpu driver"].status == doctor.FAIL
    assert "gpu" not in verdicts(stack(gpu={"mode": "off"}), healthy(s))


@pytest.mark.parametrize("value", ["2026-12-01", "2026-12-01 14:00", "2026-12-01 14:00:05", "14:00", "-2h",
                                   "30 min ago", "1d ago", "today", "yesterday"])
def test_since_accepts_journalctl_times(value):
    assert logs.valid_since(value) == value


@pytest.mark.parametrize("value", ["1h; reboot", "$(id)", "--until=now", "-1h --output=json", "", "1h\n", "`id`"])
def test_since_refuses_anything_else(value):
    with pytest.raises(ValueError, match="--since"):
        logs.valid_since(value)


def test_journal_words(stack):
    assert logs.journal_words(logs.stack_units(stack(), "all"), None, False) == [
        "journalctl", "--no-pager", "-u", "ollastack-firewall", "-u", "ollama", "-u", "nginx", "-n", "100"]
    assert logs.journal_words(["open-webui"], "1h ago", True) == [
        "journalctl", "--no-pager", "-u", "open-webui", "--since", "1h ago", "--follow"]


@pytest.fixture
def cli_stack(tmp_path, monkeypatch, stack):
    """A static stack file whose host is a loopback TLS server with the stack CA, reached by a fake ssh."""
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    s = stack()
    host = fake_host(monkeypatch, tmp_path, "doctorunit", ("admin@example.com", "unused"))
    config = tmp_path / "stack.toml"
    public, private = s.key_paths()
    config.write_text(f'[stack]\nname = "doctorunit"\nprovider = "static"\n[static]\nhosts = ["{host.address}"]\n'
                      f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n'
                      '[openwebui]\ninstall = "none"\n')
    fake_ssh(tmp_path / "bin")
    yield s, config, tmp_path / "bin"
    host.stop()


def remote_words(bin_dir) -> list[str]:
    """The remote command the fake ssh got (its last argument, after ``--`` and the destination), split."""
    _, _, after = (bin_dir / "ssh.args").read_text().partition("\n--\n")
    return shlex.split(after.split("\n", 1)[1])


def replay(bin_dir, probe: dict[str, str]) -> None:
    (bin_dir / "ssh.out").write_text("".join(f"\n{doctor.SECTION}{k}\n{v}\n" for k, v in probe.items()))


def test_cli_doctor_exit_codes_and_json(cli_stack, capsys):
    s, config, bin_dir = cli_stack
    replay(bin_dir, healthy(s))
    assert cli.main(["--config", str(config), "doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["failures"] == report["warnings"] == 0
    assert {c["status"] for c in report["hosts"][0]["checks"]} == {"ok"}
    # The probe ran as one quoted `sh -c` script whose stack values are its own words.
    words = remote_words(bin_dir)
    assert words[:2] == ["sh", "-c"] and words[3:6] == ["doctor", "http://127.0.0.1:11434",
                                                        "/usr/share/ollama/.ollama/models"]

    replay(bin_dir, healthy(s, journal="truncating input prompt limit=4096"))
    assert cli.main(["--config", str(config), "doctor"]) == 0
    out = capsys.readouterr().out
    assert "WARN  journal ollama: truncating input prompt" in out and "fix: prompts are longer" in out
    assert cli.main(["--config", str(config), "doctor", "--strict"]) == 1

    replay(bin_dir, healthy(s, tags=json.dumps({"models": []})))
    assert cli.main(["--config", str(config), "doctor"]) == 1
    assert "FAIL  model llama3.2:1b" in capsys.readouterr().out


def test_cli_doctor_unreachable_host_fails(cli_stack, capsys):
    _, config, bin_dir = cli_stack
    fake_ssh(bin_dir, exit_code=255, stderr="ssh: connect to host x port 22: Connection refused")
    (bin_dir / "ssh.out").write_text("")
    assert cli.main(["--config", str(config), "--json", "doctor"]) == 1
    ssh_check = json.loads(capsys.readouterr().out)["hosts"][0]["checks"][0]
    assert ssh_check["status"] == "fail" and "Connection refused" in ssh_check["detail"]


def test_cli_bad_input_is_exit_2(cli_stack, capsys):
    _, config, _ = cli_stack
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--config", str(config), "logs", "--since", "1h; reboot"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--config", str(config), "logs", "mysql"])
    assert exit_.value.code == 2


def test_cli_logs_prefixes_each_line_with_the_host(cli_stack, capsys):
    s, config, bin_dir = cli_stack
    (bin_dir / "ssh.out").write_text("Dec 01 12:00:01 h ollama[1]: one\nDec 01 12:00:02 h ollama[1]: two\n")
    assert cli.main(["--config", str(config), "logs", "ollama", "--since", "today"]) == 0
    name = s.static.hosts[0]
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{name}: Dec 01 12:00:01 h ollama[1]: one", f"{name}: Dec 01 12:00:02 h ollama[1]: two"]
    assert remote_words(bin_dir) == ["journalctl", "--no-pager", "-u", "ollama", "--since", "today"]
