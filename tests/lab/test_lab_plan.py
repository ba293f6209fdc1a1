"""``ollastack plan`` for a lab stack and a static one on a Debian 12 lab host: what ``up`` would create and
what its converge would change (``pyinfra --dry``), with nothing created, issued or changed by the plan.

The tests run in order: before ``up`` (the host would be created), right after it (no changes), after
drift made by hand (the operations that would repair it, the drift still there), then a static stack on
the same host (a certificate that would be issued, not written).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollastack import lab
from ollastack.deploy.ollama import OVERRIDE
from tests.support.labkit import LabStack, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

OVERRIDE_CHANGES = [{"name": "Ollama | Ollama settings (override.conf)", "conditional": False},
                    {"name": "Ollama | Reload systemd units", "conditional": True},
                    {"name": "Ollama | Restart Ollama", "conditional": True},
                    {"name": "Ollama | Wait for Ollama to be healthy", "conditional": True}]


class PlanStack(LabStack):
    name = "plandrytest"


def files_under(path: Path) -> dict[str, bytes]:
    """Every file below ``path`` but ollastack's .gitignore markers, with its content."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != ".gitignore"} if path.exists() else {}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[PlanStack]:
    yield from lab_stack_fixture(lambda: PlanStack(tmp_path_factory.mktemp("plandry"), keypair, archives))


def plan(stack: LabStack) -> tuple[str, dict]:
    """``ollastack plan``'s text (stdout) and its ``--json`` payload, both exiting 0."""
    text = stack.ollastack("plan")
    machine = stack.ollastack("--json", "plan")
    assert machine.returncode == text.returncode, machine.stderr[-4000:]
    assert text.returncode == 0, text.stdout + text.stderr[-4000:]
    return text.stdout, json.loads(machine.stdout)


def test_plan_before_up_says_the_host_would_be_created_and_creates_nothing(stack):
    out, payload = plan(stack)
    assert "create     host  1 lab host(s)  (booted and fully converged by `up`)" in out
    assert payload["ok"] and payload["hosts"] == [] and payload["counts"] == {"create": 1, "update": 0, "no change": 0}
    assert lab.list_hosts(stack.name) == []
    assert files_under(stack.dir / "ssl") == {} and files_under(stack.dir / "state") == {}


@pytest.fixture(scope="module")
def host(stack) -> dict:
    result = stack.ollastack("up")
    assert result.returncode == 0, result.stderr[-4000:]
    (found,) = lab.list_hosts(stack.name)
    return found


def test_plan_after_up_shows_no_changes(stack, host):
    before = files_under(stack.dir)
    out, payload = plan(stack)
    assert f"  {host['name']} ({host['address']}): no changes" in out
    assert out.splitlines()[-1] == "plan: 0 to create, 0 to update, 1 unchanged; 0 operations would change on 0 of 1 host"
    assert payload["ok"] and payload["hosts"] == [{"name": host["name"], "address": host["address"],
                                                    "operations": [], "changes": 0}]
    assert files_under(stack.dir) == before


def test_hand_edited_override_is_planned_not_fixed(stack, host):
    ssh(host["address"], f"sed -i 's/OLLAMA_KEEP_ALIVE=5m/OLLAMA_KEEP_ALIVE=99m/' {OVERRIDE}", stack.keypair)
    edited = ssh(host["address"], f"sha256sum {OVERRIDE}", stack.keypair).stdout
    try:
        out, payload = plan(stack)
        assert f"  {host['name']} ({host['address']}): 4 operations would change" in out
        assert "    Ollama | Ollama settings (override.conf)\n    Ollama | Reload systemd units  (after a change above)" in out
        (changes,) = payload["hosts"]
        assert changes["operations"] == OVERRIDE_CHANGES and changes["changes"] == 4
        assert payload["counts"] == {"create": 0, "update": 1, "no change": 0}
        assert ssh(host["address"], f"sha256sum {OVERRIDE}", stack.keypair).stdout == edited
    finally:
        assert stack.ollastack("up").returncode == 0


def test_stopped_and_disabled_service_is_planned_not_started(stack, host):
    ssh(host["address"], "systemctl disable --now --quiet nginx", stack.keypair)
    try:
        out, payload = plan(stack)
        assert [op["name"] for op in payload["hosts"][0]["operations"]] == ["nginx | nginx running and enabled"]
        state = ssh(host["address"], "systemctl is-active nginx; systemctl is-enabled nginx", stack.keypair, check=False)
        assert state.stdout.split() == ["inactive", "disabled"]
    finally:
        assert stack.ollastack("up").returncode == 0


def test_flushed_firewall_is_planned_from_its_condition(stack, host):
    """"Apply firewall rules" runs only when the live table drifted or a file changed: a flushed table alone
    (no file changed) must still show, as the one change."""
    ssh(host["address"], "nft flush table inet ollastack", stack.keypair)
    try:
        out, payload = plan(stack)
        assert payload["hosts"][0]["operations"] == [{"name": "Firewall | Apply firewall rules", "conditional": True}]
    finally:
        assert stack.ollastack("up").returncode == 0


class StaticPlanStack(LabStack):
    """The same lab host as a static host: its own stack directory, so its CA and certificate do not exist yet."""

    name = "plandrytest"
    # The control machine converges over the bridge; the lab adds this itself, a static stack must say it.
    admin_cidrs = [*LabStack.admin_cidrs, "10.213.0.1/32"]
    address = ""

    def write(self, ollama: dict | None = None, extra: str = "") -> None:
        super().write(ollama, extra)
        text = self.path.read_text().replace('provider = "lab"', 'provider = "static"')
        text = text.replace(f'[lab]\nrelease = "{self.release}"\n', f'[static]\nhosts = ["{self.address}"]\n')
        self.path.write_text(text)


def test_static_stack_plans_a_certificate_without_issuing_it(stack, host, tmp_path, keypair, archives):
    StaticPlanStack.address = host["address"]
    static = StaticPlanStack(tmp_path, keypair, archives)
    assert 'provider = "static"' in static.path.read_text()
    out, payload = plan(static)
    (changes,) = payload["hosts"]
    assert changes["address"] == host["address"]
    names = [op["name"] for op in changes["operations"]]
    assert {"TLS | Stack CA certificate", "TLS | Server certificate chain", "TLS | Server private key"} <= set(names)
    local = {c["name"]: c["action"] for c in payload["changes"] if c["kind"] == "local file"}
    assert local[f"ssl/plandrytest/{host['address']}.pem"] == "create" and local["ssl/plandrytest/ca.pem"] == "create"
    assert f"create     local file  ssl/plandrytest/{host['address']}-key.pem" in out
    assert files_under(tmp_path / "ssl") == {}
    assert not (tmp_path / "state" / "plandrytest.known_hosts").exists()
    # The host still serves the lab stack's certificate: the plan uploaded nothing.
    served = ssh(host["address"], "sha256sum /etc/ollastack/tls/fullchain.pem", stack.keypair).stdout.split()[0]
    issued = stack.dir / "ssl" / "plandrytest" / f"{host['name']}-fullchain.pem"
    assert served == hashlib.sha256(issued.read_bytes()).hexdigest()
