"""A cloud fleet's backends are reached through the gateway: one ProxyCommand, checked and quoted, used by
ollastack's own ssh commands, by pyinfra's inventory (an ssh config file) and kept in the state file."""

from __future__ import annotations

import shlex

import paramiko
import pytest

from ollastack import fleet, state
from ollastack.config import parse_stack
from ollastack.host import Host
from ollastack.inventory import pyinfra_hosts
from ollastack.remote import host_command
from ollastack.ssh import proxy_command, ssh_command

GATEWAY = Host("demo-vm", "127.0.0.5", user="ollastack", private_address="10.0.0.4")
BACKEND = Host("demo-backend1-vm", "10.0.0.5", user="ollastack", jump=GATEWAY)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub")
    monkeypatch.setattr(state, "_held_locks", {})
    public, private = tmp_path / "id.pub", tmp_path / "my keys" / "id"
    private.parent.mkdir()
    public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 test\n")
    private.write_text("key\n")
    return parse_stack({"stack": {"name": "demo", "provider": "azure"},
                        "access": {"ssh_public_key": str(public), "ssh_private_key": str(private),
                                   "admin_cidrs": ["198.51.100.7/32"]},
                        "openwebui": {"install": "none"}, "fleet": {"backends": 1}})


def test_the_proxy_command_is_one_quoted_line_that_splits_back(tmp_path):
    known = tmp_path / "known hosts"
    line = proxy_command(GATEWAY, BACKEND.address, 22, tmp_path / "k", known, "accept-new")
    words = shlex.split(line)
    assert words[0] == "ssh" and words[-4:] == ["-W", "10.0.0.5:22", "--", "ollastack@127.0.0.5"]
    assert f"UserKnownHostsFile={known}" in words and "StrictHostKeyChecking=accept-new" in words
    assert "BatchMode=yes" in words


@pytest.mark.parametrize("jump,address,key", [
    (GATEWAY, "10.0.0.5;reboot", "k"),
    (GATEWAY, "-oProxyCommand=x", "k"),
    (Host("gw", "gw.example.com"), "10.0.0.5", "k"),
    (Host("gw", "127.0.0.5", user="-oX"), "10.0.0.5", "k"),
    (Host("gw", "127.0.0.5", user="a b"), "10.0.0.5", "k"),
    (GATEWAY, "10.0.0.5", "key%h"),
])
def test_values_that_could_become_options_or_tokens_are_refused(jump, address, key):
    with pytest.raises(ValueError):
        proxy_command(jump, address, 22, key, "known")


def test_ssh_to_a_jumped_host_goes_through_the_gateway(stack):
    argv = host_command(stack, BACKEND, "true")
    proxy = next(a for a in argv if a.startswith("ProxyCommand="))
    assert shlex.split(proxy.removeprefix("ProxyCommand="))[-2:] == ["--", "ollastack@127.0.0.5"]
    assert argv[argv.index("--") + 1] == "ollastack@10.0.0.5"
    assert not any(a.startswith("ProxyCommand=") for a in host_command(stack, GATEWAY, "true"))
    assert not any(a.startswith("ProxyCommand=") for a in ssh_command("10.0.0.5", "root", "k", "known"))


def test_the_jump_is_kept_in_the_state_record_and_a_single_host_record_is_unchanged():
    assert Host.from_record(BACKEND.to_record()) == BACKEND
    assert BACKEND.to_record()["jump"]["address"] == "127.0.0.5"
    assert Host("h", "192.0.2.7").to_record() == {"name": "h", "address": "192.0.2.7", "user": "root", "tls_names": []}


def test_a_jumped_backend_admits_ssh_from_the_gateway_and_is_reached_through_it(stack, tmp_path):
    settings = fleet.host_settings(stack, [GATEWAY, BACKEND])
    assert settings["demo-backend1-vm"]["ollastack_fleet_gateway"] == "10.0.0.4"
    assert settings["demo-backend1-vm"]["ollastack_access_admin_cidrs"] == ["198.51.100.7/32", "10.0.0.4/32"]
    assert "ollastack_access_admin_cidrs" not in settings["demo-vm"]
    # A lab backend (no jump) is reached directly: its SSH sources stay the admins'.
    lab = fleet.host_settings(stack, [GATEWAY, Host("b", "10.0.0.5")])
    assert "ollastack_access_admin_cidrs" not in lab["b"]

    entries = dict(pyinfra_hosts(stack, [GATEWAY, BACKEND], known_hosts=tmp_path / "known"))
    path = entries["10.0.0.5"]["ssh_config_file"]
    assert (state.state_dir() / "demo.ssh_config").samefile(path)
    assert (state.state_dir() / "demo.ssh_config").stat().st_mode & 0o777 == 0o600
    found = paramiko.SSHConfig.from_path(path).lookup("10.0.0.5")
    assert shlex.split(found["proxycommand"])[-4:] == ["-W", "10.0.0.5:22", "--", "ollastack@127.0.0.5"]
    assert "proxycommand" not in paramiko.SSHConfig.from_path(path).lookup("127.0.0.5")
    assert "ssh_config_file" not in entries["127.0.0.5"]


def test_a_single_host_inventory_writes_no_ssh_config(stack, tmp_path):
    single = stack.model_copy(update={"fleet": stack.fleet.model_copy(update={"backends": 0})})
    [(_, data)] = pyinfra_hosts(single, [Host("demo-vm", "127.0.0.5", user="ollastack")])
    assert "ssh_config_file" not in data
    assert not (state.state_dir() / "demo.ssh_config").exists()
