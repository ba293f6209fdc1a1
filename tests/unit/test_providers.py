"""``ollastack.providers``: every host source behind one protocol, ``Host`` through the state file, and the
one inventory builder behind every ``inventories/<provider>.py``. No lab: the lab's host list is stubbed."""

from __future__ import annotations

import inspect
import json
import re

import pytest

from ollastack import cloud, lab, progress, providers, state
from tests.support.repo import REPO
from ollastack.config import ConfigError, parse_stack
from ollastack.host import Host
from ollastack.inventory import provider_inventory, stack_inventory
from ollastack.state import StackState, known_hosts_file

PROTOCOL_METHODS = sorted(name for name, value in vars(providers.Provider).items()
                          if callable(value) and not name.startswith("_"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """State of this test only, an RSA key pair (every provider takes one); returns a stack factory."""
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_LAB_DIR", str(tmp_path / "lab"))
    # An inventory holds the stack's lock for the rest of the process: here, for this test only.
    monkeypatch.setattr(state, "_held_locks", {})
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-rsa AAAAB3NzaC1yc2E test\n")
    private.write_text("key\n")

    def make(provider: str, **sections) -> dict:
        return {"stack": {"name": "provinv", "provider": provider},
                "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                "openwebui": {"install": "none"}, **sections}

    make.dir = tmp_path
    return make


def test_every_registered_provider_implements_the_protocol():
    assert sorted(providers.REGISTRY) == ["alibaba", "azure", "lab", "static"]
    assert PROTOCOL_METHODS == ["check", "create", "destroy", "fleet_names", "host_settings", "hosts", "known_hosts",
                                "names_hosts", "release", "remove", "warnings"]
    for name, provider in providers.REGISTRY.items():
        assert isinstance(provider, providers.Provider) and provider.name == name
        assert provider.strict_host_keys in ("yes", "accept-new")
        for method in PROTOCOL_METHODS:
            wanted = list(inspect.signature(getattr(providers.Provider, method)).parameters)[1:]
            assert list(inspect.signature(getattr(provider, method)).parameters) == wanted, (name, method)


def test_get_names_the_known_providers():
    assert providers.get("static") is providers.REGISTRY["static"]
    for name in ("gcp", "", "Lab", "../azure"):
        with pytest.raises(providers.UnknownProvider, match=r"expected one of lab, static, azure, alibaba"):
            providers.get(name)


def test_an_unknown_provider_is_refused_by_validation(home):
    with pytest.raises(ConfigError) as caught:
        parse_stack(home("gcp"))
    expected = "stack.provider = 'gcp': unknown provider 'gcp': expected one of lab, static, azure, alibaba"
    assert caught.value.problems == [expected]


def test_each_provider_s_own_needs_are_checked(home):
    with pytest.raises(ConfigError, match=r'static.hosts: provider = "static" needs at least one host'):
        parse_stack(home("static"))
    ed25519 = home("alibaba")
    (home.dir / "id.pub").write_text("ssh-ed25519 AAAAC3Nz test\n")
    with pytest.raises(ConfigError, match="Alibaba Cloud imports RSA, DSA or ECDSA keys only"):
        parse_stack(ed25519)
    # The same key is fine where the provider does not care.
    assert parse_stack(home("lab")).stack.provider == "lab"


def test_only_azure_names_its_hosts_for_letsencrypt(home):
    tls = {"mode": "letsencrypt", "email": "ops@example.com"}
    azure = {"subscription_id": "s", "dns_label": "mychat"}
    assert parse_stack(home("azure", azure=azure, tls=tls)).tls.domain == ""
    for provider, sections in (("azure", {"azure": {"subscription_id": "s"}}), ("lab", {}),
                               ("static", {"static": {"hosts": ["192.0.2.10"]}}),
                               ("alibaba", {})):
        with pytest.raises(ConfigError, match="tls.domain: tls.mode = \"letsencrypt\" needs a DNS name"):
            parse_stack(home(provider, tls=tls, **sections))


def test_host_round_trips_through_the_state_file(home):
    hosts = [Host("provinv-vm", "192.0.2.30", user="ollastack", tls_names=("chat.example.com",)),
             Host("provinv-2", "192.0.2.31", port=2222)]
    StackState.load("provinv", "azure").set_hosts(hosts)
    state = StackState.load("provinv")
    assert state.saved_hosts() == hosts
    assert json.loads(state.path.read_text())["hosts"] == [
        {"name": "provinv-vm", "address": "192.0.2.30", "user": "ollastack", "tls_names": ["chat.example.com"]},
        {"name": "provinv-2", "address": "192.0.2.31", "user": "root", "tls_names": [], "port": 2222}]


def test_a_state_file_of_an_earlier_version_still_loads(home):
    """Written as ollastack wrote it before Host existed: hosts as bare dicts, some keys missing."""
    path = home.dir / "state" / "provinv.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"stack": "provinv", "provider": "alibaba", "resources": [
        {"kind": "vpc", "name": "provinv-vpc", "id": "vpc-1"}], "hosts": [
        {"name": "provinv-1", "address": "198.51.100.9", "user": "root", "tls_names": ["198.51.100.9"]},
        {"name": "old", "address": "198.51.100.10"}]}, indent=2, sort_keys=True) + "\n")
    stack = parse_stack(home("alibaba"))
    assert providers.get("alibaba").hosts(stack) == [
        Host("provinv-1", "198.51.100.9", tls_names=("198.51.100.9",)), Host("old", "198.51.100.10")]
    state = StackState.load("provinv")
    state.set_hosts(state.hosts)
    assert state.hosts[0] == {"name": "provinv-1", "address": "198.51.100.9", "user": "root",
                              "tls_names": ["198.51.100.9"]}
    assert state.resources == [{"kind": "vpc", "name": "provinv-vpc", "id": "vpc-1"}]


def test_every_inventory_file_is_the_one_builder():
    for name in providers.REGISTRY:
        text = (REPO / "inventories" / f"{name}.py").read_text()
        # pyinfra names the group after the variable: the provider's name.
        assert re.search(rf'^{name} = provider_inventory\("{name}"\)$', text, re.MULTILINE), name
        # A provider that makes fleets also defines its groups gateway and ollama.
        assert text.count("\n") <= (11 if providers.REGISTRY[name].makes_fleets else 8), name


def _use_config(home, monkeypatch, data: dict) -> None:
    config = home.dir / "stack.toml"
    config.write_text(_toml(data))
    monkeypatch.setenv("OLLASTACK_CONFIG", str(config))


def _inventory(home, monkeypatch, data: dict, provider: str) -> list[tuple[str, dict]]:
    _use_config(home, monkeypatch, data)
    return provider_inventory(provider)


def _toml(data: dict) -> str:
    return "".join(f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
                   for section, values in data.items())


def test_static_inventory_logs_in_as_the_static_user_trusting_keys_on_first_use(home, monkeypatch):
    [(address, data)] = _inventory(home, monkeypatch, home("static", static={"hosts": ["192.0.2.10"], "user": "debian"}),
                                   "static")
    assert address == "192.0.2.10"
    assert (data["ssh_user"], data["_sudo"], data["ssh_strict_host_key_checking"]) == ("debian", True, "accept-new")
    assert data["ssh_known_hosts_file"] == str(known_hosts_file("provinv"))
    assert "ssh_port" not in data and data["ollastack_access_admin_cidrs"] == ["127.0.0.1/32"]


def test_lab_inventory_checks_keys_strictly_and_lets_the_control_machine_in(home, monkeypatch):
    monkeypatch.setattr(lab, "list_hosts", lambda name: [
        {"name": f"{name}-1", "address": "10.213.0.10", "user": "root", "running": True, "pid": 7},
        {"name": f"{name}-2", "address": "10.213.0.11", "user": "root", "running": False}])
    [(address, data)] = _inventory(home, monkeypatch, home("lab"), "lab")
    assert (address, data["ollastack_name"], data["ssh_user"]) == ("10.213.0.10", "provinv-1", "root")
    assert "_sudo" not in data and data["ssh_strict_host_key_checking"] == "yes"
    assert data["ssh_known_hosts_file"] == str(lab.known_hosts_path())
    assert data["ollastack_access_admin_cidrs"] == ["127.0.0.1/32", "10.213.0.1/32"]


def test_hand_written_inventory_takes_hosts_or_their_records(home, monkeypatch):
    _use_config(home, monkeypatch, home("lab"))
    [(address, data)] = stack_inventory([Host("chat-1", "192.0.2.10", user="debian")])
    assert stack_inventory([{"name": "chat-1", "address": "192.0.2.10", "user": "debian"}]) == [(address, data)]
    assert (address, data["ollastack_name"], data["_sudo"]) == ("192.0.2.10", "chat-1", True)
    assert data["ssh_known_hosts_file"] == str(known_hosts_file("provinv"))


def test_lab_host_settings_add_the_gateway_once(home):
    stack = parse_stack(home("lab", access={**home("lab")["access"], "admin_cidrs": ["10.213.0.1/32"]}))
    assert providers.get("lab").host_settings(stack) is stack


def test_cloud_inventory_reads_the_recorded_hosts(home, monkeypatch):
    data = home("azure", azure={"subscription_id": "s"})
    StackState.load("provinv", "azure").set_hosts([Host("provinv-vm", "192.0.2.30", user="ollastack", port=2200,
                                                        tls_names=("provinv.westeurope.cloudapp.azure.com",))])
    [(address, entry)] = _inventory(home, monkeypatch, data, "azure")
    assert (address, entry["ssh_port"], entry["ssh_user"], entry["_sudo"]) == ("192.0.2.30", 2200, "ollastack", True)
    assert entry["ollastack_tls_names"] == ["provinv.westeurope.cloudapp.azure.com"]


def test_lab_and_cloud_share_one_progress():
    assert lab.Progress is cloud.Progress is progress.Progress


def test_no_provider_name_is_tested_outside_the_registry():
    found = [f"{path.relative_to(REPO)}:{number}"
             for path in sorted((REPO / "ollastack").rglob("*.py")) if path.name != "providers.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if re.search(r"provider\s*[!=]=", line)]
    assert found == []


def test_lab_jump_backends_reaches_a_fleets_backends_through_its_gateway_as_a_cloud_does(home, monkeypatch):
    monkeypatch.setattr(lab, "list_hosts", lambda name: [
        {"name": f"{name}-1", "address": "10.213.0.10", "user": "root", "running": True},
        {"name": f"{name}-2", "address": "10.213.0.11", "user": "root", "running": True}])
    data = home("lab", fleet={"backends": 1}, lab={"jump_backends": True})
    gateway, backend = providers.get("lab").hosts(parse_stack(data))
    assert gateway.jump is None and backend.jump == gateway
    (_, gateway_entry), (_, backend_entry) = _inventory(home, monkeypatch, data, "lab")
    assert "ssh_config_file" not in gateway_entry
    config = open(backend_entry["ssh_config_file"]).read()
    assert "Host 10.213.0.11\n    ProxyCommand ssh " in config and "-W 10.213.0.11:22 -- root@10.213.0.10" in config
    # The cloud's rule: the backend admits SSH from the gateway's address too.
    assert backend_entry["ollastack_access_admin_cidrs"] == ["127.0.0.1/32", "10.213.0.1/32", "10.213.0.10/32"]
    # Off (the default), or with the gateway stopped, each host is reached directly.
    assert all(h.jump is None for h in providers.get("lab").hosts(parse_stack(home("lab", fleet={"backends": 1}))))
    monkeypatch.setattr(lab, "list_hosts", lambda name: [
        {"name": f"{name}-2", "address": "10.213.0.11", "user": "root", "running": True}])
    assert [h.jump for h in providers.get("lab").hosts(parse_stack(data))] == [None]
