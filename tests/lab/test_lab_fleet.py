"""A fleet on real Debian 12 lab hosts: a gateway and two Ollama backends (stand-ins), one converge.

From a machine on the bridge outside the admin networks only the gateway's web ports answer; the
control machine (an admin network) reaches no backend's Ollama either; the gateway reaches each
backend's Ollama, one backend not the other's. Chats sent to the gateway's loopback upstream reach
both backends (the stand-ins log each chat); with one backend's Ollama stopped, chats still succeed
and ``doctor`` names that backend; started again, it serves chats again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.labkit import LabStack, bridge_prober, changed_ops, lab_stack_fixture, port_open, ssh

pytestmark = pytest.mark.lab

# Far above the lab allocator's first addresses (lab.FIRST_HOST), and apart from test_lab_firewall's.
OUTSIDER = "10.213.0.247"
MODEL = "llama3.2:1b"
CHAT_LOG = "/usr/share/ollama/.ollama/models/standin-chats.jsonl"
CHAT = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "stream": False})
# Long enough for Ollama to start and nginx's fail_timeout (10 s) to pass, bounding only the wait.
REJOIN_WAIT_S = 120


class FleetStack(LabStack):
    name = "fleettest"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[FleetStack]:
    def make() -> FleetStack:
        stack = FleetStack(tmp_path_factory.mktemp("fleet"), keypair, archives)
        stack.write(extra="[fleet]\nbackends = 2\n")
        return stack

    yield from lab_stack_fixture(make)


@pytest.fixture(scope="module")
def fleet(stack) -> dict:
    """{"gateway": host, "backends": [host, host]} after the one converge."""
    result = stack.ollastack("--json", "lab", "up")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert len(hosts) == 3
    _, report = stack.pyinfra()
    assert report is not None and report["results"]["totals"]["error"] == 0
    return {"gateway": hosts[0], "backends": hosts[1:]}


@pytest.fixture()
def from_bridge() -> Iterator[Callable[[str, str, int], bool]]:
    yield from bridge_prober("fleet")


def chat(fleet: dict, keypair) -> dict:
    """One chat through the gateway's balanced Ollama on its loopback, as Open WebUI sends it."""
    result = ssh(fleet["gateway"]["address"], "curl -sS --max-time 30 -w '\\n%{http_code}' "
                 f"-H 'Content-Type: application/json' -d '{CHAT}' http://127.0.0.1:11434/api/chat", keypair)
    body, _, code = result.stdout.rpartition("\n")
    assert code == "200", result.stdout
    return json.loads(body)


def chats_served(backend: dict, keypair) -> int:
    result = ssh(backend["address"], f"cat {CHAT_LOG} 2>/dev/null | wc -l", keypair)
    return int(result.stdout.strip())


def doctor(stack) -> dict:
    result = stack.ollastack("--json", "doctor")
    return json.loads(result.stdout)


def backends_status(stack) -> dict[str, bool]:
    """Backend name -> whether ``status`` saw the gateway reach it with the stack's model."""
    report = json.loads(stack.ollastack("--json", "status").stdout)
    return {b["name"]: b["reachable"] and MODEL in b["models"] for b in report["backends"]}


def backend_checks(report: dict) -> dict[str, str]:
    """Backend check name -> status, from the gateway's checks."""
    return {c["name"]: c["status"] for h in report["hosts"] for c in h["checks"] if c["name"].startswith("backend ")}


def test_from_outside_only_the_gateways_web_ports_answer(fleet, keypair, from_bridge):
    gateway = fleet["gateway"]["address"]
    assert from_bridge(OUTSIDER, gateway, 443) and from_bridge(OUTSIDER, gateway, 80)
    assert not from_bridge(OUTSIDER, gateway, 22)
    assert not from_bridge(OUTSIDER, gateway, 11434)
    for backend in fleet["backends"]:
        for port in (22, 80, 443, 11434):
            assert not from_bridge(OUTSIDER, backend["address"], port), (backend["name"], port)
        # The control machine is an admin network: SSH answers it, Ollama does not.
        assert port_open(backend["address"], 22)
        assert not port_open(backend["address"], 11434)
        # Ollama listens on the private address, not on every address.
        listening = ssh(backend["address"], "ss -ltnH 'sport = :11434'", keypair).stdout
        assert f"{backend['address']}:11434" in listening and "0.0.0.0:11434" not in listening


def test_the_gateway_reaches_each_backend_and_no_backend_the_other(fleet, keypair):
    gateway = fleet["gateway"]["address"]
    first, second = fleet["backends"]
    for backend in (first, second):
        ssh(gateway, f"curl -fsS --max-time 5 http://{backend['address']}:11434/api/version", keypair)
    for source, target in ((first, second), (second, first)):
        result = ssh(source["address"], f"curl -fsS --max-time 5 http://{target['address']}:11434/api/version",
                     keypair, check=False)
        assert result.returncode != 0, f"{source['name']} reached {target['name']}'s Ollama"


def test_chats_spread_over_both_backends(fleet, keypair):
    before = [chats_served(b, keypair) for b in fleet["backends"]]
    for _ in range(6):
        assert chat(fleet, keypair)["done"] is True
    after = [chats_served(b, keypair) for b in fleet["backends"]]
    served = [a - b for a, b in zip(after, before)]
    assert sum(served) == 6 and all(n > 0 for n in served), served


def test_a_second_converge_of_the_fleet_changes_nothing(stack, fleet):
    """Gateway and backends alike: the upstream, the backends' firewall and OLLAMA_HOST stay as converged."""
    _, report = stack.pyinfra()
    assert report is not None and report["results"]["totals"]["error"] == 0
    assert changed_ops(report) == [], changed_ops(report)


def test_a_stopped_backend_is_skipped_named_by_doctor_and_rejoins(stack, fleet, keypair):
    alive, dead = fleet["backends"]
    healthy = doctor(stack)
    # Every host passes the checks of its role (the gateway's nginx and upstream, the backends' Ollama).
    assert healthy["ok"], [(h["name"], c) for h in healthy["hosts"] for c in h["checks"] if c["status"] != "ok"]
    assert set(backend_checks(healthy).values()) == {"ok"} and len(backend_checks(healthy)) == 2
    assert backends_status(stack) == {alive["name"]: True, dead["name"]: True}
    ssh(dead["address"], "systemctl stop ollama", keypair)
    try:
        before = chats_served(alive, keypair)
        for _ in range(4):
            assert chat(fleet, keypair)["done"] is True
        assert chats_served(alive, keypair) - before == 4
        checks = backend_checks(doctor(stack))
        assert checks[f"backend {dead['name']}"] == "fail"
        assert checks[f"backend {alive['name']}"] == "ok"
        assert backends_status(stack) == {alive["name"]: True, dead["name"]: False}
    finally:
        ssh(dead["address"], "systemctl start ollama", keypair)
    # nginx tries the backend again once fail_timeout has passed: chats reach it again.
    before = chats_served(dead, keypair)
    deadline = time.monotonic() + REJOIN_WAIT_S
    while chats_served(dead, keypair) == before and time.monotonic() < deadline:
        chat(fleet, keypair)
        time.sleep(1)
    assert chats_served(dead, keypair) > before
    assert set(backend_checks(doctor(stack)).values()) == {"ok"}
