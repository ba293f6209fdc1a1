"""``ollastack up`` and ``status`` say "ready" only when it is: a lab host on the container route (the
Open WebUI stand-in image), checked through the real nginx, made not ready in the ways users meet.

The stand-in answers a status of the test's choosing on a path when told so in
``standin-faults.json`` in its data volume; stopping Open WebUI makes nginx answer 503 itself.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tests.support.labkit import LabStack, lab_stack_fixture, ssh
from tests.support.webui_standin.build_image import STANDIN_IMAGE

pytestmark = pytest.mark.lab

ADMIN = "owner@example.org"
FAULTS = "/app/backend/data/standin-faults.json"


class ReadyStack(LabStack):
    """A lab stack of its own with Open WebUI from the stand-in image archive."""

    name = "readytest"

    def __init__(self, workdir: Path, keypair, archives, image_archive: Path):
        self.image_archive = image_archive
        super().__init__(workdir, keypair, archives)

    def write(self, ollama: dict | None = None, extra: str = "") -> None:
        super().write(ollama, f'[openwebui]\ninstall = "container"\nimage = "{STANDIN_IMAGE}"\n'
                              f'image_archive = "{self.image_archive}"\nadmin_email = "{ADMIN}"\noffline = true\n\n{extra}')

    def password(self) -> str:
        return (self.dir / "state" / f"{self.name}.openwebui-admin-password").read_text().strip()


@pytest.fixture(scope="module")
def ready_stack(tmp_path_factory, keypair, archives, standin_image):
    yield from lab_stack_fixture(lambda: ReadyStack(tmp_path_factory.mktemp("ready"), keypair, archives,
                                                    standin_image))


@pytest.fixture(scope="module")
def first_up(ready_stack) -> dict:
    result = ready_stack.ollastack("--json", "up")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def faults(stack: ReadyStack, host: dict, **paths: int) -> None:
    """Tell the stand-in what to answer (nothing given: answer normally again)."""
    table = {{"health": "/health", "signin": "/api/v1/auths/signin"}[k]: v for k, v in paths.items()}
    code = f"open({FAULTS!r}, 'w').write({json.dumps(table)!r})"
    ssh(host["address"], f"podman exec open-webui python3.11 -c {shlex.quote(code)}", stack.keypair)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_first_up_is_ready_only_after_the_admin_signed_in(first_up, ready_stack):
    [host] = first_up["hosts"]
    assert first_up["ok"] is True and host["ok"] is True
    assert host["https"] == "HTTPS verified, HTTP 200"
    assert host["webui"] == f"healthy, admin {ADMIN} signs in" and host["problem"] is None


def test_up_fails_naming_a_503_on_health(first_up, ready_stack):
    host = first_up["hosts"][0]
    faults(ready_stack, host, health=503)
    try:
        result = ready_stack.ollastack("up")
        status = ready_stack.ollastack("status")
    finally:
        faults(ready_stack, host)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {host['name']}: Open WebUI answered 503 on /health"]
    assert "ready:" not in result.stdout
    assert status.returncode == 1 and "not ready: Open WebUI answered 503 on /health" in status.stdout


def test_up_fails_naming_the_admin_who_cannot_sign_in(first_up, ready_stack):
    host = first_up["hosts"][0]
    faults(ready_stack, host, signin=400)
    try:
        result = ready_stack.ollastack("up")
    finally:
        faults(ready_stack, host)
    assert result.returncode == 1
    assert error_lines(result) == [f"error: {host['name']}: the admin {ADMIN} cannot sign in "
                                   "(400 refused by the stand-in (standin-faults.json))"]
    assert ready_stack.password() not in result.stdout + result.stderr


def test_status_sees_open_webui_stopped_as_nginx_503(first_up, ready_stack):
    host = first_up["hosts"][0]
    ssh(host["address"], "systemctl stop open-webui", ready_stack.keypair)
    try:
        result = ready_stack.ollastack("--json", "status")
    finally:
        ssh(host["address"], "systemctl start open-webui", ready_stack.keypair)
    assert result.returncode == 1
    [report] = json.loads(result.stdout)["hosts"]
    assert report["problem"] == "Open WebUI answered 503 on /health"


def test_status_sees_a_password_that_no_longer_signs_in_and_up_heals_it(first_up, ready_stack):
    # The admin password on the host changed behind ollastack's back; the next converge writes it back.
    host, keys = first_up["hosts"][0], ready_stack.keypair
    ssh(host["address"], "echo 'WEBUI_ADMIN_PASSWORD=\"changed-elsewhere\"' > /etc/open-webui/admin.env && "
                         "systemctl restart open-webui && for i in $(seq 150); do "
                         "curl -fs -o /dev/null 127.0.0.1:8080/health && break; sleep 0.2; done", keys)
    status = ready_stack.ollastack("status")
    healed = ready_stack.ollastack("up")
    assert status.returncode == 1
    assert f"not ready: the admin {ADMIN} cannot sign in (400 The email or password provided is incorrect.)" \
        in status.stdout
    assert ready_stack.password() not in status.stdout + status.stderr
    assert healed.returncode == 0, healed.stderr[-2000:]
    assert healed.stdout.startswith("ready:")
