"""Plan-time conventions of the whole site deploy, on pyinfra's ``@fake`` connector (nothing is executed):

- a converge that cannot succeed stops before pyinfra has planned a single operation on any host;
- the control machine's work (issuing certificates) happens before pyinfra runs: ``pyinfra --dry``
  writes nothing under ssl/;
- the inventory's host data holds only ``ollastack_``-prefixed keys besides pyinfra's own.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import DeployError

from tests.support.repo import REPO
from ollastack.certs import issue_for_inventory
from ollastack.config import parse_stack
from ollastack.host import Host
from ollastack.inventory import pyinfra_hosts

FAKE = "@fake/plan-host"
ADDRESS = "192.0.2.10"
# A Debian 13 host that this converge reaches from 192.0.2.1 (what the checks and server.user ask).
ANSWERS = {"/etc/os-release": ["debian 13"], "SSH_CONNECTION": ["192.0.2.1"], "uname -s": ["Linux"],
           "command -v useradd": ["/usr/sbin/useradd"]}
PYINFRA_KEYS = {"ssh_user", "ssh_key", "ssh_port", "ssh_strict_host_key_checking", "ssh_known_hosts_file", "_sudo"}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A stack directory with its own ssl/ and state, and a key pair for the stack file."""
    (tmp_path / "id.pub").write_text("ssh-ed25519 AAAA test\n")
    (tmp_path / "id").write_text("key\n")
    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def stack_file(home: Path, admin_cidrs: list[str]) -> Path:
    path = home / "stack.toml"
    path.write_text(f'[stack]\nname = "plantest"\nprovider = "static"\n\n[static]\nhosts = ["192.0.2.10"]\n\n'
                    f'[access]\nadmin_cidrs = {admin_cidrs!r}\nssh_public_key = "{home / "id.pub"}"\n'
                    f'ssh_private_key = "{home / "id"}"\n'.replace("'", '"'))
    return path


def entries(home: Path, admin_cidrs: list[str], user: str = "root") -> list[tuple[str, dict]]:
    stack = parse_stack(tomllib.loads(stack_file(home, admin_cidrs).read_text()))
    found = pyinfra_hosts(stack, [Host("plan-1", FAKE, user)])
    for _, data in found:
        data.update(fake_responses=ANSWERS, fake_delay=0, fake_delay_jitter=0)
    return found


def issue(hosts: list[tuple[str, dict]]) -> list[Path]:
    """Issue the hosts' certificates as ``ollastack up`` does, for the address the fake host stands for
    (a certificate cannot name "@fake/...")."""
    return issue_for_inventory([(ADDRESS, data) for _, data in hosts])


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def plan_site(hosts: list[tuple[str, dict]]) -> State:
    """Connect to ``hosts`` and load deploy/site.py for them, as the pyinfra CLI does before executing anything."""
    state = State(Inventory((hosts, {})), Config())
    connect_all(state)
    plan_site.state = state
    add_deploy(state, lambda: runpy.run_path(str(REPO / "deploy" / "site.py")))
    return state


def test_a_lockout_stops_before_any_operation_is_planned(home):
    hosts = entries(home, ["198.51.100.0/24"])
    issue(hosts)
    with pytest.raises(DeployError, match="does not include 192.0.2.1, the address this converge connects from"):
        plan_site(hosts)
    # Not one operation: Base, the first component, never got to plan its apt configuration.
    assert plan_site.state.get_op_order() == []


def test_a_converge_without_issued_certificates_stops_before_any_operation(home):
    with pytest.raises(DeployError, match="python -m ollastack.certs INVENTORY"):
        plan_site(entries(home, ["192.0.2.1/32"]))
    assert plan_site.state.get_op_order() == []
    assert files_under(home / "ssl") == {}


def test_the_site_plans_with_issued_certificates(home):
    hosts = entries(home, ["192.0.2.1/32"])
    issued = issue(hosts)
    before = files_under(home / "ssl")
    state = plan_site(hosts)
    names = [list(state.op_meta[h].names)[0] for h in state.get_op_order()]
    assert names[0] == "Base | apt waits for the dpkg lock" and "TLS | Server certificate chain" in names
    assert [p.name for p in issued] == ["plan-1-fullchain.pem"]
    assert files_under(home / "ssl") == before


def inventory_file(home: Path, address: str) -> Path:
    """A plain pyinfra inventory of the stack's one host at ``address``."""
    path = home / f"inventory_{address.strip('@').replace('/', '_').replace('.', '_').replace('-', '_')}.py"
    path.write_text(
        "from ollastack.config import load_stack\nfrom ollastack.host import Host\nfrom ollastack.inventory import pyinfra_hosts\n"
        f"hosts = pyinfra_hosts(load_stack(), [Host('plan-1', {address!r})])\n"
        f"for _, data in hosts:\n    data.update(fake_responses={ANSWERS!r}, fake_delay=0, fake_delay_jitter=0)\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_pyinfra_dry_writes_nothing_under_ssl(home, monkeypatch):
    monkeypatch.setenv("OLLASTACK_CONFIG", str(stack_file(home, ["192.0.2.1/32"])))
    dry = ("pyinfra", "--dry", str(inventory_file(home, FAKE)), "deploy/site.py")
    process = run(*dry)
    # Nothing issued yet: the dry run stops at the checks, naming the command that issues them, and writes nothing.
    assert process.returncode != 0 and "python -m ollastack.certs INVENTORY" in process.stdout + process.stderr
    assert files_under(home / "ssl") == {}
    issued = run("ollastack.certs", str(inventory_file(home, ADDRESS)))
    assert issued.returncode == 0, issued.stderr
    before = files_under(home / "ssl")
    assert {"plantest/ca.pem", "plantest/plan-1-fullchain.pem", "plantest/plan-1-key.pem"} <= set(before)
    process = run(*dry)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert files_under(home / "ssl") == before


def test_host_data_holds_only_namespaced_keys_besides_pyinfras_own(home):
    [(_, data)] = entries(home, ["192.0.2.1/32"], user="ollastack")
    for key in ("fake_responses", "fake_delay", "fake_delay_jitter"):
        data.pop(key)
    foreign = [k for k in data if not k.startswith("ollastack_") and k not in PYINFRA_KEYS]
    assert foreign == []
    assert data["_sudo"] is True and data["ssh_user"] == "ollastack"
    assert data["ollastack_ollama_host"] == "127.0.0.1:11434" and data["ollastack_name"] == "plan-1"
    assert not any("password" in k and not k.endswith("_file") for k in data)
