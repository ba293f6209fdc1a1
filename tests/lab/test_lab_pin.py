"""An Ollama upgrade across the archive change on a Debian 12 lab host: from 0.13.3 (``.tgz``) to 0.14.0,
which ships ``.tar.zst`` only, pinned with ``ollastack pin ollama`` against a stand-in of the release
downloads served on the lab bridge (tests/support/ollama_releases.py).

Covered elsewhere and not repeated here: a wrong sha256 (tests/lab/test_lab_spine.py), the URL a version
downloads by default (tests/unit/test_ollama_release.py), pin's refusals (tests/integration/test_pin.py).
"""

from __future__ import annotations

import contextlib

import json
from collections.abc import Iterator

import pytest

from ollastack import lab
from ollastack.config import LabSection, load_stack
from ollastack.deploy.ollama import STATE_DIR
from ollastack.ollama_release import archive_name, release_url
from ollastack.pin import RELEASES_ENV
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh
from tests.support.ollama_releases import Releases

pytestmark = pytest.mark.lab

NEW = "0.14.0"
INSTALL_ZSTD = "Ollama | Install zstd to unpack the Ollama archive"


class PinStack(LabStack):
    name = "pintest"


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Releases:
    published = Releases(tmp_path_factory.mktemp("releases"))
    published.new = published.publish(NEW)
    return published


@pytest.fixture(scope="module")
def served(releases) -> Iterator[str]:
    """The release stand-in over HTTP on the bridge's gateway, which lab hosts reach (a mirror would be HTTPS).

    The bridge is made first, as ``lab up`` makes it: with no other lab host running there is no gateway
    address to listen on yet. Both under the lab's lock, as another module's ``lab down`` removes the bridge
    with the last host; once listening, the socket outlives a bridge made again.
    """
    subnet = LabSection().subnet
    with contextlib.ExitStack() as context:
        with lab._locked():
            lab.ensure_network(subnet)
            url = context.enter_context(releases.serve(lab.gateway(subnet)))
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives, served) -> Iterator[PinStack]:
    def make() -> PinStack:
        made = PinStack(tmp_path_factory.mktemp("pin"), keypair, archives)
        made.env[RELEASES_ENV] = served
        return made

    yield from lab_stack_fixture(make)


def on_host(address: str, stack: PinStack, command: str) -> str:
    return ssh(address, command, stack.keypair).stdout


def snapshot(address: str, stack: PinStack) -> dict:
    """What the upgrade may and may not change on the host."""
    return {
        "version": json.loads(on_host(address, stack, "curl -fsS 127.0.0.1:11434/api/version"))["version"],
        "binary": on_host(address, stack, "sha256sum /usr/local/bin/ollama").split()[0],
        # A new value at every start of the unit: tells a restart from a service left running.
        "invocation": on_host(address, stack, "systemctl show ollama -p InvocationID --value").strip(),
        "zstd": on_host(address, stack, "dpkg-query -W -f '${db:Status-Abbrev}' zstd 2>/dev/null || true").strip(),
        "models": on_host(address, stack, f"cd {STATE_DIR}/models && find . -type f | sort | xargs sha256sum"),
        "tags": [m["name"] for m in json.loads(on_host(address, stack, "curl -fsS 127.0.0.1:11434/api/tags"))["models"]],
    }


def test_pinned_upgrade_to_a_tar_zst_release_replaces_the_binary_and_keeps_the_models(stack, releases, served):
    address = stack.up_one()["address"]
    stack.pyinfra()                  # 0.13.3, the .tgz stand-in pushed from here
    before = snapshot(address, stack)
    assert before["version"] == "0.13.3" and before["tags"] == ["llama3.2:1b"]
    assert before["zstd"] != "ii", "a .tgz install must not bring zstd"
    assert before["models"].strip()

    # The hosts download from the stand-in as they would from a mirror; pin reads the same release.
    url = release_url(NEW, archive_name(NEW), base=served)
    stack.write(ollama={"archive": "", "url": url})
    result = stack.ollastack("pin", "ollama", NEW)
    assert result.returncode == 0, result.stderr
    _, sha256 = releases.new
    pinned = load_stack(stack.path).ollama
    assert (pinned.version, pinned.sha256, pinned.url) == (NEW, sha256, url)

    _, report = stack.pyinfra()
    changed = changed_ops(report)
    assert INSTALL_ZSTD in changed and f"Ollama | Verify and install Ollama {NEW}" in changed
    assert "Ollama | Restart Ollama" in changed
    assert not [name for name in changed if name.startswith("Ollama | Pull model")]
    after = snapshot(address, stack)
    assert after["version"] == NEW and after["binary"] != before["binary"]
    assert after["invocation"] != before["invocation"]
    assert after["zstd"] == "ii"
    assert (after["models"], after["tags"]) == (before["models"], before["tags"])
    assert f"/v{NEW}/{archive_name(NEW)}" in releases.requests

    _, report = stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)
