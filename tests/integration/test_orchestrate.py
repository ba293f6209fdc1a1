"""``ollastack.orchestrate`` from the control machine, with no lab: a static stack whose "host" is a TLS
server on a loopback address (certificate from the stack CA), a fake ``ssh`` on PATH answering the GPU
probe, and the Azure emulator for the cloud ``down`` path."""

from __future__ import annotations

import os

import pytest

from ollastack import certs, lab, orchestrate, providers
from ollastack.cloud import CloudError
from ollastack.config import parse_stack
from ollastack.host import Host
from ollastack.ssh import SshTimeout
from ollastack.state import StackState, known_hosts_file
from tests.support.controlkit import fake_host as serve_fake_host, fake_ssh, loopback_address
from tests.support.azure_fixtures import arm, ca, keys  # noqa: F401 (fixtures: the ARM emulator, its CA, an SSH key pair)

SMI = ["Tesla T4, 15360"]
AZURE = {"subscription_id": "00000000-0000-0000-0000-00000000c0de"}
TAGS = {"models": [{"name": "llama3.2:1b", "size": 1_321_098_329}, {"name": "user/big:70b", "size": 42_520_413_916}]}


@pytest.fixture
def control(tmp_path, monkeypatch):
    """State, certificates and PATH of this test only; returns a stack factory."""
    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-rsa AAAAB3NzaC1yc2E test\n")
    private.write_text("key\n")

    def make(provider: str = "static", **sections) -> orchestrate.Stack:
        data = {"stack": {"name": "orch", "provider": provider},
                "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                "openwebui": {"install": "none"}, **sections}
        if provider == "static":
            data.setdefault("static", {"hosts": [loopback_address()]})
        return parse_stack(data)

    make.bin = tmp_path / "bin"
    return make


@pytest.fixture
def fake_host(control, monkeypatch, tmp_path):
    host = serve_fake_host(monkeypatch, tmp_path, "orch", ("admin@example.com", "unused: install is none"))
    yield host
    host.stop()


def test_host_url_name_prefers_domain_then_tls_names_then_address(control):
    host = Host("vm", "192.0.2.5", tls_names=("demo-chat.westeurope.cloudapp.azure.com",))
    assert orchestrate.host_url_name(control(tls={"domain": "chat.example.com"}), host) == "chat.example.com"
    assert orchestrate.host_url_name(control(), host) == "demo-chat.westeurope.cloudapp.azure.com"
    assert orchestrate.host_url_name(control(), Host("vm", "192.0.2.5")) == "192.0.2.5"


def test_served_certificate_describes_what_the_host_serves(fake_host):
    served = orchestrate.served_certificate(fake_host.address, fake_host.name)
    assert "error" not in served, served
    assert served["sans"] == [fake_host.address]
    assert "ollastack" in served["issuer"] and "orch" in served["issuer"]
    assert 390 <= served["days_left"] <= 397


def test_served_certificate_reports_no_handshake(control):
    served = orchestrate.served_certificate(loopback_address(), "nothing.example")
    assert served["error"].startswith("no TLS handshake: ") and "refused" in served["error"].lower()


def test_what_fits_finds_models_by_ollama_name_rules():
    report = orchestrate.what_fits(SMI, TAGS, ["registry.ollama.ai/library/llama3.2:1b", "user/big:70b", "absent"])
    assert [(m["name"], m["size"], m["fits"]) for m in report["models"]] == [
        ("registry.ollama.ai/library/llama3.2:1b", 1_321_098_329, True), ("user/big:70b", 42_520_413_916, False),
        ("absent", None, None)]
    assert report["vram_bytes"] == 15360 * 1024 * 1024
    assert report["warnings"] == [
        "user/big:70b (42.5 GB) is larger than the GPU memory (16.1 GB): Ollama runs part of it on the CPU, slowly",
        "absent is not pulled on the host (not in /api/tags)"]


def test_what_fits_ignores_lines_that_are_not_gpus():
    report = orchestrate.what_fits(["NVIDIA-SMI has failed", "", "Tesla T4, n/a"], TAGS, ["llama3.2:1b"])
    assert report["gpus"] == [] and report["models"][0]["fits"] is None
    assert report["warnings"] == ["no NVIDIA GPU answers nvidia-smi: every model runs on the CPU"]


def test_gpu_report_asks_the_host_over_ssh(control):
    fake_ssh(control.bin, smi=SMI, tags=TAGS)
    stack = control(ollama={"models": ["llama3.2:1b"], "host": "127.0.0.1:11500"})
    report = orchestrate.gpu_report(stack, Host("h", "192.0.2.9", port=2222))
    assert report["gpus"] == [{"name": "Tesla T4", "memory_mib": 15360}]
    assert report["models"] == [{"name": "llama3.2:1b", "size": 1_321_098_329, "fits": True}]
    args = (control.bin / "ssh.args").read_text().splitlines()
    assert "root@192.0.2.9" in args and args[args.index("-p") + 1] == "2222"
    assert f"UserKnownHostsFile={known_hosts_file('orch')}" in args
    assert "nvidia-smi" in args[-1] and "http://127.0.0.1:11500/api/tags" in args[-1]


def test_gpu_report_uses_the_static_user_and_survives_bad_json(control):
    fake_ssh(control.bin, smi=[], tags=None)
    (control.bin / "ssh.out").write_text("---\nnot json{")
    stack = control(static={"hosts": ["192.0.2.9"], "user": "debian"})
    [host] = orchestrate.hosts_of(stack)
    report = orchestrate.gpu_report(stack, host)
    args = (control.bin / "ssh.args").read_text().splitlines()
    # nvidia-smi and curl need no root, but every host command runs one way (remote.host_command).
    assert "debian@192.0.2.9" in args and args[-1].startswith("sudo -n sh -c ")
    assert report["models"] == [{"name": "llama3.2:1b", "size": None, "fits": None}]
    assert "llama3.2:1b is not pulled on the host (not in /api/tags)" in report["warnings"]


def test_gpu_report_names_an_ssh_failure(control):
    fake_ssh(control.bin, exit_code=255, stderr="ssh: connect to host 192.0.2.9 port 22: Connection refused")
    report = orchestrate.gpu_report(control(), Host("h", "192.0.2.9"))
    assert report == {"error": "SSH to 192.0.2.9 failed: ssh: connect to host 192.0.2.9 port 22: Connection refused"}


def test_status_of_a_static_stack(control, fake_host):
    fake_ssh(control.bin, smi=SMI, tags=TAGS)
    report = orchestrate.status(control())
    assert (report["stack"], report["provider"]) == ("orch", "static")
    [host] = report["hosts"]
    assert host["name"] == host["address"] == fake_host.address
    assert host["ok"] is True and host["url"] == f"https://{fake_host.address}/"
    assert host["certificate"]["sans"] == [fake_host.address]
    assert host["gpu"]["models"] == [{"name": "llama3.2:1b", "size": 1_321_098_329, "fits": True}]


def test_status_when_the_host_does_not_answer(control):
    fake_ssh(control.bin, exit_code=255, stderr="no route")
    [host] = orchestrate.status(control())["hosts"]
    assert host["ok"] is False
    assert "error" in host["certificate"] and host["gpu"] == {"error": f"SSH to {host['address']} failed: no route"}


def test_hosts_of_each_provider(control, monkeypatch):
    assert orchestrate.hosts_of(control(static={"hosts": ["192.0.2.1", "192.0.2.2"], "user": "debian"})) == [
        Host("192.0.2.1", "192.0.2.1", user="debian"), Host("192.0.2.2", "192.0.2.2", user="debian")]
    monkeypatch.setattr(lab, "list_hosts", lambda name: [{"name": f"{name}-1", "address": "10.213.0.10", "running": True},
                                                          {"name": f"{name}-2", "address": "10.213.0.11", "running": False}])
    assert orchestrate.hosts_of(control("lab")) == [Host("orch-1", "10.213.0.10")]
    state = StackState.load("orch", "azure")
    state.hosts.append({"name": "orch-vm", "address": "192.0.2.30", "user": "ollastack"})
    state.save()
    assert orchestrate.hosts_of(control("azure", azure=AZURE)) == [Host("orch-vm", "192.0.2.30", user="ollastack")]


def test_down_of_static_hosts_deletes_nothing(control):
    lines = []
    assert orchestrate.down(control(), lines.append) == []
    assert lines == ["static hosts are not created by ollastack: nothing to delete"]


def test_down_of_a_lab_stack_removes_only_that_stack(control, monkeypatch):
    calls = []
    monkeypatch.setattr(lab, "down", lambda name, progress: calls.append(name) or [f"host {name}-1 (10.213.0.10)"])
    assert orchestrate.down(control("lab"), print) == ["host orch-1 (10.213.0.10)"]
    assert calls == ["orch"]


def test_provision_of_static_hosts_waits_for_ssh(control):
    fake_ssh(control.bin)
    lines = []
    hosts = orchestrate.provision(control(static={"hosts": ["192.0.2.7"], "user": "debian"}), lines.append)
    assert hosts == [Host("192.0.2.7", "192.0.2.7", user="debian")]
    assert lines[0] == "192.0.2.7: waiting for SSH on 192.0.2.7" and lines[1].startswith("192.0.2.7: SSH ready (")
    args = (control.bin / "ssh.args").read_text().splitlines()
    assert "StrictHostKeyChecking=accept-new" in args and args[-2:] == ["debian@192.0.2.7", "true"]


def test_up_stops_at_a_failed_converge_with_the_way_on(control, tmp_path):
    """A static host that accepts the SSH probe (fake ssh) but not pyinfra's own connection."""
    fake_ssh(control.bin)
    config = tmp_path / "stack.toml"
    stack = control(static={"hosts": [loopback_address()]})
    config.write_text(f'[stack]\nname = "orch"\nprovider = "static"\n\n[static]\nhosts = ["{loopback_address()}"]\n\n'
                      f'[access]\nssh_public_key = "{stack.access.ssh_public_key}"\n'
                      f'ssh_private_key = "{stack.access.ssh_private_key}"\n\n[openwebui]\ninstall = "none"\n')
    lines = []
    with pytest.raises(orchestrate.ConvergeError, match=r"the converge failed on at least one host \(pyinfra exit [1-9]"):
        orchestrate.up(stack, lines.append, config_path=str(config))
    assert lines[-1] == "converging with pyinfra (inventories/static.py deploy/site.py)"


def test_cloud_warnings_come_from_the_provider(control):
    assert providers.get("azure").warnings(control("azure", azure=AZURE)) == []
    mainland = control("alibaba", alibaba={"region": "cn-hangzhou"}, tls={"domain": "chat.example.com"})
    assert any("ICP" in line for line in providers.get("alibaba").warnings(mainland))


def test_provision_shows_the_provider_s_warnings_before_creating(control, monkeypatch):
    mainland = control("alibaba", alibaba={"region": "cn-hangzhou"}, tls={"domain": "chat.example.com"})
    lines = []

    def create(stack, progress):
        lines.append("create")
        return []

    monkeypatch.setattr(providers.get("alibaba"), "create", create)
    assert orchestrate.provision(mainland, lines.append) == []
    assert "ICP" in lines[0] and lines[1:] == ["create"]


def test_dns_preflight_only_for_letsencrypt_with_the_check_on(control):
    host = Host("h", "192.0.2.40")
    orchestrate.dns_preflight(control(), [host])
    orchestrate.dns_preflight(control(tls={"mode": "letsencrypt", "domain": "chat.example.com", "check_dns": False,
                                           "email": "ops@example.com"}), [host])
    unreachable = control(tls={"mode": "letsencrypt", "domain": "chat.example.com", "email": "ops@example.com",
                               "dns_server": "127.0.0.1:9"})
    with pytest.raises(orchestrate.PreflightError, match=r"chat\.example\.com.*\(nothing was requested from the ACME server\)"):
        orchestrate.dns_preflight(unreachable, [host])


def test_provision_of_a_lab_stack_is_the_lab_s_own(control, monkeypatch):
    started = [{"name": "orch-1", "address": "10.213.0.10", "user": "root"}]
    monkeypatch.setattr(lab, "up", lambda stack, progress: started)
    assert orchestrate.provision(control("lab"), print) == [Host("orch-1", "10.213.0.10")]
    assert not (control.bin / "ssh.args").exists()


def test_provision_turns_an_ssh_timeout_into_a_cloud_error(control, monkeypatch):
    def never(*args, **kwargs):
        raise SshTimeout("debian@192.0.2.7 did not accept SSH within 300s (no answer)")

    monkeypatch.setattr(providers, "wait_for_ssh", never)
    with pytest.raises(CloudError, match="did not accept SSH within 300s"):
        orchestrate.provision(control(static={"hosts": ["192.0.2.7"]}), print)


def test_up_reports_each_host_and_the_ca(control, fake_host, monkeypatch):
    converged = []
    monkeypatch.setattr(orchestrate, "converge", lambda stack, path, progress: converged.append(path))
    fake_ssh(control.bin)
    lines = []
    result = orchestrate.up(control(), lines.append, config_path="stack.toml")
    assert converged == ["stack.toml"]
    assert (result["ok"], result["stack"], result["provider"]) == (True, "orch", "static")
    assert result["ca"] == str(certs.ssl_dir("orch") / "ca.pem")
    [host] = result["hosts"]
    assert host["url"] == f"https://{fake_host.address}/" and host["ok"]
    assert any(line.startswith(f"{fake_host.address}: HTTPS verified") for line in lines)


def test_a_cloud_stack_is_provisioned_then_removed(control, arm, keys, monkeypatch):
    """Azure through the real SDK against the ARM emulator: create, SSH (fake), then down removes all."""
    fake_ssh(control.bin)
    stack = parse_stack({"stack": {"name": "orch", "provider": "azure"},
                         "access": {"admin_cidrs": ["198.51.100.7/32"], "ssh_public_key": str(keys[0]),
                                    "ssh_private_key": str(keys[1])},
                         "azure": {"resource_manager_url": arm.url}})
    lines = []
    [host] = orchestrate.provision(stack, lines.append)
    assert host.name == "orch-vm" and arm.stack_resources("orch")
    assert f"orch-vm: waiting for SSH on {host.address}" in lines
    known_hosts_file("orch").write_text("remembered\n")
    removed = orchestrate.down(stack, lines.append)
    assert len(removed) == 6 and arm.stack_resources("orch") == []
    assert not StackState.load("orch").path.exists() and not known_hosts_file("orch").exists()
