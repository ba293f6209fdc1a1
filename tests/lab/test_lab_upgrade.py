"""Upgrades of the real Open WebUI (pip route, Debian 12) that cannot lose data.

One lab host of its own stack (``upgradetest``). Its wheelhouse (``openwebui.find_links``) holds the CPU
torch of ``$PIP_FIND_LINKS`` and a broken ``open_webui-0.12.5`` wheel made here, whose ``open-webui``
exits 1 (PyPI has no 0.12.5, so the wheelhouse is where the resolver finds it). Raising
``openwebui.version`` to it must fail ``up`` (exit 1, naming the release, the check and the backup it
restored), and 0.12.4 must serve again with a user and their chat made before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from tests.lab.test_lab_backup import add_user, new_chat
from tests.lab.test_lab_openwebui import WebUIStack, request, signin
from tests.support.labkit import lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

GOOD, BROKEN = "0.12.4", "0.12.5"
USER, USER_PASSWORD = "bob@example.org", "Bob-Pass-1"
MARKER = "/opt/open-webui/.ollastack-installed"


def broken_wheel(directory: Path, version: str = BROKEN) -> Path:
    """A wheel ``open-webui==version`` whose ``open-webui`` command exits 1: a release that will not start."""
    info = f"open_webui-{version}.dist-info"
    files = {
        "open_webui/__init__.py": "import sys\n\n\ndef main():\n"
                                  f"    sys.exit('open-webui {version}: a broken test release that does not start')\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: open-webui\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: ollastack-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\nopen-webui = open_webui:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    path = directory / f"open_webui-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in {**files, f"{info}/RECORD": "\n".join(record) + "\n"}.items():
            wheel.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives):
    wheels = tmp_path_factory.mktemp("upgrade-wheels")
    for wheel in Path(os.environ.get("PIP_FIND_LINKS", "/opt/wheels")).glob("*.whl"):
        (wheels / wheel.name).symlink_to(wheel)
    broken_wheel(wheels)
    yield from lab_stack_fixture(lambda: WebUIStack("upgradetest", tmp_path_factory.mktemp("upgradetest"), keypair,
                                                    archives, {"install": "pip", "find_links": str(wheels),
                                                               "version": GOOD}))


def up(stack: WebUIStack) -> tuple[int, str, dict | None]:
    result = stack.ollastack("--json", "up", timeout=2400)
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        payload = None
    return result.returncode, result.stderr, payload


def served_version(base: str, ca: Path) -> str:
    status, body = request(f"{base}/api/version", ca)
    assert status == 200, body
    return json.loads(body)["version"]


def test_broken_upgrade_rolls_back_with_data_intact(stack):
    code, errors, payload = up(stack)
    assert code == 0 and payload is not None, errors[-3000:]
    address = payload["hosts"][0]["address"]
    host = {"address": address, "base": f"https://{address}"}
    ca = stack.ca
    session = add_user(stack, host, "Bob", USER, USER_PASSWORD)
    chat_id = new_chat(host, ca, session["token"], "made before the upgrade")
    assert stack.ollastack("--json", "backup", "list").stdout.strip() == "[]"   # a first install takes none

    stack.write(openwebui={"version": BROKEN})
    code, errors, _ = up(stack)
    listed = json.loads(stack.ollastack("--json", "backup", "list").stdout)
    assert [row["label"] for row in listed] == [f"before the upgrade to open-webui {BROKEN}"], listed
    backup_id = listed[0]["id"]
    assert listed[0]["openwebui_version"] == GOOD
    assert code == 1, errors[-3000:]
    message = errors.strip().splitlines()[-1]
    assert message.startswith(f"error: the upgrade of Open WebUI to open-webui {BROKEN} failed: "), message
    assert "the converge failed on at least one host" in message and "on /health" in message, message
    assert f"rolled back: open-webui {GOOD} serves again with the backup taken before the upgrade restored " \
           f"(upgradetest-1: {backup_id})" in message, message
    assert stack.password() not in errors

    assert ssh(address, f"cat {MARKER}", stack.keypair).stdout.strip() == f"open-webui=={GOOD}"
    assert served_version(host["base"], ca) == GOOD
    status, again = signin(host["base"], ca, USER, USER_PASSWORD)
    assert status == 200
    status, body = request(f"{host['base']}/api/v1/chats/{chat_id}", ca, token=again["token"])
    assert status == 200 and json.loads(body)["title"] == "made before the upgrade"
    status, body = request(f"{host['base']}/api/v1/auths/", ca, token=session["token"])
    assert status == 200 and json.loads(body)["email"] == USER   # a session from before is still accepted
    assert not (stack.dir / "state" / "upgradetest.rollback.toml").exists()

    # Set back, the stack asks for no upgrade: up passes and takes no backup.
    stack.write(openwebui={"version": GOOD})
    code, errors, _ = up(stack)
    assert code == 0, errors[-3000:]
    assert [row["id"] for row in json.loads(stack.ollastack("--json", "backup", "list").stdout)] == [backup_id]
