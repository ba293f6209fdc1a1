"""The default route with the real Open WebUI: Debian 13, the container route, the image built from the
PyPI release (``openwebui.build_image``), as hosts that cannot reach ghcr.io get it.

One host (stack ``imagetest``). The image is built on this machine once into
``/var/lib/ollastack/lab/webui-images`` (under the build's own lock) and reused while its inputs stay
the same; the first converge pushes and loads it, the second must change and build nothing. The
container route's own tests from test_lab_openwebui.py (Quadlet unit, confinement, restarts, data
volume, secret key) run here on this host too, through the ``ctr_*`` fixtures below, so that Debian 13's
container route is tested with the real Open WebUI only.
"""

from __future__ import annotations

import json
import time
import types
from pathlib import Path

import pytest

from ollastack.config import load_stack
from ollastack.hostdata import defaults, key
from tests.lab.test_lab_backup import add_user, admin_token, backup, new_chat
from tests.lab.test_lab_openwebui import ADMIN, WebUIStack, figure, request, signin
from tests.lab.test_lab_openwebui import (  # noqa: F401  (collected here, on this module's ctr_* fixtures)
    test_container_data_volume_survives_removal, test_container_reachable_through_nginx_only,
    test_container_restart_keeps_the_secret_key, test_container_restarted_after_being_killed,
    test_container_unit_per_release, test_container_unprivileged_on_the_host,
    test_pip_route_refused_at_converge_without_python)
from tests.support.labkit import changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

BUILD_DIR = "/var/lib/ollastack/lab/webui-images"
WHEELS = "/opt/wheels"


@pytest.fixture(scope="module")
def image_stack(tmp_path_factory, keypair, archives):
    def make() -> WebUIStack:
        stack = WebUIStack("imagetest", tmp_path_factory.mktemp("imagetest"), keypair, archives,
                           {"install": "container", "build_image": True, "build_dir": BUILD_DIR, "find_links": WHEELS},
                           release="trixie")
        stack.image_label = "image built from PyPI"
        return stack
    yield from lab_stack_fixture(make)


@pytest.fixture(scope="module")
def built(image_stack) -> tuple[str, Path]:
    """The image's tag and archive, from the stack's own host data (what the converge will ask for)."""
    from ollastack.deploy.webui_image import ensure_built

    settings = load_stack(image_stack.path).openwebui.model_dump()
    data = types.SimpleNamespace(**{**defaults(), **{key(f"openwebui.{k}"): v for k, v in settings.items()}})
    started = time.monotonic()
    tag, archive = ensure_built(data)
    figure("build_image: image ready on the control machine (built, or found for these inputs)", time.monotonic() - started, "s")
    return tag, archive


@pytest.fixture(scope="module")
def image_host(image_stack) -> dict:
    return image_stack.up_one()


@pytest.fixture(scope="module")
def converged(image_stack, image_host, built) -> dict:
    started = time.monotonic()
    _, report = image_stack.pyinfra()
    figure("build_image: first converge of a bare Debian 13 host (push + podman load of the built image)",
           time.monotonic() - started, "s")
    assert any(op.startswith("Open WebUI | Load localhost/ollastack/open-webui:") for op in changed_ops(report)), \
        changed_ops(report)
    return {"base": f"https://{image_host['address']}", "password": image_stack.password()}


# The names test_lab_openwebui.py's container tests ask for.
@pytest.fixture(scope="module")
def ctr_stack(image_stack) -> WebUIStack:
    return image_stack


@pytest.fixture(scope="module")
def ctr_host(image_host) -> dict:
    return image_host


@pytest.fixture(scope="module")
def ctr_converged(converged) -> dict:
    return converged


def test_quadlet_runs_the_built_image(converged, image_host, built, keypair):
    tag, _ = built
    address = image_host["address"]
    info = json.loads(ssh(address, "podman inspect open-webui", keypair).stdout)[0]
    assert info["ImageName"] == tag and info["HostConfig"]["NetworkMode"] == "host"
    labels = json.loads(ssh(address, f"podman image inspect {tag}", keypair).stdout)[0]["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.12.4"
    assert f"Image={tag}" in ssh(address, "cat /etc/containers/systemd/open-webui.container", keypair).stdout
    listening = ssh(address, "ss -Htln 'sport = :8080' | awk '{print $4}'", keypair).stdout.split()
    assert listening == ["127.0.0.1:8080"], listening


def test_real_open_webui_health_and_version_over_https(converged, image_stack):
    status, body = request(converged["base"] + "/health", image_stack.ca)
    assert status == 200 and json.loads(body)["status"] is True
    # The stand-in has no /api/version: this is the release itself.
    status, body = request(converged["base"] + "/api/version", image_stack.ca)
    assert status == 200 and json.loads(body)["version"] == "0.12.4"
    status, body = request(converged["base"] + "/", image_stack.ca)
    assert status == 200 and b"<title>Open WebUI</title>" in body


def test_admin_signs_in_through_nginx(converged, image_stack):
    base, ca = converged["base"], image_stack.ca
    status, session = signin(base, ca, ADMIN, converged["password"])
    assert status == 200 and session["role"] == "admin"
    assert signin(base, ca, ADMIN, "wrong-password")[0] == 400
    status, body = request(f"{base}/api/models", ca, token=session["token"])
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["llama3.2:1b"]


def test_second_converge_builds_and_changes_nothing(converged, image_stack, built):
    _, archive = built
    before = {p.name: p.stat().st_mtime for p in Path(BUILD_DIR).glob("*.tar")}
    _, report = image_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)
    assert {p.name: p.stat().st_mtime for p in Path(BUILD_DIR).glob("*.tar")} == before and archive.name in before


def test_backup_and_restore_on_the_container_route(converged, image_stack, image_host):
    """The built image's data (the ``open-webui`` volume and the secret key) comes back from a backup: a
    user deleted after it, with their chat, signs in again and an earlier session still holds."""
    host = {"address": image_host["address"], "base": converged["base"]}
    ca = image_stack.ca
    session = add_user(image_stack, host, "Erin", "erin@example.org", "Erin-Pass-1")
    chat_id = new_chat(host, ca, session["token"], "kept in the volume")
    path = backup(image_stack)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["openwebui_version"] == "0.12.4" and manifest["integrity_check"] == "ok", manifest
    assert {"webui.db", "secret-key.env"} <= set(manifest["files"])

    status, body = request(f"{host['base']}/api/v1/users/{session['id']}", ca,
                           token=admin_token(image_stack, host), method="DELETE")
    assert status == 200, body
    assert signin(host["base"], ca, "erin@example.org", "Erin-Pass-1")[0] == 400

    restored = image_stack.ollastack("restore", path.name)
    assert restored.returncode == 0, restored.stderr[-3000:]
    status, again = signin(host["base"], ca, "erin@example.org", "Erin-Pass-1")
    assert status == 200, again
    status, body = request(f"{host['base']}/api/v1/chats/{chat_id}", ca, token=again["token"])
    assert status == 200 and json.loads(body)["title"] == "kept in the volume"
    status, _ = request(f"{host['base']}/api/v1/auths/", ca, token=session["token"])
    assert status == 200
