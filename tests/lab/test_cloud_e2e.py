"""``ollastack up`` end to end against the cloud emulators, onto a lab host that plays the VM.

For each provider the real CLI (``python -m ollastack.cli --json up``, a subprocess) signs in and
creates the stack's resources through the real SDK against the provider's emulator
(``tests/support/azure_emulator.py``, ``tests/support/alibaba_emulator.py``), whose VM/instance reports a lab host's
address as its public IP. The lab host is started as a separate lab stack and given beforehand what
the cloud image would have: for Azure the admin user with the SSH key and passwordless sudo (as
cloud-init does), for Alibaba root with the key. ``up`` then waits for SSH, converges the host with
pyinfra and checks HTTPS with the stack CA, exactly as against a real cloud.

Every Python process the CLI starts runs under ``tests/support/netguard`` (refuses and logs connections to
anything but loopback and the lab host); each test checks the log is empty.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trustme

from ollastack import lab
from ollastack.cloud import plan
from ollastack.config import LabSection
from ollastack.pricing import AZURE_PRICES_ENV
from tests.support.repo import REPO
from tests.support.alibaba_emulator import AlibabaEmulator
from tests.support.azure_emulator import TAG, AzureEmulator
from tests.support.azure_prices import RetailPrices
from tests.support.labkit import ssh, without_leftovers

NETGUARD = REPO / "tests/support/netguard"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
# The control machine's address on the lab bridge: where SSH to the "VM" comes from.
CONTROL = f"{lab._network(LabSection().subnet)[1]}/32"
AZURE_KINDS = ["resourcegroups", "virtualnetworks", "networksecuritygroups", "publicipaddresses",
               "networkinterfaces", "virtualmachines"]
ALIBABA_CREATES = ["CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "AuthorizeSecurityGroup", "ImportKeyPair",
                   "RunInstances"]
# What cloud-init does on an Azure Debian image for osProfile.adminUsername + an SSH public key.
CLOUD_INIT_ADMIN = (
    "id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}; "
    "install -d -m 700 -o {user} -g {user} /home/{user}/.ssh; "
    "install -m 600 -o {user} -g {user} /root/.ssh/authorized_keys /home/{user}/.ssh/authorized_keys; "
    "echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users; "
    "chmod 440 /etc/sudoers.d/90-cloud-init-users")


class AzureCloud:
    """The ARM emulator over HTTPS, and how the CLI reaches it (env + ``[azure]`` settings)."""

    provider, stack_name, user = "azure", "e2eaz", "ollastack"
    subscription = "00000000-0000-0000-0000-0000000e2e00"

    def __init__(self, address: str):
        ca = trustme.CA()
        self.emulator = AzureEmulator(ca, client_secret="e2e-secret", public_ip=address)
        # `up` prices the stack first (its plan): the Retail Prices API's stand-in, trusted through the same CA.
        self.prices = RetailPrices(ca)

    def __enter__(self) -> "AzureCloud":
        self.emulator.__enter__()
        self.prices.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.prices.__exit__(*exc)
        self.emulator.__exit__(*exc)

    def settings(self) -> dict:
        return {"resource_manager_url": self.emulator.url, "subscription_id": self.subscription}

    def env(self) -> dict[str, str]:
        # EnvironmentCredential only: no managed-identity probe of 169.254.169.254, no az CLI.
        return {"REQUESTS_CA_BUNDLE": self.emulator.ca_bundle(), "AZURE_AUTHORITY_HOST": self.emulator.url,
                "AZURE_TENANT_ID": "ollastack-e2e", "AZURE_CLIENT_ID": self.emulator.client_id,
                "AZURE_CLIENT_SECRET": self.emulator.client_secret, "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
                plan.POLL_ENV: "0", AZURE_PRICES_ENV: self.prices.url}

    def creates(self) -> list[str]:
        """Every write the emulator accepted, as "METHOD type"."""
        return [f"{r.method} {r.rtype}" for r in self.emulator.requests
                if r.method != "GET" and r.rtype and 200 <= r.status < 300]

    def leftovers(self) -> list[str]:
        return self.emulator.stack_resources(self.stack_name)

    def check_creates(self) -> None:
        assert sorted(self.creates()) == sorted(f"PUT {kind}" for kind in AZURE_KINDS)
        [nsg] = [r.body for r in self.emulator.seen("PUT", "networkSecurityGroups") if r.status in (200, 201)]
        rules = {rule["name"]: rule["properties"] for rule in nsg["properties"]["securityRules"]}
        assert rules["allow-ssh-admin"]["sourceAddressPrefixes"] == [CONTROL]
        assert "11434" not in json.dumps(nsg)
        [vm] = [r.body for r in self.emulator.seen("PUT", "virtualMachines") if r.status in (200, 201)]
        os_profile = vm["properties"]["osProfile"]
        assert os_profile["adminUsername"] == self.user and "adminPassword" not in os_profile
        assert os_profile["linuxConfiguration"]["disablePasswordAuthentication"] is True
        assert all(body["tags"][TAG] == self.stack_name for body in (nsg, vm))


class AlibabaCloud:
    """The ECS + VPC emulator over HTTP (ACS3 signatures checked), and how the CLI reaches it."""

    provider, stack_name, user = "alibaba", "e2eali", "root"
    key_id, secret = "LTAI-e2e-key", "e2e-secret"

    def __init__(self, address: str):
        self.emulator = AlibabaEmulator(access_key_id=self.key_id, access_key_secret=self.secret, public_ip=address)

    def __enter__(self) -> "AlibabaCloud":
        self.emulator.start()
        return self

    def __exit__(self, *exc) -> None:
        self.emulator.stop()

    def settings(self) -> dict:
        return {"ecs_endpoint": self.emulator.ecs_url, "vpc_endpoint": self.emulator.vpc_url}

    def env(self) -> dict[str, str]:
        return {"ALIBABA_CLOUD_ACCESS_KEY_ID": self.key_id, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": self.secret}

    def creates(self) -> list[str]:
        return [r["action"] for r in self.emulator.requests
                if r["status"] == 200 and re.match(r"(Create|Import|Run|Authorize|Revoke|Allocate)", r["action"])]

    def leftovers(self) -> list[str]:
        if not self.emulator.resource_count():
            return []
        return [rid for items in self.emulator.resources.values() for rid in items]

    def check_creates(self) -> None:
        assert sorted(self.creates()) == sorted(ALIBABA_CREATES)
        [grant] = self.emulator.calls("AuthorizeSecurityGroup")
        rules = {(grant[f"Permissions.{n}.PortRange"], grant[f"Permissions.{n}.SourceCidrIp"])
                 for n in range(1, 4) if f"Permissions.{n}.PortRange" in grant}
        assert rules == {("22/22", CONTROL), ("80/80", "0.0.0.0/0"), ("443/443", "0.0.0.0/0")}
        [run] = self.emulator.calls("RunInstances")
        assert run["KeyPairName"] and "Password" not in run


CLOUDS = {"azure": AzureCloud, "alibaba": AlibabaCloud}


class E2E:
    """One provider's run: the lab "VM", the cloud emulator, the stack description and the CLI."""

    def __init__(self, workdir: Path, cloud, vm: dict, keypair, archives, extra: dict | None = None):
        self.dir, self.cloud, self.vm, self.keypair = workdir, cloud, vm, keypair
        self.config = workdir / "stack.toml"
        self.refused_log = workdir / "refused.log"
        self.refused_log.touch()
        archive, sha = archives["0.13.3"]
        public, private = keypair
        toml = {
            "stack": {"name": cloud.stack_name, "provider": cloud.provider},
            "access": {"admin_cidrs": [CONTROL], "ssh_public_key": str(public), "ssh_private_key": str(private)},
            cloud.provider: cloud.settings(),
            "ollama": {"archive": str(archive), "sha256": sha, "models": ["llama3.2:1b"]},
            # No registry or index is reachable from the lab: the web UI has its own lab tests.
            "openwebui": {"install": "none"},
            **(extra or {}),
        }
        self.config.write_text("".join(f"[{table}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
                                       + "\n" for table, values in toml.items()))
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env.update(cloud.env())
        env.update(OLLASTACK_CONFIG=str(self.config), OLLASTACK_SSL_DIR=str(workdir / "ssl"),
                   OLLASTACK_STATE_DIR=str(workdir / "state"),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(NETGUARD), env.get("PYTHONPATH")])),
                   OLLASTACK_TEST_ALLOWED=f"127.0.0.0/8,{vm['address']}/32",
                   OLLASTACK_TEST_REFUSED_LOG=str(self.refused_log))
        self.env = env
        self.first_up: subprocess.CompletedProcess | None = None

    def ollastack(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ollastack.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=900)

    @property
    def ca(self) -> Path:
        return self.dir / "ssl" / self.cloud.stack_name / "ca.pem"

    @property
    def state_file(self) -> Path:
        return self.dir / "state" / f"{self.cloud.stack_name}.json"

    def refused(self) -> list[str]:
        """Addresses the network guard refused; fails if the guard never loaded (then it refused nothing)."""
        lines = [line.split(" ", 1) for line in self.refused_log.read_text().splitlines()]
        assert any(kind == "loaded" for kind, _ in lines), f"the network guard never loaded: {self.refused_log}"
        return [address for kind, address in lines if kind == "refused"]


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    """An RSA key pair: Alibaba's ImportKeyPair refuses ed25519 (the conftest key), Azure takes RSA too."""
    private = tmp_path_factory.mktemp("e2e-key") / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-C", "ollastack-tests", "-f", str(private)],
                   check=True)
    return private.with_suffix(".pub"), private


def lab_down(config: Path) -> None:
    subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), "lab", "down"],
                   capture_output=True, text=True, timeout=300)


def lab_vm(workdir: Path, name: str, keypair) -> tuple[Path, dict]:
    """Start a one-host lab stack ``name`` (its own description file); returns (config, host)."""
    config = workdir / f"{name}.toml"
    public, private = keypair
    config.write_text(f'[stack]\nname = "{name}"\nprovider = "lab"\n\n'
                      f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n')
    without_leftovers(name, lambda: lab_down(config))
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), "--json", "lab", "up",
                             "--hosts", "1"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, json.loads(result.stdout)[0]


@pytest.fixture(scope="module", params=list(CLOUDS))
def e2e(request, tmp_path_factory, keypair, archives):
    """A first ``ollastack --json up`` of the provider's stack onto a fresh lab "VM" (kept in ``first_up``)."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    cloud_cls = CLOUDS[request.param]
    workdir = tmp_path_factory.mktemp(f"e2e-{request.param}")
    config, vm = lab_vm(workdir, f"{cloud_cls.stack_name}-vm", keypair)
    try:
        if cloud_cls.user != "root":
            ssh(vm["address"], CLOUD_INIT_ADMIN.format(user=cloud_cls.user), keypair)
        with cloud_cls(vm["address"]) as cloud:
            run = E2E(workdir, cloud, vm, keypair, archives)
            run.first_up = run.ollastack("--json", "up")
            yield run
    finally:
        lab_down(config)


def https_status(url: str, ca: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(url, context=context, timeout=15) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def pyinfra_changes(stderr: str) -> int:
    """Operations that changed something, from the "Grand total" row of pyinfra's results table."""
    rows = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", stderr).splitlines() if "Grand total" in line]
    assert rows, "pyinfra printed no results table"
    _, _, _hosts, success, _error, _no_change = rows[-1].split()
    return 0 if success == "-" else int(success)


@pytest.mark.lab
def test_up_converges_the_vm_and_prints_a_verified_https_url(e2e):
    result = e2e.first_up
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    [host] = report["hosts"]
    assert (report["ok"], report["provider"], report["ca"]) == (True, e2e.cloud.provider, str(e2e.ca))
    assert host["url"] == f"https://{e2e.vm['address']}/" and host["ok"]
    assert f"waiting for SSH on {e2e.vm['address']}" in result.stderr
    assert pyinfra_changes(result.stderr) > 0
    # The stack CA alone verifies the certificate (name = the address the cloud reported).
    assert host["https"] == f"HTTPS verified, HTTP {https_status(host['url'], e2e.ca)}"
    with pytest.raises(urllib.error.URLError):
        https_status(host["url"], Path(ssl.get_default_verify_paths().cafile))
    assert e2e.refused() == []


@pytest.mark.lab
def test_the_converge_logged_in_as_the_image_user(e2e):
    # The host key was trusted on first use into the stack's own known_hosts file (names hashed).
    known_hosts = e2e.dir / "state" / f"{e2e.cloud.stack_name}.known_hosts"
    assert subprocess.run(["ssh-keygen", "-F", e2e.vm["address"], "-f", str(known_hosts)],
                          capture_output=True).returncode == 0
    # pyinfra runs as the image's user: through sudo for Azure's admin user, directly as root on ECS.
    sudo_lines = f"journalctl -q _COMM=sudo -o cat | grep -c '^ *{e2e.cloud.user} : .*USER=root' || true"
    sudo = ssh(e2e.vm["address"], sudo_lines, e2e.keypair)
    assert (int(sudo.stdout) > 0) == (e2e.cloud.user != "root")


@pytest.mark.lab
def test_emulator_received_the_expected_creates(e2e):
    e2e.cloud.check_creates()


@pytest.mark.lab
def test_second_up_creates_nothing_and_changes_nothing(e2e):
    before = e2e.cloud.creates()
    result = e2e.ollastack("--json", "up")
    assert result.returncode == 0, result.stderr[-4000:]
    assert e2e.cloud.creates() == before
    assert pyinfra_changes(result.stderr) == 0
    assert json.loads(result.stdout) == json.loads(e2e.first_up.stdout)
    assert e2e.refused() == []


@pytest.mark.lab
def test_plan_after_up_reads_the_pulled_models_and_writes_nothing(e2e):
    """After `up` the plan creates nothing and gives the models' real sizes from the running host."""
    known_hosts = e2e.dir / "state" / f"{e2e.cloud.stack_name}.known_hosts"
    before = (known_hosts.read_bytes(), e2e.state_file.read_bytes())
    result = e2e.ollastack("--json", "plan")
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert [c for c in plan["changes"] if c["action"] == "create"] == []
    pulled = [line for line in plan["gpu"] if " is " in line and " GB as pulled " in line]
    assert len(pulled) == 1 and "llama3.2:1b is " in pulled[0] and pulled[0].endswith("runs on the CPU"), plan["gpu"]
    assert (known_hosts.read_bytes(), e2e.state_file.read_bytes()) == before
    assert e2e.refused() == []


@pytest.mark.lab
def test_status_then_down_leaves_nothing(e2e):
    status = e2e.ollastack("--json", "status")
    assert status.returncode == 0, status.stderr[-2000:]
    [host] = json.loads(status.stdout)["hosts"]
    assert host["ok"] and host["address"] == e2e.vm["address"]

    down = e2e.ollastack("--json", "down", "--yes")
    assert down.returncode == 0, down.stderr[-2000:]
    assert json.loads(down.stdout)["removed"]
    assert e2e.cloud.leftovers() == []
    assert not e2e.state_file.exists()
    assert e2e.refused() == []


def test_up_shows_provider_warnings_before_creating_and_down_cleans_up(tmp_path, keypair, archives):
    """No lab host needed: the create fails at the VPC, after the ICP warning was shown."""
    with AlibabaCloud("127.0.0.1") as cloud:
        run = E2E(tmp_path, cloud, {"address": "127.0.0.1"}, keypair, archives,
                  extra={"tls": {"domain": "chat.example.com"}})
        cloud.emulator.inject("CreateVpc", "error", code="QuotaExceed.Vpc")
        result = run.ollastack("--json", "up")
        assert result.returncode == 1 and result.stdout == ""
        lines = result.stderr.splitlines()
        warning = next(i for i, line in enumerate(lines) if "needs an ICP filing" in line)
        assert all("created" not in line for line in lines[:warning])
        assert lines[-1].startswith("error: ") and "QuotaExceed.Vpc" in lines[-1]

        down = run.ollastack("--json", "down", "--yes")
        assert down.returncode == 0, down.stderr
        assert cloud.leftovers() == [] and not run.state_file.exists()
        assert run.refused() == []
