"""A fleet with a model placement on real Debian 12 lab hosts: a gateway and two Ollama backends (stand-ins).

The first backend serves llama3.2:1b and qwen2.5:0.5b, the second llama3.2:1b and tinyllama: two groups, so
the gateway has two upstreams on its loopback (11434 for the first group, 11435 for the second), which Open
WebUI would ask each. One converge; each backend pulls and lists only its own models; a chat sent to a
group's upstream reaches that group's backend alone (the stand-ins log each chat); ``doctor`` checks each
backend against its placement and names the one that lost a placed model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import fleetkit
from tests.support.fleetkit import served, up_and_converge
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

SHARED, FIRST_ONLY, SECOND_ONLY = "llama3.2:1b", "qwen2.5:0.5b", "tinyllama:latest"
PLACEMENT = [[SHARED, FIRST_ONLY], [SHARED, "tinyllama"]]
# The gateway's loopback upstream of each placement group, in the order of the groups' first backends.
GROUP_URLS = ["http://127.0.0.1:11434", "http://127.0.0.1:11435"]


class PlacementStack(LabStack):
    name = "placetest"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[PlacementStack]:
    def make() -> PlacementStack:
        stack = PlacementStack(tmp_path_factory.mktemp("placement"), keypair, archives)
        stack.write(ollama={"models": [SHARED, FIRST_ONLY, "tinyllama"]},
                    extra=f"[fleet]\nbackends = 2\nplacement = {json.dumps(PLACEMENT)}\n")
        return stack

    yield from lab_stack_fixture(make)


@pytest.fixture(scope="module")
def fleet(stack) -> dict:
    """{"gateway": host, "backends": [host, host]} after the one converge."""
    return up_and_converge(stack, 2)


def chat(fleet: dict, keypair, url: str, model: str) -> tuple[str, str]:
    return fleetkit.chat(fleet["gateway"], keypair, model, url)


def listed(fleet: dict, backend: dict, keypair) -> set[str]:
    """The models a backend's Ollama lists, asked from the gateway."""
    tags = ssh(fleet["gateway"]["address"], f"curl -fsS --max-time 5 http://{backend['address']}:11434/api/tags", keypair)
    return {m["name"] for m in json.loads(tags.stdout)["models"]}


def doctor(stack) -> dict:
    return json.loads(stack.ollastack("--json", "doctor").stdout)


def backend_checks(report: dict) -> dict[str, dict]:
    """Backend check name -> the check, from ``doctor``'s report."""
    return {c["name"]: c for h in report["hosts"] for c in h["checks"] if c["name"].startswith("backend ")}


def test_each_backend_pulls_only_its_placed_models(fleet, keypair):
    first, second = fleet["backends"]
    assert listed(fleet, first, keypair) == {SHARED, FIRST_ONLY}
    assert listed(fleet, second, keypair) == {SHARED, SECOND_ONLY}


def test_the_gateway_has_one_loopback_upstream_per_group(fleet, keypair):
    gateway = fleet["gateway"]["address"]
    for url in GROUP_URLS:
        port = url.rsplit(":", 1)[1]
        listening = ssh(gateway, f"ss -ltnH 'sport = :{port}'", keypair).stdout
        assert {line.split()[3] for line in listening.splitlines()} == {f"127.0.0.1:{port}"}, listening
    # Each group's upstream answers /api/tags as Open WebUI asks it: with its own group's models.
    tags = [json.loads(ssh(gateway, f"curl -fsS --max-time 5 {url}/api/tags", keypair).stdout) for url in GROUP_URLS]
    assert [{m["name"] for m in t["models"]} for t in tags] == [{SHARED, FIRST_ONLY}, {SHARED, SECOND_ONLY}]


def test_a_chat_reaches_only_the_backends_of_its_models_group(fleet, keypair):
    first, second = fleet["backends"]
    before = [len(served(b, keypair)) for b in (first, second)]
    for _ in range(3):
        assert chat(fleet, keypair, GROUP_URLS[0], FIRST_ONLY)[0] == "200"
        assert chat(fleet, keypair, GROUP_URLS[1], SECOND_ONLY)[0] == "200"
    chats = [served(b, keypair)[n:] for b, n in zip((first, second), before)]
    assert chats == [[FIRST_ONLY] * 3, [SECOND_ONLY] * 3], chats
    # The first group's upstream never reaches the backend with the second group's model.
    code, body = chat(fleet, keypair, GROUP_URLS[0], SECOND_ONLY)
    assert code == "404" and "not found" in body
    assert len(served(second, keypair)) == before[1] + 3


def test_a_second_converge_changes_nothing(stack, fleet):
    _, report = stack.pyinfra()
    assert report is not None and report["results"]["totals"]["error"] == 0
    assert changed_ops(report) == [], changed_ops(report)


def test_doctor_checks_each_backend_against_its_placement(stack, fleet, keypair):
    first, second = fleet["backends"]
    healthy = doctor(stack)
    # Each backend's own checks expect its placed models only.
    assert healthy["ok"], [(h["name"], c) for h in healthy["hosts"] for c in h["checks"] if c["status"] != "ok"]
    checks = backend_checks(healthy)
    assert {n: c["status"] for n, c in checks.items()} == {f"backend {first['name']}": "ok",
                                                           f"backend {second['name']}": "ok"}
    assert FIRST_ONLY in checks[f"backend {first['name']}"]["detail"]
    assert "tinyllama" in checks[f"backend {second['name']}"]["detail"]
    ssh(fleet["gateway"]["address"], f"curl -fsS --max-time 5 -X DELETE -d '{{\"model\": \"tinyllama\"}}' "
        f"http://{second['address']}:11434/api/delete", keypair)
    checks = backend_checks(doctor(stack))
    assert checks[f"backend {first['name']}"]["status"] == "ok"
    lost = checks[f"backend {second['name']}"]
    assert lost["status"] == "fail" and SECOND_ONLY in lost["detail"], lost
