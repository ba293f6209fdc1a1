"""A fleet on Alibaba Cloud (``fleet.backends``), through the real ECS/VPC SDKs against the stand-in: the
gateway keeps the one host's public address, the backends get no bandwidth out (no public address) in
its vSwitch, their own security group admits SSH and Ollama's port from the gateway's private address
alone and drops traffic between its members, the backends are created beside each other, and
``down`` removes them all."""

from __future__ import annotations

import io
import ipaddress

import pytest

from ollastack import fleet, planning, providers
from ollastack.cloud import alibaba
from ollastack.config import parse_stack
from ollastack.host import Host
from ollastack.progress import Progress
from ollastack.state import StackState
from tests.integration.test_alibaba import FAST, _env, _loopback_only, down, emu, keys, up  # noqa: F401
from tests.integration.test_plan_alibaba import HOURLY
from tests.support.alibaba_emulator import DISK_PRICES

ADMIN = ["198.51.100.7/32"]


def fleet_stack(emu, keys, backends=2, name="demo"):
    public, private = keys
    return parse_stack({"stack": {"name": name, "provider": "alibaba"},
                        "access": {"ssh_public_key": str(public), "ssh_private_key": str(private), "admin_cidrs": ADMIN},
                        "alibaba": {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url},
                        "fleet": {"backends": backends}})


def rules(group):
    return {(r["IpProtocol"], r["PortRange"], r["SourceCidrIp"]) for r in group["rules"]}


def groups_by_name(emu):
    return {g["name"]: g for g in emu.resources["security_group"].values()}


def test_backends_have_no_public_address_and_sit_in_the_gateways_vswitch(emu, keys):
    hosts = up(fleet_stack(emu, keys, 2))

    gateway, *backends = [Host.from_record(h) for h in hosts]
    assert [h.name for h in (gateway, *backends)] == ["demo-1", "demo-2", "demo-3"]
    assert gateway.address == "127.0.0.1" and gateway.jump is None
    assert ipaddress.ip_address(gateway.private_address) in ipaddress.ip_network(alibaba.VSWITCH_CIDR)
    for backend in backends:
        assert ipaddress.ip_address(backend.address) in ipaddress.ip_network(alibaba.VSWITCH_CIDR)
        assert backend.jump is not None and backend.jump.address == gateway.address
    assert len({gateway.private_address, *(b.address for b in backends)}) == 3
    runs = {r["InstanceName"]: r for r in emu.calls("RunInstances")}
    assert sorted(runs) == ["ollastack-demo", "ollastack-demo-backend1", "ollastack-demo-backend2"]
    assert runs["ollastack-demo"]["InternetMaxBandwidthOut"] != "0"
    groups = groups_by_name(emu)
    for name in ("ollastack-demo-backend1", "ollastack-demo-backend2"):
        assert runs[name]["InternetMaxBandwidthOut"] == "0"
        assert runs[name]["VSwitchId"] == runs["ollastack-demo"]["VSwitchId"]
        assert runs[name]["SecurityGroupId"] == groups["ollastack-demo-backends"]["id"]
    assert all(not emu._instance_view(i)["PublicIpAddress"]["IpAddress"] for i in emu.resources["instance"].values()
               if i["name"] != "ollastack-demo")
    assert StackState.load("demo").saved_hosts() == [gateway, *backends]


def test_backend_rules_admit_ssh_and_ollama_from_the_gateway_only(emu, keys):
    hosts = up(fleet_stack(emu, keys, 2))
    gateway = Host.from_record(hosts[0])
    groups = groups_by_name(emu)

    source = f"{gateway.private_address}/32"
    assert rules(groups["ollastack-demo-backends"]) == {("TCP", "22/22", source), ("TCP", "11434/11434", source)}
    # Members of the backends' group do not reach each other (Alibaba's default lets them).
    assert groups["ollastack-demo-backends"]["inner"] == "Drop"
    # The gateway's group is the one host's: nothing for Ollama's port.
    assert rules(groups["ollastack-demo"]) == {("TCP", "22/22", ADMIN[0]), ("TCP", "80/80", "0.0.0.0/0"),
                                               ("TCP", "443/443", "0.0.0.0/0")}


def test_backends_are_created_concurrently(emu, keys):
    emu.latency = 0.15
    up(fleet_stack(emu, keys, 3))

    runs = [r for r in emu.requests if r["action"] == "RunInstances" and r["status"] == 200
            and "backend" in r["params"]["InstanceName"]]
    assert len(runs) == 3
    # Every backend's RunInstances was under way before any of them was answered.
    assert max(r["t0"] for r in runs) < min(r["t1"] for r in runs), "the backends waited for each other"


def test_a_second_up_creates_nothing_and_down_removes_every_backend(emu, keys):
    stack = fleet_stack(emu, keys, 2)
    first = up(stack)
    creates = len([r for r in emu.requests if r["action"].startswith(("Create", "Run", "Import"))])
    assert up(stack) == first
    assert len([r for r in emu.requests if r["action"].startswith(("Create", "Run", "Import"))]) == creates

    removed = down(stack)
    assert sum(r.startswith("instance ") for r in removed) == 3
    assert sum(r.startswith("security_group ") for r in removed) == 2
    assert emu.resource_count() == 0
    assert StackState.load("demo").resources == []


def test_interrupted_fleet_create_resumes_without_duplicates(emu, keys):
    stack = fleet_stack(emu, keys, 2)
    # Lost answers are retried with each instance's own ClientToken: no instance is made twice.
    emu.inject("RunInstances", "drop_after", times=2)
    emu.inject("DescribeInstances", "error", times=1, code="OperationDenied")
    with pytest.raises(alibaba.CloudError):
        up(stack)
    emu.clear_faults()
    hosts = up(stack)
    assert len(hosts) == 3 and len(emu.resources["instance"]) == 3
    down(stack)
    assert emu.resource_count() == 0


def test_single_host_graph_and_requests_are_unchanged(emu, keys):
    assert alibaba.graph(fleet_stack(emu, keys, 0)) == alibaba.GRAPH
    up(fleet_stack(emu, keys, 0))
    assert "ModifySecurityGroupPolicy" not in {r["action"] for r in emu.requests}
    assert [r["InstanceName"] for r in emu.calls("RunInstances")] == ["ollastack-demo"]


def test_plan_lists_the_backends_with_prices(emu, keys):
    plan = planning.make(fleet_stack(emu, keys, 2))

    backends = [c for c in plan.changes if c.name.startswith("ollastack-demo-backend")]
    assert [(c.kind, c.name, c.action) for c in backends] == [("instance", "ollastack-demo-backend1", "create"),
                                                              ("instance", "ollastack-demo-backend2", "create")]
    lines = [line for line in plan.price.lines if line.what.startswith("backend ")]
    assert [line.what.split(":")[0] for line in lines] == ["backend 1", "backend 1", "backend 2", "backend 2"]
    # Each backend costs the instance and its disk, without the public bandwidth.
    assert plan.price.hourly == pytest.approx(HOURLY + 2 * (11.58 + DISK_PRICES["cloud_essd"] * 100))


def test_a_larger_fleet_adds_only_the_new_backend_and_a_smaller_one_keeps_the_gateway(emu, keys):
    first = up(fleet_stack(emu, keys, 1))
    grown = up(fleet_stack(emu, keys, 2))
    assert grown[:2] == first
    assert sorted(r["InstanceName"] for r in emu.calls("RunInstances")) == [
        "ollastack-demo", "ollastack-demo-backend1", "ollastack-demo-backend2"]
    # Back to one backend: the second backend is never taken for the gateway.
    assert up(fleet_stack(emu, keys, 1)) == first
    assert len(emu.calls("RunInstances")) == 3


def test_a_smaller_fleet_removes_only_the_dropped_backend_and_a_rerun_changes_nothing(emu, keys, monkeypatch):
    up(fleet_stack(emu, keys, 2))
    ids = {kind: set(items) for kind, items in emu.resources.items()}
    smaller = fleet_stack(emu, keys, 1)
    kept = up(smaller)
    provider = providers.get("alibaba")
    listed = provider.hosts(smaller)
    # The state lists the dropped backend until it is removed: `up` drains it first, then removes it.
    assert [h.name for h in listed] == ["demo-1", "demo-2", "demo-3"] and len(kept) == 2
    [dropped] = fleet.surplus(smaller, listed)
    assert dropped.name == "demo-3"
    dropped_id = next(i["id"] for i in emu.resources["instance"].values() if i["name"] == "ollastack-demo-backend2")

    monkeypatch.setattr(alibaba, "Timing", lambda: FAST)
    removed = provider.remove(smaller, [dropped], Progress(stream=io.StringIO()))
    assert removed == [f"instance {dropped_id}"]
    after = {kind: set(items) for kind, items in emu.resources.items()}
    assert after == {**ids, "instance": ids["instance"] - {dropped_id}}
    state = StackState.load("demo")
    assert [h.name for h in state.saved_hosts()] == ["demo-1", "demo-2"]
    # In the order the instances were made, which runs them side by side.
    assert sorted(r["name"] for r in state.resources if r["kind"] == "instance") == ["ollastack-demo", "ollastack-demo-backend1"]

    writes = [r for r in emu.requests if r["action"].startswith(("Create", "Run", "Import", "Delete", "Authorize"))]
    assert up(smaller) == kept and fleet.surplus(smaller, provider.hosts(smaller)) == []
    assert [r for r in emu.requests if r["action"].startswith(("Create", "Run", "Import", "Delete", "Authorize"))] == writes
    assert {kind: set(items) for kind, items in emu.resources.items()} == after
