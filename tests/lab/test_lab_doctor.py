"""``ollastack doctor`` and ``ollastack logs`` against a real converged lab host (Ollama stand-in).

A healthy host passes every check; then one fault at a time is made by hand on the host, the way an
operator breaks things, and doctor must name it with its fix while every other check stays ok.
Each test puts the host back as it found it.
"""

from __future__ import annotations

import base64
import json
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from ollastack import certs
from tests.support.labkit import LabStack, lab_stack_fixture, processes, ssh

pytestmark = pytest.mark.lab

# journald and the CLI answer in well under a second; these bound a broken run, they time nothing.
WAIT_S = 30


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def stack(request, tmp_path_factory, keypair, archives):
    class DoctorStack(LabStack):
        name, release = f"doctortest-{request.param[:3]}", request.param

    yield from lab_stack_fixture(lambda: DoctorStack(tmp_path_factory.mktemp("doctor"), keypair, archives))


@pytest.fixture(scope="module")
def host(stack) -> dict:
    return stack.converged_one()


def doctor(stack: LabStack, *flags: str) -> tuple[int, dict]:
    result = stack.ollastack("--json", "doctor", *flags, timeout=300)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def doctor_during(host: dict, stack: LabStack, fault: str, undo: Callable[[dict, LabStack], None]) -> tuple[int, dict]:
    """doctor's verdict while ``fault`` (a shell command run on the host) holds; ``undo`` puts the host back
    whatever happens."""
    on_host(host, stack, fault)
    try:
        return doctor(stack)
    finally:
        undo(host, stack)


def not_ok(report: dict) -> dict[str, dict]:
    return {c["name"]: c for h in report["hosts"] for c in h["checks"] if c["status"] != "ok"}


def on_host(host: dict, stack: LabStack, command: str) -> str:
    return ssh(host["address"], command, stack.keypair).stdout


def as_ollama_logs(host: dict, stack: LabStack, line: str) -> None:
    """Log ``line`` as ``ollama`` (``systemd-cat -t ollama``), as Ollama's own lines are identified."""
    on_host(host, stack, f"echo {shlex.quote(line)} | systemd-cat -t ollama")
    wait_for_journal(host, stack, line, "-t ollama")


def wait_for_journal(host: dict, stack: LabStack, text: str, match: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in on_host(host, stack, f"journalctl {match} -o cat --no-pager -n 50"):
        assert time.monotonic() < deadline, f"{text!r} never reached the journal"
        time.sleep(0.5)


def restart_ollama(host: dict, stack: LabStack) -> None:
    on_host(host, stack, "systemctl restart ollama && for i in $(seq 60); do "
                         "curl -fsS 127.0.0.1:11434/api/tags >/dev/null && exit 0; sleep 0.5; done; exit 1")


def test_healthy_host_every_check_ok(stack, host):
    code, report = doctor(stack)
    assert code == 0 and report["ok"], not_ok(report)
    assert not_ok(report) == {}
    names = {c["name"] for c in report["hosts"][0]["checks"]}
    assert {"service ollama", "service nginx", "service ollastack-firewall", "port 80 (HTTP)", "port 443 (HTTPS)",
            "port 11434 (Ollama's API)", "port 8080 (Open WebUI)", "ollama api", "model llama3.2:1b",
            "nginx config", "ollama settings", "journal ollama", "disk", "certificate"} <= names
    text = stack.ollastack("doctor", timeout=300)
    assert text.returncode == 0 and "0 failure(s), 0 warning(s)" in text.stdout


def test_ollama_stopped(stack, host):
    code, report = doctor_during(host, stack, "systemctl stop ollama", restart_ollama)
    problems = not_ok(report)
    assert code == 1
    assert set(problems) == {"service ollama", "port 11434 (Ollama's API)", "ollama api"}
    assert problems["service ollama"]["detail"].startswith("inactive")
    assert "ollastack logs ollama" in problems["service ollama"]["fix"]


def test_model_deleted(stack, host):
    on_host(host, stack, "curl -fsS -X DELETE 127.0.0.1:11434/api/delete -d '{\"model\": \"llama3.2:1b\"}'")
    try:
        code, report = doctor(stack)
    finally:
        stack.pyinfra()
    assert code == 1
    assert set(not_ok(report)) == {"model llama3.2:1b"}
    assert "ollastack up" in not_ok(report)["model llama3.2:1b"]["fix"]


def test_override_edited_by_hand(stack, host):
    edit = "sed -i 's/OLLAMA_CONTEXT_LENGTH={}/OLLAMA_CONTEXT_LENGTH={}/' /etc/systemd/system/ollama.service.d/override.conf"
    on_host(host, stack, edit.format(4096, 8192))
    try:
        code, report = doctor(stack)
    finally:
        on_host(host, stack, edit.format(8192, 4096))
    assert code == 1
    drift = not_ok(report)
    assert set(drift) == {"ollama settings"}
    assert "OLLAMA_CONTEXT_LENGTH=8192 (stack: 4096)" in drift["ollama settings"]["detail"]
    assert "[ollama]" in drift["ollama settings"]["fix"]


def test_another_process_on_ollamas_port(stack, host):
    """Something else took 127.0.0.1:11434 while Ollama was down: doctor names it, not just "Ollama stopped"."""
    on_host(host, stack, "systemctl stop ollama && "
                         "systemd-run --unit doctor-squatter python3 -m http.server 11434 --bind 127.0.0.1 && "
                         "for i in $(seq 60); do ss -ltnH | grep -q ':11434 ' && exit 0; sleep 0.5; done; exit 1")
    try:
        code, report = doctor(stack)
    finally:
        on_host(host, stack, "systemctl stop doctor-squatter")
        restart_ollama(host, stack)
    assert code == 1
    problems = not_ok(report)
    assert set(problems) == {"service ollama", "port 11434 (Ollama's API)", "ollama api"}
    port = problems["port 11434 (Ollama's API)"]
    assert "python3" in port["detail"] and "doctor-squatter.service" in port["detail"]
    assert "kill" in port["fix"] and "systemctl restart ollama" in port["fix"]


def test_nginx_config_broken(stack, host):
    on_host(host, stack, "echo 'this is not nginx;' > /etc/nginx/conf.d/zz-doctor.conf")
    try:
        code, report = doctor(stack)
    finally:
        on_host(host, stack, "rm -f /etc/nginx/conf.d/zz-doctor.conf")
    assert code == 1
    problems = not_ok(report)
    assert set(problems) == {"nginx config"}
    assert "zz-doctor.conf" in problems["nginx config"]["detail"]
    assert "ollastack up" in problems["nginx config"]["fix"]


def test_known_error_lines_in_the_journal(stack, host):
    try:
        as_ollama_logs(host, stack, "CUDA error: out of memory")
        as_ollama_logs(host, stack, "CUDA error: out of memory")
        as_ollama_logs(host, stack, "truncating input prompt limit=4096 prompt=5210 keep=4 new=4096")
        as_ollama_logs(host, stack, 'level=WARN source=runner.go msg="failure during GPU discovery" error="timed out"')
        code, report = doctor(stack)
        strict_code, _ = doctor(stack, "--strict")
    finally:
        restart_ollama(host, stack)
    problems = not_ok(report)
    assert code == 1 and strict_code == 1
    assert set(problems) == {"journal ollama: CUDA error: out of memory", "journal ollama: truncating input prompt",
                             "journal ollama: failure during GPU discovery"}
    assert problems["journal ollama: failure during GPU discovery"]["status"] == "fail"
    oom = problems["journal ollama: CUDA error: out of memory"]
    assert oom["status"] == "fail" and oom["detail"].startswith("2 line(s)")
    truncating = problems["journal ollama: truncating input prompt"]
    assert truncating["status"] == "warn" and "ollama.context_length" in truncating["fix"]
    # After a restart the lines belong to an earlier run: the journal check is ok again.
    code, report = doctor(stack)
    assert code == 0 and not_ok(report) == {}


def test_a_warning_alone_keeps_exit_0_unless_strict(stack, host):
    try:
        as_ollama_logs(host, stack, "truncating input prompt limit=4096 prompt=5210 keep=4 new=4096")
        code, report = doctor(stack)
        strict_code, _ = doctor(stack, "--strict")
    finally:
        restart_ollama(host, stack)
    assert [c["status"] for c in not_ok(report).values()] == ["warn"]
    assert (code, strict_code) == (0, 1)


def put_file(host: dict, stack: LabStack, path: str, data: bytes) -> None:
    on_host(host, stack, f"echo {base64.b64encode(data).decode()} | base64 -d > {path}")


def test_certificate_close_to_expiry(stack, host, tmp_path):
    """nginx serves a certificate from the stack CA with 5 days left: a warning whose fix is `ollastack up`."""
    short_dir = tmp_path / "ssl"
    shutil.copytree(stack.dir / "ssl" / stack.name, short_dir)
    certs.ensure_server_cert(short_dir, "short", [host["address"]], days=5, renew_before_days=0)
    paths = certs.server_cert_paths(short_dir, "short")
    put_file(host, stack, "/etc/ollastack/tls/fullchain.pem", paths.fullchain.read_bytes())
    put_file(host, stack, "/etc/ollastack/tls/privkey.pem", paths.key.read_bytes())
    on_host(host, stack, "systemctl reload nginx")
    try:
        code, report = doctor(stack)
        strict_code, _ = doctor(stack, "--strict")
    finally:
        stack.pyinfra()
    problems = not_ok(report)
    assert set(problems) == {"certificate"}
    assert problems["certificate"]["status"] == "warn" and problems["certificate"]["detail"].startswith(
        "close to expiry: 4 days left")
    assert "ollastack up" in problems["certificate"]["fix"]
    assert (code, strict_code) == (0, 1)


def test_disk_nearly_full_under_the_models_directory(stack, host):
    """A 256 MiB tmpfs over the models directory (the models copied in): Ollama still lists them, the disk fails."""
    models = "/usr/share/ollama/.ollama/models"
    on_host(host, stack, f"cp -a {models} /root/models-copy && mount -t tmpfs -o size=256M tmpfs {models} && "
                         f"cp -a /root/models-copy/. {models}/")
    try:
        code, report = doctor(stack)
    finally:
        on_host(host, stack, f"umount {models} && rm -rf /root/models-copy")
    problems = not_ok(report)
    assert code == 1 and set(problems) == {"disk"}
    assert problems["disk"]["status"] == "fail" and f"GiB free under {models}" in problems["disk"]["detail"]
    assert "ollama rm" in problems["disk"]["fix"]


FAKE_SMI = """#!/bin/sh
# A T4 with the pinned driver as nvidia-smi reports it; no other process uses it.
case "$*" in *--query-gpu=*) echo "Tesla T4, 570.124.06, 15360, 1024" ;; esac
"""


def test_loaded_model_on_the_cpu_of_a_gpu_host(stack, host):
    """The "suddenly slow" case: the driver answers (a fake nvidia-smi), but the loaded model has size_vram 0."""
    put_file(host, stack, "/usr/local/bin/nvidia-smi", FAKE_SMI.encode())
    try:
        on_host(host, stack, "chmod 755 /usr/local/bin/nvidia-smi && curl -fsS 127.0.0.1:11434/api/generate "
                             "-d '{\"model\": \"llama3.2:1b\", \"prompt\": \"hi\", \"stream\": false}' >/dev/null")
        code, report = doctor(stack)
    finally:
        on_host(host, stack, "rm -f /usr/local/bin/nvidia-smi")
        restart_ollama(host, stack)
    problems = not_ok(report)
    assert code == 1 and set(problems) == {"loaded llama3.2:1b"}
    assert problems["loaded llama3.2:1b"]["detail"].startswith("size_vram 0: running on the CPU")
    assert "systemctl restart ollama" in problems["loaded llama3.2:1b"]["fix"]
    checks = {c["name"]: c for c in report["hosts"][0]["checks"]}
    assert checks["gpu Tesla T4"]["status"] == "ok" and "driver 570.124.06" in checks["gpu Tesla T4"]["detail"]


def _reader(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)


def followers(address: str) -> list[int]:
    """The ssh processes on this machine that follow a journal on ``address``."""
    return processes(lambda args: args[0] == b"ssh" and f"root@{address}".encode() in args
                     and any(b"--follow" in a for a in args))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_logs_follow_shows_a_new_line_and_stops_on_a_signal(stack, host, stop):
    """Started as a script's background job is (SIGINT ignored, inherited), it still stops on Ctrl-C, as on
    SIGTERM, and leaves no ssh behind."""
    command = shlex.join([sys.executable, "-m", "ollastack.cli", "logs", "ollama", "--follow"])
    cli = subprocess.Popen(["sh", "-c", f"trap '' INT; exec {command}"], env=stack.env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(cli.stdout, lines), daemon=True).start()
    try:
        # Ollama logs every request with its path: the marker reaches the unit's own journal.
        marker = f"doctor-follow-marker-{time.time_ns()}"
        on_host(host, stack, f"curl -s -o /dev/null 127.0.0.1:11434/{marker}")
        wait_for_journal(host, stack, marker, "-u ollama")
        seen = []
        deadline = time.monotonic() + WAIT_S
        while not any(marker in line for line in seen) and time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
        shown = [line for line in seen if marker in line]
        assert shown and shown[0].startswith(f"{host['name']}: "), seen[-5:]
    finally:
        cli.send_signal(stop)
        code = cli.wait(timeout=WAIT_S)
    stderr = cli.stderr.read()
    assert code == 0 and "Traceback" not in stderr, stderr
    assert followers(host["address"]) == []


def test_logs_without_follow_prefixes_every_line(stack, host):
    result = stack.ollastack("logs", "nginx", "--since", "today")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(line.startswith(f"{host['name']}: ") for line in lines)


def test_logs_refuses_a_since_with_shell_words(stack, host):
    result = stack.ollastack("logs", "--since", "1h; touch /tmp/doctor-pwned")
    assert result.returncode == 2 and "--since" in result.stderr
    assert on_host(host, stack, "test -e /tmp/doctor-pwned && echo yes || echo no").strip() == "no"
