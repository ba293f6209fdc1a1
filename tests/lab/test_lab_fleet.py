"""A fleet on real Debian 12 lab hosts: a gateway and two Ollama backends (stand-ins), one converge.

From a machine on the bridge outside the admin networks only the gateway's web ports answer; the
control machine (an admin network) reaches no backend's Ollama either; the gateway reaches each
backend's Ollama, one backend not the other's. Chats sent to the gateway's loopback upstream reach
both backends (the stand-ins log each chat); with one backend's Ollama stopped, chats still succeed
and ``doctor`` names that backend; started again, it serves chats again. Last, a third backend changes
nothing on the first two and serves chats; going back to two, ``up`` drains it from the gateway (a
connection the gateway holds to it ends normally) before the lab host is removed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from ollastack import lab
from tests.support import fleetkit
from tests.support.fleetkit import served, up_and_converge
from tests.support.labkit import LabStack, bridge_prober, changed_ops, lab_stack_fixture, port_open, ssh

pytestmark = pytest.mark.lab

# Far above the lab allocator's first addresses (lab.FIRST_HOST), and apart from test_lab_firewall's.
OUTSIDER = "10.213.0.247"
MODEL = "llama3.2:1b"
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
    return up_and_converge(stack, 2)


@pytest.fixture()
def from_bridge() -> Iterator[Callable[[str, str, int], bool]]:
    yield from bridge_prober("fleet")


def chat(fleet: dict, keypair) -> dict:
    """One chat through the gateway's balanced Ollama on its loopback, as Open WebUI sends it."""
    code, body = fleetkit.chat(fleet["gateway"], keypair, MODEL)
    assert code == "200", body
    return json.loads(body)


def chats_served(backend: dict, keypair) -> int:
    return len(served(backend, keypair))


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


# --- growing to three backends and shrinking back (these run last: they change the fleet) ---------------

SITE = "/etc/nginx/sites-available/ollastack.conf"
HELD, RELEASE = "/root/held-connection.out", "/root/held-connection.release"
# On the gateway, with the third backend's address: hold a connection to its Ollama open (as nginx
# does for a stream) until the test releases it, then ask for the version on it. A backend removed
# before the gateway's connections to it ended answers nothing.
HOLD = ("exec 3<>/dev/tcp/{address}/11434 || exit 1; n=0; "
        "while [ ! -e " + RELEASE + " ] && [ $n -lt 900 ]; do sleep 1; n=$((n+1)); done; "
        "printf 'GET /api/version HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3 > " + HELD)


def changed_on(report: dict, address: str) -> list[str]:
    """Names of the operations that changed something on one host (its inventory name is its address)."""
    return [op["name"] for op in report["results"]["operations"] if address in op["success"]]


@pytest.fixture(scope="module")
def grown(stack, fleet) -> dict:
    """The fleet with a third backend: {"backends": [...3], "report": the converge's --json results}."""
    stack.write(extra="[fleet]\nbackends = 3\n")
    result = stack.ollastack("--json", "lab", "up")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert [h["name"] for h in hosts[:3]] == [fleet["gateway"]["name"], *(b["name"] for b in fleet["backends"])]
    _, report = stack.pyinfra()
    assert report is not None and report["results"]["totals"]["error"] == 0
    return {"gateway": hosts[0], "backends": hosts[1:], "report": report}


def test_a_third_backend_changes_nothing_on_the_first_two_and_serves_chats(fleet, grown, keypair):
    first, second, third = grown["backends"]
    assert changed_on(grown["report"], first["address"]) == []
    assert changed_on(grown["report"], second["address"]) == []
    # The gateway's upstream gained the third: its site changed, and nginx reloaded.
    assert changed_on(grown["report"], grown["gateway"]["address"])
    upstream = ssh(grown["gateway"]["address"], f"cat {SITE}", keypair).stdout
    assert all(f"server {b['address']}:11434 " in upstream for b in grown["backends"])
    before = chats_served(third, keypair)
    for _ in range(9):
        assert chat(grown, keypair)["done"] is True
    assert chats_served(third, keypair) > before


def test_going_back_to_two_drains_the_third_then_removes_it(stack, grown, keypair):
    gateway, (first, second, third) = grown["gateway"], grown["backends"]
    ssh(gateway["address"], f"rm -f {HELD} {RELEASE}; setsid nohup bash -c {shlex.quote(HOLD.format(address=third['address']))} "
        "</dev/null >/dev/null 2>&1 &", keypair)
    stack.write(extra="[fleet]\nbackends = 2\n")
    up = subprocess.Popen([sys.executable, "-m", "ollastack.cli", "--json", "up"], env=stack.env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    waiting = f"open connection(s) from the gateway to {third['name']} to end"
    progress = []
    assert up.stderr is not None
    for line in up.stderr:
        progress.append(line)
        if waiting in line:
            break
    try:
        # up drains: the upstream no longer lists the third backend, and the host stays while the gateway holds a connection to it.
        assert any(waiting in line for line in progress), "".join(progress)
        assert third["name"] in [h["name"] for h in lab.list_hosts(stack.name) if h["running"]]
        upstream = ssh(gateway["address"], f"cat {SITE}", keypair).stdout
        assert f"{third['address']}:11434" not in upstream
        assert all(f"server {b['address']}:11434 " in upstream for b in (first, second))
    finally:
        ssh(gateway["address"], f"touch {RELEASE}", keypair)
        out, err = up.communicate(timeout=900)
    assert up.returncode == 0, ("".join(progress) + err)[-4000:]
    # The connection ended normally (its request answered), then the host was removed.
    answer = ssh(gateway["address"], f"cat {HELD}", keypair).stdout
    assert answer.startswith("HTTP/1.") and " 200 " in answer.splitlines()[0] and '"version"' in answer, answer
    assert f"{third['name']}: drained from the gateway's upstream" in err
    assert json.loads(out)["removed"] == [f"host {third['name']} ({third['address']})"]
    assert [h["name"] for h in lab.list_hosts(stack.name)] == [gateway["name"], first["name"], second["name"]]
    before = [chats_served(b, keypair) for b in (first, second)]
    for _ in range(4):
        assert chat(grown, keypair)["done"] is True
    assert sum(chats_served(b, keypair) for b in (first, second)) - sum(before) == 4
