"""Legitimate values that look hostile, carried quoted through a real converge of a Debian 12 lab host.

Local paths may hold anything printable: here the Ollama archive and the Open WebUI image archive
sit in a directory named ``odd dir; touch PWNED`` and are named with spaces and ``;``. The admin
password holds quotes, a backslash, ``$`` and ``%``; a URL holds a percent-encoding (``%7E``, a
systemd specifier if left alone). The converge must work, the services must see the values exactly,
and nothing named PWNED may appear anywhere.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.request

import pytest

from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh
from tests.support.webui_standin.build_image import STANDIN_IMAGE

pytestmark = pytest.mark.lab

PASSWORD = """Pa ss'w"o\\rd $HOME `id` %n;x"""
ADMIN_NAME = "Jane Doe"
OPENAI_URL = "http://127.0.0.1:9/v1/%7Euser"


class HostileStack(LabStack):
    name, release = "hostilelab", "bookworm"


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory, keypair, archives, standin_image):
    def make() -> HostileStack:
        stack = HostileStack(tmp_path_factory.mktemp("hostile"), keypair, archives)
        odd = stack.dir / "odd dir; touch PWNED"
        odd.mkdir()
        archive, sha = archives["0.13.3"]
        ollama_archive = odd / "ollama release; touch PWNED.tgz"
        shutil.copy(archive, ollama_archive)
        image = odd / "open webui; touch PWNED.tar"
        shutil.copy(standin_image, image)
        openwebui = {"install": "container", "image": STANDIN_IMAGE, "image_archive": str(image), "offline": True,
                     "admin_email": "owner@example.org", "admin_name": ADMIN_NAME, "admin_password": PASSWORD,
                     "openai_api_base_url": OPENAI_URL}
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in openwebui.items())
        stack.write({"archive": str(ollama_archive), "sha256": sha}, f"[openwebui]\n{lines}\n")
        return stack

    yield from lab_stack_fixture(make)


@pytest.fixture(scope="module")
def converged(hostile_stack) -> dict:
    result = hostile_stack.ollastack("validate")
    assert result.returncode == 0, result.stderr
    return hostile_stack.converged_one()


def test_ollama_installed_from_an_archive_path_with_space_and_semicolon(converged, keypair):
    version = ssh(converged["address"], "curl -fsS 127.0.0.1:11434/api/version", keypair).stdout
    assert json.loads(version)["version"] == "0.13.3"
    tags = json.loads(ssh(converged["address"], "curl -fsS 127.0.0.1:11434/api/tags", keypair).stdout)
    assert [m["name"] for m in tags["models"]] == ["llama3.2:1b"]


def test_open_webui_image_loaded_from_such_a_path_and_values_arrive_exactly(converged, keypair, hostile_stack):
    address = converged["address"]
    info = json.loads(ssh(address, "podman inspect open-webui", keypair).stdout)[0]
    assert info["ImageName"] == STANDIN_IMAGE
    env = dict(e.split("=", 1) for e in info["Config"]["Env"])
    assert env["WEBUI_ADMIN_PASSWORD"] == PASSWORD
    assert env["WEBUI_ADMIN_NAME"] == ADMIN_NAME
    assert env["OPENAI_API_BASE_URL"] == OPENAI_URL
    context = ssl.create_default_context(cafile=str(hostile_stack.ca))
    with urllib.request.urlopen(f"https://{address}/health", context=context, timeout=30) as response:
        assert response.status == 200


def test_nothing_ran_from_the_names(converged, keypair, hostile_stack):
    found = ssh(converged["address"], "find / -xdev -name PWNED 2>/dev/null; true", keypair).stdout
    assert found.strip() == ""
    assert not list(hostile_stack.dir.rglob("PWNED"))


def test_second_converge_changes_nothing(converged, hostile_stack):
    _, report = hostile_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)
