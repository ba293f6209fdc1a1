"""``ollastack doctor`` on a converged Debian 12 lab host that runs Open WebUI (container route).

Registries are out of reach here, so the container runs the Open WebUI stand-in image
(tests/support/webui_standin): it answers ``/health``, the admin's sign-in and ``/ollama/api/version``
with Open WebUI 0.12.4's shapes, which is all these faults touch. As in test_lab_doctor.py, one fault
at a time is made by hand on the host; doctor must name it with its fix while every other check stays
ok, and each test puts the host back as it found it. Stack ``doctorweb``.
"""

from __future__ import annotations

import pytest

from tests.lab.test_lab_doctor import doctor, doctor_during, not_ok, on_host, restart_ollama
from tests.lab.test_lab_openwebui import container_stack

pytestmark = pytest.mark.lab

MODELS = "/usr/share/ollama/.ollama/models"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives, standin_image):
    yield from container_stack("doctorweb", "bookworm", tmp_path_factory, keypair, archives, standin_image)


@pytest.fixture(scope="module")
def host(stack) -> dict:
    found = stack.up_one()
    stack.pyinfra()
    return found


def start_open_webui(host: dict, stack) -> None:
    on_host(host, stack, "systemctl start open-webui && for i in $(seq 120); do "
                         "curl -fsS -o /dev/null 127.0.0.1:8080/health && exit 0; sleep 0.5; done; exit 1")


def test_healthy_host_with_open_webui_every_check_ok(stack, host):
    code, report = doctor(stack)
    assert code == 0 and not_ok(report) == {}, not_ok(report)
    checks = {c["name"]: c for c in report["hosts"][0]["checks"]}
    assert {"service open-webui", "port 8080 (Open WebUI)", "open webui health", "journal openwebui"} <= set(checks)
    assert checks["port 8080 (Open WebUI)"]["detail"] == "open-webui listens"
    assert checks["open webui -> ollama"]["detail"].startswith("Open WebUI reaches Ollama ")


def test_open_webui_stopped(stack, host):
    code, report = doctor_during(host, stack, "systemctl stop open-webui", start_open_webui)
    problems = not_ok(report)
    assert code == 1
    assert set(problems) == {"service open-webui", "port 8080 (Open WebUI)", "open webui health"}
    assert problems["service open-webui"]["detail"].startswith("inactive")
    assert "ollastack logs openwebui" in problems["service open-webui"]["fix"]
    assert problems["port 8080 (Open WebUI)"]["detail"] == "nothing listens"


def test_another_process_on_open_webuis_port(stack, host):
    """Something else took 127.0.0.1:8080 while Open WebUI was down: doctor names it and says it is not ours."""
    on_host(host, stack, "systemctl stop open-webui && "
                         "systemd-run --unit doctor-webui-squatter python3 -m http.server 8080 --bind 127.0.0.1 && "
                         "for i in $(seq 60); do ss -ltnH | grep -q ':8080 ' && exit 0; sleep 0.5; done; exit 1")
    try:
        code, report = doctor(stack)
    finally:
        on_host(host, stack, "systemctl stop doctor-webui-squatter")
        start_open_webui(host, stack)
    problems = not_ok(report)
    assert code == 1
    assert set(problems) == {"service open-webui", "port 8080 (Open WebUI)", "open webui health"}
    port = problems["port 8080 (Open WebUI)"]
    assert "python3" in port["detail"] and "doctor-webui-squatter.service" in port["detail"]
    assert port["detail"].endswith("not open-webui")
    assert "kill" in port["fix"] and "nginx serves it" in port["fix"]


def test_ollama_stopped_as_open_webui_sees_it(stack, host):
    """Open WebUI stays healthy, but its own view of the Ollama connection fails with Ollama's checks."""
    code, report = doctor_during(host, stack, "systemctl stop ollama", restart_ollama)
    problems = not_ok(report)
    assert code == 1
    assert set(problems) == {"service ollama", "port 11434 (Ollama's API)", "ollama api", "open webui -> ollama"}
    view = problems["open webui -> ollama"]
    assert view["status"] == "fail" and "500: WebUI could not connect to Ollama" in view["detail"]
    assert "Admin Settings > Connections" in view["fix"]


def test_disk_too_small_for_the_models_still_to_pull(stack, host):
    """A 2 GiB tmpfs over the models directory holds llama3.2:1b (1.3 GB) but not a configured qwen2.5:7b."""
    on_host(host, stack, f"cp -a {MODELS} /root/models-copy && mount -t tmpfs -o size=2G tmpfs {MODELS} && "
                         f"cp -a /root/models-copy/. {MODELS}/")
    stack.write(ollama={"models": ["llama3.2:1b", "qwen2.5:7b"]})
    try:
        code, report = doctor(stack)
    finally:
        stack.write()
        on_host(host, stack, f"umount {MODELS} && rm -rf /root/models-copy")
    problems = not_ok(report)
    assert code == 1 and set(problems) == {"disk", "model qwen2.5:7b"}
    assert problems["disk"]["status"] == "fail"
    assert "not pulled yet need about 3.9 GiB: qwen2.5:7b ~4.2 GB" in problems["disk"]["detail"]
