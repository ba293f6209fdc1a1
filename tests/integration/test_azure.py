"""The Azure provider, driven through the real Azure SDK clients over HTTPS against the ARM stand-in
in ``tests/support/azure_emulator.py`` (sign-in included: DefaultAzureCredential -> EnvironmentCredential ->
the emulator's token endpoint). Assertions look at what the emulator received and holds."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.resource.resources import ResourceManagementClient
from cryptography.hazmat.primitives import serialization

from ollastack.cloud import CloudError, azure
from ollastack.config import ConfigError, parse_stack
from ollastack.state import StackState
from tests.support.azure_emulator import TAG, AzureEmulator, loopback_only
from tests.support.azure_fixtures import SECRET, SUB, arm, ca, keys  # noqa: F401 (fixtures)

from tests.support.repo import REPO

ROOT = REPO
ADMIN = ["198.51.100.7/32"]
KINDS = ["resource_group", "virtual_network", "network_security_group", "public_ip", "network_interface",
         "virtual_machine"]
STEPS = [("resourceGroups", "resource group"), ("virtualNetworks", "virtual network"),
         ("networkSecurityGroups", "network security group"), ("publicIPAddresses", "public IP"),
         ("networkInterfaces", "network interface"), ("virtualMachines", "virtual machine")]


class Crash(Exception):
    """The control machine dying mid-create (raised from the progress callback)."""


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    refused = loopback_only(monkeypatch.setattr)
    yield
    assert refused == [], "something tried to leave loopback"


@pytest.fixture
def make_stack(arm, keys):
    def make(name="demo", **azure_settings):
        settings = {"resource_manager_url": arm.url, "dns_label": f"{name}-chat"}
        settings.update(azure_settings)
        admin = settings.pop("admin_cidrs", ADMIN)
        return parse_stack({"stack": {"name": name, "provider": "azure"},
                            "access": {"admin_cidrs": admin, "ssh_public_key": str(keys[0]),
                                       "ssh_private_key": str(keys[1])},
                            "azure": settings})
    return make


def up(stack, progress=None):
    lines: list[str] = []
    hosts = azure.create(stack, StackState.load(stack.stack.name, "azure"), progress or lines.append)
    return hosts, lines


def down(stack):
    lines: list[str] = []
    removed = azure.destroy(stack, StackState.load(stack.stack.name), lines.append)
    return removed, lines


def put_bodies(arm, rtype):
    return [r.body for r in arm.seen("PUT", rtype) if r.status in (200, 201)]


def rules_by_name(nsg_body):
    return {r["name"]: r["properties"] for r in nsg_body["properties"]["securityRules"]}


# -- a stack comes up -------------------------------------------------------------------------------
def test_create_sends_locked_down_resources_and_returns_loopback_host(arm, make_stack, keys):
    stack = make_stack()
    [host], lines = up(stack)

    assert ipaddress.ip_address(host["address"]).is_loopback
    assert host == {"name": "demo-vm", "address": host["address"], "user": "ollastack",
                    "tls_names": ["demo-chat.westeurope.cloudapp.azure.com"]}
    [nsg] = put_bodies(arm, "networkSecurityGroups")
    rules = rules_by_name(nsg)
    allowed = {n: r for n, r in rules.items() if r["access"] == "Allow"}
    assert allowed["allow-ssh-admin"]["sourceAddressPrefixes"] == ADMIN
    assert allowed["allow-ssh-admin"]["destinationPortRange"] == "22"
    assert allowed["allow-web"]["sourceAddressPrefix"] == "*"
    assert sorted(allowed["allow-web"]["destinationPortRanges"]) == ["443", "80"]
    open_ports = {p for r in allowed.values() for p in [r.get("destinationPortRange")] + r.get("destinationPortRanges", [])}
    assert open_ports - {None} == {"22", "80", "443"}          # never 11434
    assert all(r["direction"] == "Inbound" for r in rules.values())
    assert (rules["deny-other-inbound"]["access"], rules["deny-other-inbound"]["destinationPortRange"]) == ("Deny", "*")

    [vm] = put_bodies(arm, "virtualMachines")
    props = vm["properties"]
    assert props["hardwareProfile"]["vmSize"] == "Standard_NC4as_T4_v3"
    assert props["storageProfile"]["imageReference"] == {"publisher": "Debian", "offer": "debian-13",
                                                         "sku": "13-gen2", "version": "latest"}
    assert props["storageProfile"]["osDisk"]["diskSizeGB"] == 64
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    linux = props["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert "adminPassword" not in props["osProfile"]
    assert linux["ssh"]["publicKeys"] == [{"path": "/home/ollastack/.ssh/authorized_keys",
                                          "keyData": keys[0].read_text().strip()}]
    assert props["securityProfile"] == {"securityType": "Standard"}   # GPU size: no Secure Boot
    [pip] = put_bodies(arm, "publicIPAddresses")
    assert pip["properties"]["publicIPAllocationMethod"] == "Static"
    assert pip["properties"]["dnsSettings"] == {"domainNameLabel": "demo-chat"}

    for request in arm.seen("PUT"):
        assert request.body["tags"] == {TAG: "demo"}, request.path
    state = StackState.load("demo")
    assert [r["kind"] for r in state.resources][0] == "resource_group"
    assert sorted(r["kind"] for r in state.resources) == sorted(KINDS)
    assert state.hosts == [host]
    assert len(lines) == 6 and all("created" in line for line in lines)


def test_network_resources_are_created_concurrently(make_stack, arm):
    arm.lro_delay = 0.3
    up(make_stack())
    puts = {r.rtype: r for r in arm.seen("PUT") if r.rtype in ("virtualnetworks", "networksecuritygroups",
                                                                 "publicipaddresses")}
    done = [max(r.ended for r in arm.seen("GET", rtype)) for rtype in puts]
    assert max(r.started for r in puts.values()) < min(done), "the three waited for each other"


def test_cpu_size_keeps_azure_default_security_and_custom_settings(arm, make_stack):
    up(make_stack(vm_size="Standard_D4s_v5", image="Debian:debian-12:12-gen2:0.20250101.1",
                  os_disk_gb=40, admin_username="chat", resource_group="chat-rg", dns_label=""))
    [vm] = put_bodies(arm, "virtualMachines")
    assert "securityProfile" not in vm["properties"]
    assert vm["properties"]["storageProfile"]["imageReference"]["version"] == "0.20250101.1"
    assert vm["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] == 40
    assert vm["properties"]["osProfile"]["adminUsername"] == "chat"
    assert all("/resourceGroups/chat-rg" in r.path or "/resourcegroups/chat-rg" in r.path.lower()
               for r in arm.seen("PUT"))
    assert StackState.load("demo").hosts[0]["tls_names"] == []


def test_second_create_creates_nothing(arm, make_stack):
    stack = make_stack()
    first, _ = up(stack)
    before = len(arm.requests)
    second, lines = up(stack)
    assert second == first
    assert [r for r in arm.requests[before:] if r.method != "GET" and r.rtype] == []
    assert len(lines) == 6 and all(": found" in line for line in lines)


def test_changed_admin_cidr_updates_the_rule_in_place(arm, make_stack):
    up(make_stack())
    [nsg_before] = arm.find("networkSecurityGroups")
    before = len(arm.requests)
    new = ["198.51.100.7/32", "192.0.2.0/24"]
    _, lines = up(make_stack(admin_cidrs=new))

    changes = [r for r in arm.requests[before:] if r.method in ("PUT", "DELETE")]
    assert [(r.method, r.path.rsplit("/", 2)[-2:]) for r in changes] == [("PUT", ["securityRules", "allow-ssh-admin"])]
    assert changes[0].body["properties"]["sourceAddressPrefixes"] == new
    [nsg_after] = arm.find("networkSecurityGroups")
    assert nsg_after["properties"]["resourceGuid"] == nsg_before["properties"]["resourceGuid"]
    assert rules_by_name(nsg_after)["allow-ssh-admin"]["sourceAddressPrefixes"] == new
    assert any("allow-ssh-admin: updated in place" in line for line in lines)


# -- throttling, server errors, failures -------------------------------------------------------------
def test_throttling_and_server_errors_are_retried(arm, make_stack):
    arm.inject("PUT", "publicIPAddresses", "throttle", times=3)
    arm.inject("PUT", "virtualMachines", "server", status=503)
    arm.inject("GET", "operations", "server", status=500)
    [host], _ = up(make_stack())
    assert [r.status for r in arm.seen("PUT", "publicIPAddresses")] == [429, 429, 429, 201]
    assert [r.status for r in arm.seen("PUT", "virtualMachines")] == [503, 201]
    assert 500 in [r.status for r in arm.seen("GET", "operations")]
    assert len(arm.find("virtualMachines")) == 1 and host["address"]


@pytest.mark.parametrize("rtype,label,kind,code", [
    ("resourceGroups", "resource group", "error", "RequestDisallowedByPolicy"),
    ("virtualNetworks", "virtual network", "error", "InvalidAddressPrefix"),
    ("networkSecurityGroups", "network security group", "failed", "InternalServerError"),
    ("publicIPAddresses", "public IP", "error", "PublicIPCountLimitReached"),
    ("networkInterfaces", "network interface", "failed", "NetworkingInternalOperationError"),
    ("virtualMachines", "virtual machine", "error", "SkuNotAvailable"),
    ("virtualMachines", "virtual machine", "failed", "OSProvisioningTimedOut"),
])
def test_failure_at_each_step_then_destroy_leaves_nothing(arm, make_stack, rtype, label, kind, code):
    stack = make_stack()
    arm.inject("PUT", rtype, kind, code=code, message=f"Injected {code}.")
    with pytest.raises(CloudError) as failure:
        up(stack)
    message = str(failure.value)
    assert "\n" not in message and code in message and label in message
    removed, _ = down(stack)
    assert arm.stack_resources("demo") == []
    assert arm.find("resourceGroups") == []
    assert StackState.load("demo").resources == []
    assert (removed == []) == (rtype == "resourceGroups")     # nothing was created before the group


@pytest.mark.parametrize("label", [label for _, label in STEPS])
def test_interrupted_create_resumes_without_duplicates(arm, make_stack, label):
    stack = make_stack()

    def crash_after(message):
        if message.startswith(label + " "):
            raise Crash(message)

    with pytest.raises(Crash):
        up(stack, crash_after)
    [host], _ = up(stack)

    for rtype, _ in STEPS:
        assert len(arm.find(rtype)) == 1, rtype
        assert len(put_bodies(arm, rtype)) == 1, f"{rtype} created twice"
    assert len(arm.stack_resources("demo")) == 7            # + the VM's OS disk
    down(stack)
    assert arm.stack_resources("demo") == []


def test_killed_create_process_is_resumed_then_destroyed(arm, make_stack, tmp_path):
    stack = make_stack()
    config = tmp_path / "stack.toml"
    config.write_text(textwrap.dedent(f"""
        [stack]
        name = "demo"
        provider = "azure"
        [access]
        admin_cidrs = {ADMIN!r}
        ssh_public_key = "{stack.access.ssh_public_key}"
        ssh_private_key = "{stack.access.ssh_private_key}"
        [azure]
        resource_manager_url = "{arm.url}"
    """).replace("'", '"'))
    child = textwrap.dedent("""
        from tests.support.azure_emulator import loopback_only
        loopback_only()
        from ollastack.cloud import azure
        from ollastack.config import load_stack
        from ollastack.state import StackState
        stack = load_stack()
        azure.create(stack, StackState.load(stack.stack.name, "azure"), print)
    """)
    hold = arm.inject("PUT", "virtualMachines", "hold")
    env = {**os.environ, "OLLASTACK_CONFIG": str(config), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert hold.arrived.wait(60), proc.stdout.read().decode() if proc.poll() is not None else "no VM request"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        hold.released.set()
    assert proc.returncode == -signal.SIGKILL
    recorded = [r["kind"] for r in StackState.load("demo").resources]
    assert sorted(recorded) == sorted(KINDS)       # the VM was recorded before its request went out

    [host], lines = up(stack)
    assert sum(": found" in line for line in lines) == 6
    assert len(arm.find("virtualMachines")) == 1
    removed, _ = down(stack)
    assert len(removed) == 6 and arm.stack_resources("demo") == []


# -- errors explained in one line ---------------------------------------------------------------------
def test_wrong_credentials_give_one_line_error(arm, make_stack, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    with pytest.raises(CloudError) as failure:
        up(make_stack())
    message = str(failure.value)
    assert "\n" not in message
    assert "AZURE_CLIENT_ID" in message and "AZURE_CLIENT_SECRET" in message and "az login" in message
    assert "AADSTS7000215" in message and "not-the-secret" not in message
    assert arm.seen("PUT") == [] and StackState.load("demo").resources == []


def test_quota_error_is_surfaced_with_its_azure_code(arm, make_stack):
    arm.inject("PUT", "virtualMachines", "error", status=409, code="OperationNotAllowed",
               message="Operation could not be completed as it results in exceeding approved "
                       "standardNCASv3_T4Family Cores quota. Current Limit: 0.")
    with pytest.raises(CloudError) as failure:
        up(make_stack())
    message = str(failure.value)
    assert message.startswith("azure: creating virtual machine demo-vm failed: OperationNotAllowed:")
    assert "request more quota" in message and "\n" not in message


def test_foreign_resource_with_our_name_is_not_adopted(arm, make_stack):
    rg = f"/subscriptions/{SUB}/resourceGroups/demo-rg"
    arm.add(rg, {"tags": {TAG: "demo"}})
    arm.add(f"{rg}/providers/Microsoft.Network/publicIPAddresses/demo-ip", {"tags": {"owner": "someone"}})
    with pytest.raises(CloudError, match="demo-ip .* is not tagged ollastack-stack=demo"):
        up(make_stack())
    with pytest.raises(CloudError, match="resource group demo-rg was kept: it also holds demo-ip"):
        down(make_stack())
    assert [r["name"] for r in arm.find("publicIPAddresses")] == ["demo-ip"]
    assert [r["name"] for r in arm.find("resourceGroups")] == ["demo-rg"]


# -- destroy ------------------------------------------------------------------------------------------
def test_destroy_keeps_untagged_group_and_its_other_resources(arm, make_stack):
    rg = f"/subscriptions/{SUB}/resourceGroups/shared-rg"
    arm.add(rg, {"tags": {"team": "ml"}})
    arm.add(f"{rg}/providers/Microsoft.Network/publicIPAddresses/other-ip", {})
    stack = make_stack(resource_group="shared-rg")
    up(stack)
    removed, lines = down(stack)
    assert len(removed) == 5 and not any(r.endswith("/shared-rg") for r in removed)
    assert [r["name"] for r in arm.find("resourceGroups")] == ["shared-rg"]
    assert [r["name"] for r in arm.find("publicIPAddresses")] == ["other-ip"]
    assert arm.find("disks") == []
    deletes = [r.rtype for r in arm.seen("DELETE")]
    assert deletes.index("virtualmachines") < deletes.index("networkinterfaces") < deletes.index("publicipaddresses")


def test_destroy_tolerates_resources_already_deleted(arm, make_stack):
    stack = make_stack()
    up(stack)
    [vm] = arm.find("virtualMachines")
    arm.remove(vm["id"])
    removed, lines = down(stack)
    assert vm["id"] not in removed and len(removed) == 5
    assert any("virtual machine demo-vm: already gone" in line for line in lines)
    assert arm.stack_resources("demo") == []
    assert down(stack) == ([], [])


def test_destroy_only_deletes_what_is_tagged_as_ours(arm, make_stack):
    stack = make_stack()
    up(stack)
    [nic] = arm.find("networkInterfaces")
    arm.resources[nic["id"].lower()]["tags"] = {TAG: "another-stack"}
    with pytest.raises(CloudError, match="in use"):
        down(stack)          # the NIC is left alone, so Azure refuses to delete what it still uses
    assert arm.find("networkInterfaces") != [] and arm.find("virtualMachines") == []


def test_down_without_state_finds_the_stack_by_tag_and_spares_other_stacks(arm, make_stack):
    stack, other = make_stack(), make_stack(name="other")
    up(stack)
    up(other)
    kept = arm.stack_resources("other")
    assert len(arm.stack_resources("demo")) == 7 and len(kept) == 7
    StackState.load("demo").path.unlink()          # lost, or written by a run from elsewhere
    removed, lines = down(stack)
    assert len(removed) == 6 and arm.stack_resources("demo") == []
    assert arm.stack_resources("other") == kept
    deletes = [r.rtype for r in arm.seen("DELETE")]
    assert deletes.index("virtualmachines") < deletes.index("networkinterfaces") < deletes.index("virtualnetworks")
    assert deletes[-1] == "resourcegroups"


def test_cli_down_from_another_directory_removes_every_tagged_resource(arm, make_stack, keys, tmp_path):
    up(make_stack())
    config = tmp_path / "project" / "stack.toml"
    config.parent.mkdir()
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nssh_public_key = "{keys[0]}"\n'
                      f'ssh_private_key = "{keys[1]}"\n[azure]\nresource_manager_url = "{arm.url}"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "OLLASTACK_STATE_DIR"}
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), "--json", "down", "--yes"],
                            env={**env, "PYTHONPATH": str(ROOT)}, cwd=elsewhere, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["removed"]) == 6
    assert arm.stack_resources("demo") == []
    assert not (elsewhere / ".ollastack").exists()


def test_cli_wrong_secret_prints_one_error_line(arm, make_stack, keys, tmp_path):
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nssh_public_key = "{keys[0]}"\n'
                      f'ssh_private_key = "{keys[1]}"\n[azure]\nresource_manager_url = "{arm.url}"\n')
    env = {**os.environ, "AZURE_CLIENT_SECRET": "not-the-secret", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), "up"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: azure: sign-in failed") and "AADSTS7000215" in line
    assert arm.seen("PUT") == []


# -- settings and the inventory -----------------------------------------------------------------------
def test_azure_provider_needs_a_subscription(keys, monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    data = {"stack": {"provider": "azure"},
            "access": {"ssh_public_key": str(keys[0]), "ssh_private_key": str(keys[1])}}
    with pytest.raises(ConfigError, match="azure.subscription_id: .*AZURE_SUBSCRIPTION_ID"):
        parse_stack(data)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    assert parse_stack(data).azure.subscription() == SUB
    with pytest.raises(ConfigError) as bad:
        parse_stack({**data, "azure": {"image": "debian-12", "resource_manager_url": "http://127.0.0.1:1",
                                       "admin_username": "root", "cloud": "mars"}})
    assert len(bad.value.problems) == 4


@pytest.mark.parametrize("cloud,endpoint,scope,authority", [
    ("public", "https://management.azure.com/", "https://management.azure.com/.default", "login.microsoftonline.com"),
    ("china", "https://management.chinacloudapi.cn/", "https://management.chinacloudapi.cn/.default",
     "login.chinacloudapi.cn"),
    ("usgov", "https://management.usgovcloudapi.net/", "https://management.core.usgovcloudapi.net/.default",
     "login.microsoftonline.us"),
])
def test_cloud_setting_picks_endpoint_and_authority(make_stack, monkeypatch, cloud, endpoint, scope, authority):
    monkeypatch.delenv("AZURE_AUTHORITY_HOST")
    stack = make_stack(cloud=cloud, resource_manager_url="")
    session = azure._Session(stack, StackState.load("demo", "azure"), print)
    assert session.compute._config.credential_scopes == [scope]
    assert session.network._config.base_url == endpoint
    environment = session.compute._config.credential.credentials[0]
    assert environment._credential._authority == f"https://{authority}"


def test_inventory_file_lists_the_vm(arm, make_stack, keys, tmp_path):
    up(make_stack())
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nssh_public_key = "{keys[0]}"\n'
                      f'ssh_private_key = "{keys[1]}"\n')
    env = {**os.environ, "OLLASTACK_CONFIG": str(config)}
    out = subprocess.run(["pyinfra", str(ROOT / "inventories" / "azure.py"), "debug-inventory"], env=env,
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                         check=True).stdout
    address = re.search(r"^\[([0-9.]+)\]", out, re.MULTILINE).group(1)
    data = json.loads(out.split("--> Data:", 1)[1].split("\n-->", 1)[0])
    assert ipaddress.ip_address(address).is_loopback and "--> Groups: azure" in out
    assert (data["ssh_user"], data["_sudo"], data["ollastack_ollama_host"]) == ("ollastack", True, "127.0.0.1:11434")
    assert data["ollastack_tls_names"] == ["demo-chat.westeurope.cloudapp.azure.com"]
    assert data["ssh_known_hosts_file"].endswith("state/demo.known_hosts")


# -- the emulator refuses what ARM refuses, and the product passes -----------------------------------
def clients(stack):
    """The product's own SDK clients (signed in against the emulator), for requests the product does not make."""
    return azure._Session(stack, StackState.load(stack.stack.name, "azure"), print)


def refusal(call) -> tuple[int, str]:
    with pytest.raises(HttpResponseError) as failure:
        call()
    return failure.value.status_code, failure.value.error.code


def rule(priority, access="Deny", protocol="*", ports="*", source="*"):
    return {"properties": {"priority": priority, "direction": "Inbound", "access": access, "protocol": protocol,
                           "sourcePortRange": "*", "destinationAddressPrefix": "*", "sourceAddressPrefix": source,
                           "destinationPortRange": ports}}


def test_nsg_lets_in_ssh_from_admins_and_web_from_anywhere_only(arm, make_stack):
    [host], _ = up(make_stack(admin_cidrs=["198.51.100.0/28"]))
    address = host["address"]
    assert arm.inbound(address, 22, "198.51.100.7") == (True, "demo-nsg/allow-ssh-admin")
    assert arm.inbound(address, 22, "192.0.2.10") == (False, "demo-nsg/deny-other-inbound")
    for port in (80, 443):
        assert arm.inbound(address, port, "192.0.2.10") == (True, "demo-nsg/allow-web")
    for source in ("198.51.100.7", "192.0.2.10"):
        assert arm.inbound(address, 11434, source) == (False, "demo-nsg/deny-other-inbound")
    # Azure's default AllowVnetInBound (65000) would let the VNet reach Ollama: the 4096 rule comes first.
    assert arm.inbound(address, 11434, "10.0.0.9") == (False, "demo-nsg/deny-other-inbound")
    assert arm.inbound(address, 22, "10.0.0.9") == (False, "demo-nsg/deny-other-inbound")
    assert arm.inbound(address, 443, "192.0.2.10", protocol="Udp") == (False, "demo-nsg/deny-other-inbound")


def test_nsg_evaluation_follows_priority_order(arm, make_stack):
    stack = make_stack()
    [host], _ = up(stack)
    rules = clients(stack).network.security_rules
    # A deny-all placed before allow-web (110) closes the web; SSH (100) is evaluated before it.
    rules.begin_create_or_update("demo-rg", "demo-nsg", "deny-all-early", rule(105)).result()
    assert arm.inbound(host["address"], 443, "192.0.2.10") == (False, "demo-nsg/deny-all-early")
    assert arm.inbound(host["address"], 22, "198.51.100.7") == (True, "demo-nsg/allow-ssh-admin")
    # The same rule after deny-other-inbound changes nothing.
    rules.begin_create_or_update("demo-rg", "demo-nsg", "deny-all-early", rule(4000)).result()
    assert arm.inbound(host["address"], 443, "192.0.2.10") == (True, "demo-nsg/allow-web")
    # An allow for Ollama's port placed first opens it (what the product must never create).
    rules.begin_create_or_update("demo-rg", "demo-nsg", "allow-ollama", rule(101, "Allow", "Tcp", "11434")).result()
    assert arm.inbound(host["address"], 11434, "192.0.2.10") == (True, "demo-nsg/allow-ollama")
    rules.begin_delete("demo-rg", "demo-nsg", "allow-ollama").result()
    rules.begin_delete("demo-rg", "demo-nsg", "deny-all-early").result()
    assert arm.inbound(host["address"], 11434, "192.0.2.10") == (False, "demo-nsg/deny-other-inbound")


def test_a_second_up_removes_rules_added_behind_its_back(arm, make_stack):
    stack = make_stack()
    [host], _ = up(stack)
    rules = clients(stack).network.security_rules
    rules.begin_create_or_update("demo-rg", "demo-nsg", "allow-ollama", rule(101, "Allow", "Tcp", "11434")).result()
    assert arm.inbound(host["address"], 11434, "192.0.2.10") == (True, "demo-nsg/allow-ollama")
    _, lines = up(stack)
    assert any("security rule demo-nsg/allow-ollama: not one of ollastack's, removed" in line for line in lines)
    assert arm.inbound(host["address"], 11434, "192.0.2.10") == (False, "demo-nsg/deny-other-inbound")
    assert arm.inbound(host["address"], 443, "192.0.2.10") == (True, "demo-nsg/allow-web")


def test_nic_without_nsg_behind_standard_ip_lets_nothing_in(arm, make_stack):
    [host], _ = up(make_stack())
    [nic] = arm.find("networkInterfaces")
    del arm.resources[nic["id"].lower()]["properties"]["networkSecurityGroup"]
    allowed, why = arm.inbound(host["address"], 443, "192.0.2.10")
    assert not allowed and "Standard SKU" in why


def test_duplicate_or_out_of_range_priorities_are_refused(arm, make_stack, monkeypatch):
    stack = make_stack()
    up(stack)
    rules = clients(stack).network.security_rules
    assert refusal(lambda: rules.begin_create_or_update("demo-rg", "demo-nsg", "twin", rule(110)).result()) == \
        (400, "SecurityRuleConflict")
    assert refusal(lambda: rules.begin_create_or_update("demo-rg", "demo-nsg", "late", rule(5000)).result()) == \
        (400, "SecurityRuleInvalidPriority")
    # A product bug giving two of its rules one priority fails the create, as on Azure.
    make = azure._Session.security_rules

    def same_priority(self):
        wanted = make(self)
        wanted["allow-web"]["priority"] = wanted["allow-ssh-admin"]["priority"]
        return wanted

    monkeypatch.setattr(azure._Session, "security_rules", same_priority)
    with pytest.raises(CloudError, match="creating network security group other-nsg failed: SecurityRuleConflict"):
        up(make_stack("other"))


def test_tracked_resource_without_location_is_refused(arm, make_stack, monkeypatch):
    stack = make_stack()
    groups = clients(stack).resources.resource_groups
    assert refusal(lambda: groups.create_or_update("bare-rg", {"tags": {}})) == (400, "LocationRequired")
    make = azure._Session.vm_body

    def no_location(self, nic_id):
        body = make(self, nic_id)
        del body["location"]
        return body

    monkeypatch.setattr(azure._Session, "vm_body", no_location)
    with pytest.raises(CloudError, match="creating virtual machine demo-vm failed: LocationRequired"):
        up(stack)
    assert arm.find("virtualMachines") == []


def test_missing_or_unknown_api_version_is_refused(arm, make_stack):
    stack = make_stack()
    session = clients(stack)
    reply = session.resources._client.send_request(HttpRequest("GET", f"{arm.url}/subscriptions/{SUB}/resourcegroups"
                                                                      "/demo-rg"))
    assert (reply.status_code, reply.json()["error"]["code"]) == (400, "MissingApiVersionParameter")
    old = ResourceManagementClient(azure.credential(stack.azure), SUB, arm.url, api_version="2099-01-01",
                                   credential_scopes=["https://management.azure.com/.default"])
    assert refusal(lambda: old.resource_groups.get("demo-rg")) == (400, "InvalidApiVersionParameter")
    nets = session.network.virtual_networks
    assert refusal(lambda: nets.get("demo-rg", "demo-vnet", api_version="2014-01-01")) == \
        (400, "NoRegisteredProviderFound")
    assert refusal(lambda: nets.get("demo-rg", "demo-vnet", api_version="latest")) == \
        (400, "InvalidApiVersionParameter")
    assert arm.seen("PUT") == []


@pytest.mark.parametrize("rtype,path,value,code", [
    ("publicIPAddresses", ("properties", "publicIPAllocationMethod"), "Fixed", "InvalidRequestFormat"),
    ("publicIPAddresses", ("sku", "name"), "Premium", "InvalidRequestFormat"),
    ("networkInterfaces", ("properties", "ipConfigurations", 0, "properties", "privateIPAllocationMethod"), "Auto",
     "InvalidRequestFormat"),
    ("networkSecurityGroups", ("properties", "securityRules", 0, "properties", "access"), "Permit",
     "InvalidRequestFormat"),
    ("networkSecurityGroups", ("properties", "securityRules", 1, "properties", "direction"), "In",
     "InvalidRequestFormat"),
    ("networkSecurityGroups", ("properties", "securityRules", 2, "properties", "protocol"), "Tcp6",
     "InvalidRequestFormat"),
    ("virtualMachines", ("properties", "storageProfile", "osDisk", "managedDisk", "storageAccountType"), "SSD_LRS",
     "InvalidParameter"),
    ("virtualMachines", ("properties", "securityProfile", "securityType"), "Standrad", "InvalidParameter"),
    ("virtualMachines", ("properties", "osProfile", "linuxConfiguration", "ssh", "publicKeys", 0, "keyData"),
     "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= test", "InvalidParameter"),
    ("virtualMachines", ("properties", "osProfile", "linuxConfiguration", "ssh", "publicKeys", 0, "keyData"),
     "ssh-ed25519 not-base64 test", "InvalidParameter"),
])
def test_unknown_enum_values_are_refused(arm, make_stack, rtype, path, value, code):
    stack = make_stack()
    up(stack)
    [sent] = put_bodies(arm, rtype)
    body = json.loads(json.dumps(sent))
    target = body
    for step in path[:-1]:
        target = target[step]
    assert target[path[-1]].lower() != value.lower()
    target[path[-1]] = value
    session = clients(stack)
    operation = {"publicIPAddresses": session.network.public_ip_addresses,
                 "networkInterfaces": session.network.network_interfaces,
                 "networkSecurityGroups": session.network.network_security_groups,
                 "virtualMachines": session.compute.virtual_machines}[rtype]
    assert refusal(lambda: operation.begin_create_or_update("demo-rg", "copy", body).result()) == (400, code)
    assert len(arm.find(rtype)) == 1


def test_token_for_another_cloud_is_refused_with_one_line(arm, make_stack):
    # The china cloud's scope gives a token for management.chinacloudapi.cn: public ARM refuses it (401).
    with pytest.raises(CloudError) as failure:
        up(make_stack(cloud="china"))
    message = str(failure.value)
    assert message.startswith("azure: creating resource group demo-rg failed: InvalidAuthenticationToken: ")
    assert "wrong audience" in message and "az login" in message and "\n" not in message
    assert arm.seen("PUT") == []


def test_usgov_cloud_asks_for_a_usgov_token(ca, make_stack, monkeypatch):
    with AzureEmulator(ca, client_secret=SECRET, audiences=("https://management.core.usgovcloudapi.net",)) as gov:
        monkeypatch.setenv("AZURE_AUTHORITY_HOST", gov.url)
        [host], _ = up(make_stack(cloud="usgov", resource_manager_url=gov.url))
        assert ipaddress.ip_address(host["address"]).is_loopback
        assert len(gov.find("virtualMachines")) == 1
        with pytest.raises(CloudError, match="InvalidAuthenticationToken"):
            up(make_stack("public", resource_manager_url=gov.url))


# -- error and destroy paths --------------------------------------------------------------------------
def test_resource_left_failed_is_created_again(arm, make_stack):
    stack = make_stack()
    arm.inject("PUT", "networkInterfaces", "failed", code="NetworkingInternalOperationError")
    with pytest.raises(CloudError, match="network interface demo-nic failed: NetworkingInternalOperationError"):
        up(stack)
    [nic] = arm.find("networkInterfaces")
    assert nic["properties"]["provisioningState"] == "Failed" and arm.find("virtualMachines") == []
    [host], lines = up(stack)
    assert "network interface demo-nic: created again, it was Failed" in "\n".join(lines)
    [nic] = arm.find("networkInterfaces")
    assert nic["properties"]["provisioningState"] == "Succeeded"
    assert len(put_bodies(arm, "networkInterfaces")) == 2 and len(put_bodies(arm, "virtualNetworks")) == 1
    assert len(arm.find("virtualMachines")) == 1


def test_changed_vm_size_is_reported_not_applied(arm, make_stack):
    up(make_stack())
    _, lines = up(make_stack(vm_size="Standard_D4s_v5"))
    assert any("is Standard_NC4as_T4_v3, azure.vm_size says Standard_D4s_v5; not resized" in line for line in lines)
    [vm] = arm.find("virtualMachines")
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_NC4as_T4_v3"
    assert len(put_bodies(arm, "virtualMachines")) == 1


def test_state_from_another_subscription_is_not_deleted(arm, make_stack):
    stack = make_stack()
    up(stack)
    state = StackState.load("demo")
    other = "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/demo-rg"
    state.record("resource_group", "demo-rg", id=other, type="resource_group")
    with pytest.raises(CloudError, match="state records resource group demo-rg in another subscription"):
        down(stack)
    assert len(arm.find("resourceGroups")) == 1


def test_state_without_provider_gets_azure(arm, make_stack):
    stack = make_stack()
    state = StackState.load("demo")
    assert not state.provider
    azure.create(stack, state, print)
    assert StackState.load("demo").provider == "azure"


def write_config(tmp_path, stack, **azure_settings) -> Path:
    settings = {"resource_manager_url": stack.azure.resource_manager_url, **azure_settings}
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nadmin_cidrs = ["198.51.100.7/32"]\n'
                      f'ssh_public_key = "{stack.access.ssh_public_key}"\n'
                      f'ssh_private_key = "{stack.access.ssh_private_key}"\n[azure]\n'
                      + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return config


def cli(config: Path, *args: str, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``ollastack`` in a child process that may only reach loopback; the SDK's retry waits shortened."""
    child = textwrap.dedent("""
        import sys
        from tests.support.azure_emulator import loopback_only
        loopback_only()
        from ollastack.cloud import azure
        azure.RETRY["retry_backoff_factor"] = 0
        from ollastack.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    return subprocess.run([sys.executable, "-c", child, "--config", str(config), *args],
                          env={**{k: v for k, v in os.environ.items() if k not in drop}, "PYTHONPATH": str(ROOT)},
                          cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, start: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == result.stderr.splitlines()[-1], result.stderr
    assert errors[0].startswith(start), errors[0]
    return errors[0]


def test_unreachable_resource_manager_is_one_line_exit_1(arm, make_stack, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]            # nothing listens there once closed
    config = write_config(tmp_path, make_stack(), resource_manager_url=f"https://127.0.0.1:{closed}")
    line = assert_one_line_error(cli(config, "up"), "error: azure: cannot reach Azure while reading resource group")
    assert "azure.resource_manager_url" in line
    assert StackState.load("demo").resources == []


def test_no_credential_is_one_line_exit_1(arm, make_stack, tmp_path):
    config = write_config(tmp_path, make_stack())
    line = assert_one_line_error(cli(config, "up", drop=("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")),
                                 "error: azure: sign-in failed while reading resource group demo-rg and its resources "
                                 "(no credential found)")
    assert "AZURE_CLIENT_SECRET" in line and "az login" in line
    assert arm.seen("PUT") == [] and arm.seen("POST") == []


def test_provider_names_the_cloud_modules():
    from ollastack import cloud
    from ollastack.cloud import alibaba

    assert cloud.provider("azure") is azure and cloud.provider("alibaba") is alibaba
    for name in ("lab", "static", "gcp", "../azure"):
        with pytest.raises(ValueError, match="is not a cloud provider"):
            cloud.provider(name)


def test_rsa_key_shorter_than_2048_bits_is_refused(arm, make_stack, keys):
    from cryptography.hazmat.primitives.asymmetric import rsa

    def use_rsa(bits):
        key = rsa.generate_private_key(65537, bits)
        keys[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
        keys[0].write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                          serialization.PublicFormat.OpenSSH) + b" test\n")

    stack = make_stack()
    use_rsa(1024)            # after the settings were read: what reaches Azure is the emulator's to judge
    with pytest.raises(CloudError, match="creating virtual machine demo-vm failed: InvalidParameter: .*keyData"):
        up(stack)
    use_rsa(2048)
    up(stack)
    assert len(arm.find("virtualMachines")) == 1
