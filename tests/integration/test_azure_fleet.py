"""A fleet on Azure (``fleet.backends``), through the real SDK clients against the ARM stand-in: the
gateway keeps the one host's public address, the backends get none and sit in its subnet, their NSG
admits SSH and Ollama's port from the gateway's private address alone, the backends are created
beside each other, ``down`` removes them all, and the inventory reaches them through the gateway."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import paramiko
import pytest

from ollastack import fleet, planning, providers
from ollastack.cloud import azure
from ollastack.config import parse_stack
from ollastack.host import Host
from ollastack.inventory import pyinfra_hosts
from ollastack.state import StackState
from tests.integration.test_azure import ADMIN, _loopback_only, down, put_bodies, up  # noqa: F401
from tests.integration.test_plan_azure import HOURLY, prices  # noqa: F401 (fixture)
from tests.support.azure_fixtures import arm, ca, keys  # noqa: F401 (fixtures)
from tests.support.repo import REPO

SUBNET = ipaddress.ip_network(azure.SUBNET_PREFIX)


@pytest.fixture
def fleet_stack(arm, keys):
    def make(backends=2, name="demo"):
        return parse_stack({"stack": {"name": name, "provider": "azure"},
                            "access": {"admin_cidrs": ADMIN, "ssh_public_key": str(keys[0]),
                                       "ssh_private_key": str(keys[1])},
                            "azure": {"resource_manager_url": arm.url, "dns_label": f"{name}-chat"},
                            "fleet": {"backends": backends}})
    return make


def test_backends_have_no_public_address_and_sit_in_the_gateways_subnet(arm, fleet_stack):
    hosts, _ = up(fleet_stack(2))

    gateway, *backends = [Host.from_record(h) for h in hosts]
    assert [h["name"] for h in hosts] == ["demo-vm", "demo-backend1-vm", "demo-backend2-vm"]
    assert ipaddress.ip_address(gateway.address).is_loopback and gateway.tls_names
    assert ipaddress.ip_address(gateway.private_address) in SUBNET and gateway.jump is None
    for backend in backends:
        assert ipaddress.ip_address(backend.address) in SUBNET and not backend.tls_names
        assert backend.jump == Host(gateway.name, gateway.address, gateway.user, tls_names=gateway.tls_names,
                                    private_address=gateway.private_address)
    assert len({gateway.private_address, *(b.address for b in backends)}) == 3
    # One public IP, the gateway's; the backends' NICs name none.
    assert len(put_bodies(arm, "publicIPAddresses")) == 1 and len(arm.find("publicIPAddresses")) == 1
    nics = {n["name"]: n for n in arm.find("networkInterfaces")}
    assert sorted(nics) == ["demo-backend1-nic", "demo-backend2-nic", "demo-nic"]
    for name in ("demo-backend1-nic", "demo-backend2-nic"):
        [conf] = nics[name]["properties"]["ipConfigurations"]
        assert "publicIPAddress" not in conf["properties"]
        assert conf["properties"]["subnet"]["id"] == nics["demo-nic"]["properties"]["ipConfigurations"][0][
            "properties"]["subnet"]["id"]
        assert nics[name]["properties"]["networkSecurityGroup"]["id"].endswith("/demo-backend-nsg")
    assert StackState.load("demo").saved_hosts() == [gateway, *backends]


def test_backend_rules_admit_ssh_and_ollama_from_the_gateway_only(arm, fleet_stack):
    hosts, _ = up(fleet_stack(2))
    gateway, one, other = [Host.from_record(h) for h in hosts]

    for port in (22, 11434):
        assert arm.inbound(one.address, port, gateway.private_address) == (True, "demo-backend-nsg/allow-"
                                                                           + ("ssh" if port == 22 else "ollama")
                                                                           + "-gateway")
        # Not from the other backend, the admins or the internet: the 4096 deny comes before AllowVnetInBound.
        for source in (other.address, "198.51.100.7", "192.0.2.10"):
            assert arm.inbound(one.address, port, source) == (False, "demo-backend-nsg/deny-other-inbound")
    for port in (80, 443):
        assert arm.inbound(one.address, port, "192.0.2.10")[0] is False
    # The gateway's rules are the one host's: Ollama's port stays closed to everyone, the backends included.
    assert arm.inbound(gateway.address, 443, "192.0.2.10") == (True, "demo-nsg/allow-web")
    assert arm.inbound(gateway.address, 11434, one.address) == (False, "demo-nsg/deny-other-inbound")


def test_backends_are_created_concurrently(arm, fleet_stack):
    arm.lro_delay = 0.3
    up(fleet_stack(3))

    vms = {r.path.rsplit("/", 1)[-1].split("?")[0]: r for r in arm.seen("PUT", "virtualMachines")}
    backends = [name for name in vms if "backend" in name]
    assert len(backends) == 3
    done = {name: max(r.ended for r in arm.seen("GET", "virtualMachines") if f"/{name}?" in r.path or
                      r.path.endswith(f"/{name}")) for name in backends}
    # Each backend VM's create was sent before any backend VM was done: they overlap in time.
    assert max(vms[n].started for n in backends) < min(done.values()), "the backends waited for each other"


def test_a_second_up_creates_nothing_and_down_removes_every_backend(arm, fleet_stack):
    stack = fleet_stack(2)
    first, _ = up(stack)
    puts = len(arm.seen("PUT"))
    again, lines = up(stack)
    assert again == first and len(arm.seen("PUT")) == puts
    assert all("found" in line for line in lines)

    removed, _ = down(stack)
    assert sum("/virtualMachines/" in r for r in removed) == 3
    assert sum("/networkInterfaces/" in r for r in removed) == 3
    assert sum("/networkSecurityGroups/" in r for r in removed) == 2
    assert arm.stack_resources("demo") == []
    assert StackState.load("demo").resources == []


def test_interrupted_fleet_create_resumes_without_duplicates(arm, fleet_stack):
    stack = fleet_stack(2)
    arm.inject("PUT", "virtualMachines", "error", status=500, code="InternalServerError", times=20)
    with pytest.raises(Exception):
        up(stack)
    arm.faults.clear()
    hosts, _ = up(stack)
    assert len(hosts) == 3 and len(arm.find("virtualMachines")) == 3 and len(arm.find("networkInterfaces")) == 3
    down(stack)
    assert arm.stack_resources("demo") == []


def test_single_host_graph_is_unchanged(fleet_stack):
    assert azure.graph(fleet_stack(0)) == azure.GRAPH
    assert set(azure.graph(fleet_stack(2))) - set(azure.GRAPH) == {
        "backend_network_security_group", "backend_network_interface_1", "backend_virtual_machine_1",
        "backend_network_interface_2", "backend_virtual_machine_2"}


def test_inventory_reaches_the_backends_through_the_gateway(arm, fleet_stack, keys, tmp_path):
    stack = fleet_stack(2)
    hosts, _ = up(stack)
    gateway, *backends = [Host.from_record(h) for h in hosts]
    known = tmp_path / "known_hosts"
    entries = dict(pyinfra_hosts(stack, [gateway, *backends], known_hosts=known))

    assert "ssh_config_file" not in entries[gateway.address]
    assert entries[gateway.address]["ollastack_fleet_upstreams"] == [f"{b.address}:11434" for b in backends]
    config = paramiko.SSHConfig.from_path(entries[backends[0].address]["ssh_config_file"])
    for backend in backends:
        data = entries[backend.address]
        assert data["ollastack_fleet_gateway"] == gateway.private_address
        assert data["ollastack_ollama_host"] == f"{backend.address}:11434"
        # SSH reaches a backend from the gateway: its firewall admits the gateway besides the admins.
        assert data["ollastack_access_admin_cidrs"] == [*ADMIN, f"{gateway.private_address}/32"]
        words = shlex.split(config.lookup(backend.address)["proxycommand"])
        assert words[0] == "ssh"
        assert words[words.index("-W") + 1] == f"{backend.address}:22"
        assert words[-2:] == ["--", f"ollastack@{gateway.address}"]
        assert f"UserKnownHostsFile={known}" in words and "StrictHostKeyChecking=accept-new" in words
        assert words[words.index("-i") + 1] == str(keys[1])


def test_plan_lists_the_backends_with_prices(arm, prices, fleet_stack):
    plan = planning.make(fleet_stack(2))

    names = [c.name for c in plan.changes]
    assert {"demo-backend-nsg", "demo-backend1-nic", "demo-backend1-vm", "demo-backend2-nic",
            "demo-backend2-vm"} <= set(names)
    assert {c.action for c in plan.changes} == {"create"} and plan.problems == []
    backend_lines = [line for line in plan.price.lines if line.what.startswith("backend ")]
    assert [line.what.split(":")[0] for line in backend_lines] == ["backend 1", "backend 1", "backend 2", "backend 2"]
    # Each backend costs the gateway's VM and disk, without the public IP.
    assert plan.price.hourly == pytest.approx(HOURLY + 2 * (0.526 + 4.80 / 720))
    assert "backend 2: VM Standard_NC4as_T4_v3" in plan.render()


def test_a_larger_fleet_creates_only_the_new_backend(arm, fleet_stack):
    first, _ = up(fleet_stack(1))
    before = {r.path for r in arm.seen("PUT")}
    grown, _ = up(fleet_stack(2))
    assert grown[:2] == first
    created = {r.path.split("?")[0].rsplit("/", 1)[-1] for r in arm.seen("PUT") if r.path not in before}
    assert created == {"demo-backend2-nic", "demo-backend2-vm"}


def test_the_inventory_file_puts_the_backends_behind_the_gateway(arm, fleet_stack, keys, tmp_path):
    hosts, _ = up(fleet_stack(2))
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nssh_public_key = "{keys[0]}"\n'
                      f'ssh_private_key = "{keys[1]}"\n[fleet]\nbackends = 2\n')
    env = {**os.environ, "OLLASTACK_CONFIG": str(config)}
    out = subprocess.run(["pyinfra", str(REPO / "inventories" / "azure.py"), "debug-inventory"], env=env,
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                         check=True).stdout
    blocks = {m.group(1): m.group(2) for m in re.finditer(r"^\[([0-9.]+)\] *\n(.*?)(?=^\[|\Z)", out, re.M | re.S)}
    gateway, *backends = hosts
    assert sorted(blocks) == sorted(h["address"] for h in hosts)
    assert "gateway" in blocks[gateway["address"]] and "ssh_config_file" not in blocks[gateway["address"]]
    for backend in backends:
        block = blocks[backend["address"]]
        data = json.loads(block.split("--> Data:", 1)[1].split("\n-->", 1)[0])
        assert "--> Groups: azure, ollama" in block
        assert data["ollastack_fleet_role"] == "backend" and data["ssh_user"] == "ollastack"
        text = Path(data["ssh_config_file"]).read_text()
        assert f"Host {backend['address']}\n" in text and f"-- ollastack@{gateway['address']}" in text
        assert data["ssh_known_hosts_file"] in text


def test_a_smaller_fleet_removes_only_the_dropped_backend_and_a_rerun_changes_nothing(arm, fleet_stack):
    up(fleet_stack(2))
    before = set(arm.stack_resources("demo"))
    smaller = fleet_stack(1)
    kept, _ = up(smaller)
    provider = providers.get("azure")
    listed = provider.hosts(smaller)
    # The state lists the dropped backend until it is removed: `up` drains it first, then removes it.
    assert [h.name for h in listed] == ["demo-vm", "demo-backend1-vm", "demo-backend2-vm"]
    gateway, backends = fleet.split(smaller, listed)
    assert [gateway, *backends] == [Host.from_record(h) for h in kept] and len(kept) == 2
    [dropped] = fleet.surplus(smaller, listed)
    assert dropped.name == "demo-backend2-vm"
    assert set(arm.stack_resources("demo")) == before, "create deleted or added something"

    lines: list[str] = []
    removed = provider.remove(smaller, [dropped], lines.append)
    gone = before - set(arm.stack_resources("demo"))
    assert {r.rsplit("/", 1)[-1] for r in gone} == {"demo-backend2-vm", "demo-backend2-nic", "demo-backend2-vm-osdisk"}
    assert {r.lower() for r in removed} == {r.lower() for r in gone if "/disks/" not in r}
    state = StackState.load("demo")
    assert [h.name for h in state.saved_hosts()] == ["demo-vm", "demo-backend1-vm"]
    assert not any("backend2" in r["name"] for r in state.resources)
    assert {r["name"] for r in state.resources} >= {"demo-vm", "demo-nic", "demo-backend1-vm", "demo-backend1-nic",
                                                    "demo-backend-nsg"}

    writes = len(arm.seen("PUT")) + len(arm.seen("DELETE"))
    again, _ = up(smaller)
    assert again == kept and fleet.surplus(smaller, provider.hosts(smaller)) == []
    assert len(arm.seen("PUT")) + len(arm.seen("DELETE")) == writes
    assert set(arm.stack_resources("demo")) == before - gone
