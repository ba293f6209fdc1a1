"""Drift on a converged Debian 12 lab host, made by hand over SSH, is found and fixed by the next converge.

A faster converge must never skip work by trusting what it did last time (issue 17): each test breaks
one thing the way an operator or a package upgrade does, then checks which operations the next converge
changed and that the host is back as the stack describes it.

Covered elsewhere and not repeated here: a flushed ruleset, a rule added by hand and a stopped firewall
unit (tests/lab/test_lab_firewall.py); a changed setting (tests/lab/test_lab_spine.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from ollastack.deploy.ollama import OVERRIDE
from ollastack.deploy.nginx import SITE
from ollastack.deploy.tls import TLS_DIR
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

RESTART_OLLAMA = ["Ollama | Ollama settings (override.conf)", "Ollama | Reload systemd units",
                  "Ollama | Restart Ollama", "Ollama | Wait for Ollama to be healthy"]
HSTS = "max-age=63072000"


class DriftStack(LabStack):
    name = "drifttest"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[DriftStack]:
    yield from lab_stack_fixture(lambda: DriftStack(tmp_path_factory.mktemp("drift"), keypair, archives))


@pytest.fixture(scope="module")
def host(stack) -> dict:
    return stack.converged_one()


def on_host(host: dict, stack: DriftStack, command: str) -> str:
    return ssh(host["address"], command, stack.keypair).stdout


def converge(stack: DriftStack) -> list[str]:
    """The names of the operations the next converge changed."""
    _, report = stack.pyinfra()
    return changed_ops(report)


def models(host: dict, stack: DriftStack) -> list[str]:
    return [m["name"] for m in json.loads(on_host(host, stack, "curl -fsS 127.0.0.1:11434/api/tags"))["models"]]


def test_hand_edited_override_is_put_back_and_ollama_restarted(stack, host):
    before = on_host(host, stack, f"cat {OVERRIDE}")
    on_host(host, stack, f"sed -i 's/OLLAMA_KEEP_ALIVE=5m/OLLAMA_KEEP_ALIVE=99m/' {OVERRIDE} && "
                         "systemctl daemon-reload && systemctl restart ollama")
    assert "OLLAMA_KEEP_ALIVE=99m" in on_host(host, stack, "systemctl show ollama -p Environment --value")
    assert converge(stack) == RESTART_OLLAMA
    assert on_host(host, stack, f"cat {OVERRIDE}") == before
    env = on_host(host, stack, "systemctl show ollama -p Environment --value")
    assert "OLLAMA_KEEP_ALIVE=5m" in env and "99m" not in env


def test_replaced_ollama_binary_is_installed_again(stack, host):
    """The release stamp matches still; the binary does not, so the stamp alone must not skip the install."""
    before = on_host(host, stack, "sha256sum /usr/local/bin/ollama")
    on_host(host, stack, "cp /bin/true /usr/local/bin/ollama")
    assert converge(stack) == ["Ollama | Verify and install Ollama 0.13.3", "Ollama | Restart Ollama",
                               "Ollama | Wait for Ollama to be healthy"]
    assert on_host(host, stack, "sha256sum /usr/local/bin/ollama") == before
    assert json.loads(on_host(host, stack, "curl -fsS 127.0.0.1:11434/api/version"))["version"] == "0.13.3"


def test_hand_edited_nginx_site_is_put_back_and_reloaded(stack, host):
    before = on_host(host, stack, f"sha256sum {SITE}")
    on_host(host, stack, f"sed -i 's/{HSTS}/max-age=1/' {SITE} && systemctl reload nginx")
    live = f"curl -sk -o /dev/null -D - https://{host['address']}/ | grep -i '^strict-transport-security'"
    assert "max-age=1" in on_host(host, stack, live)
    assert converge(stack) == ["nginx | nginx site", "nginx | Check and reload nginx"]
    assert on_host(host, stack, f"sha256sum {SITE}") == before
    assert HSTS in on_host(host, stack, live)


def test_stopped_services_are_started(stack, host):
    on_host(host, stack, "systemctl stop ollama nginx")
    # Stopped, Ollama lists no model: the pull helper is asked, and finds the model there once Ollama is back.
    assert converge(stack) == ["Ollama | Ollama running and enabled", "nginx | nginx running and enabled",
                               "Ollama | Pull model llama3.2:1b"]
    assert on_host(host, stack, "systemctl is-active ollama nginx").split() == ["active", "active"]
    assert models(host, stack) == ["llama3.2:1b"]


def test_disabled_services_are_enabled(stack, host):
    on_host(host, stack, "systemctl disable --quiet ollama nginx")
    assert converge(stack) == ["Ollama | Ollama running and enabled", "nginx | nginx running and enabled"]
    assert on_host(host, stack, "systemctl is-enabled ollama nginx").split() == ["enabled", "enabled"]


def test_deleted_model_is_pulled_again(stack, host):
    on_host(host, stack, "ollama rm llama3.2:1b")
    assert models(host, stack) == []
    assert converge(stack) == ["Ollama | Pull model llama3.2:1b"]
    assert models(host, stack) == ["llama3.2:1b"]


def test_flushed_firewall_table_is_applied_again(stack, host):
    listing = "nft --stateless --numeric-protocol list table inet ollastack"
    before = on_host(host, stack, listing)
    # Flushing keeps the table and its chains but no rule: the SSH session must survive it to be repaired.
    on_host(host, stack, "nft flush table inet ollastack")
    assert "tcp dport" not in on_host(host, stack, listing)
    assert converge(stack) == ["Firewall | Apply firewall rules"]
    assert on_host(host, stack, listing) == before


def test_purged_nginx_is_installed_again(stack, host):
    on_host(host, stack, "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q nginx >/dev/null")
    assert ssh(host["address"], "command -v nginx", stack.keypair, check=False).returncode != 0
    # Debian starts nginx on install, with the site the purge left in /etc/nginx (not the package's).
    assert converge(stack) == ["Base | Install packages"]
    assert on_host(host, stack, "systemctl is-active nginx").strip() == "active"
    status = f"curl -sk -o /dev/null -w '%{{http_code}}' https://{host['address']}/"
    assert on_host(host, stack, status) == "503"


def test_removed_base_package_is_installed_again(stack, host):
    on_host(host, stack, "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q htop >/dev/null")
    assert converge(stack) == ["Base | Install packages"]
    assert "install ok installed" in on_host(host, stack, "dpkg-query -W -f '${Status}' htop")


def test_loosened_private_key_mode_is_tightened(stack, host):
    key = f"{TLS_DIR}/privkey.pem"
    on_host(host, stack, f"chmod 0644 {key}")
    assert converge(stack) == ["TLS | Server private key", "nginx | Check and reload nginx"]
    assert on_host(host, stack, f"stat -c %a {key}").strip() == "600"


def test_world_writable_override_is_tightened(stack, host):
    """Anyone who can write a systemd drop-in runs code as root: the mode is part of the file."""
    on_host(host, stack, f"chmod 0666 {OVERRIDE}")
    assert converge(stack) == RESTART_OLLAMA
    assert on_host(host, stack, f"stat -c %a {OVERRIDE}").strip() == "644"


def test_after_the_repairs_a_converge_changes_nothing(stack, host):
    assert converge(stack) == []
