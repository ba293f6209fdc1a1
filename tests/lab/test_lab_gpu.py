"""The NVIDIA component on a real Debian 12 lab host (no GPU there), over real SSH with real apt.

A host without a GPU gets no NVIDIA package from a full converge. The repository wiring runs for real
against a signed local repository standing in for NVIDIA's (tests/support/aptrepo.py), served from the control
machine on the lab bridge: the deploy installs its keyring (fingerprint checked), apt verifies the
signature and installs the pinned dummy driver; another signing key is refused. Lab hosts share the
control machine's kernel, so modules and the reboot are covered by tests/test_gpu_fake.py.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ollastack import lab
from tests.support.aptrepo import SignedRepo
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab
NAME = "gputest"
DRIVER = "570.124.06-1"
REPOSITORY_DEPLOY = '''"""Only the repository part of the NVIDIA component (lab hosts have no GPU)."""
from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import KernelVersion

from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.facts import DebianRelease
from ollastack.deploy.nvidia import cuda_repository, driver_packages


@deploy("NVIDIA repository", data_defaults=DEFAULTS)
def repository():
    cuda_repository(host.data, host.get_fact(DebianRelease))
    driver_packages(host.data, host.get_fact(KernelVersion))


repository()
'''


class GpuStack(LabStack):
    """The lab test stack under its own name."""

    name = NAME

    def gpu(self, **settings) -> None:
        self.write(extra="[gpu]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))

    def repository_converge(self, check: bool = True) -> tuple[subprocess.CompletedProcess, dict | None]:
        """The real pyinfra CLI running only the NVIDIA repository part on the stack's lab host."""
        deploy_file = self.dir / "nvidia_repository.py"
        deploy_file.write_text(REPOSITORY_DEPLOY)
        return self.pyinfra(check=check, deploy=str(deploy_file))


@pytest.fixture(scope="module")
def gpu_stack(tmp_path_factory, keypair, archives):
    yield from lab_stack_fixture(lambda: GpuStack(tmp_path_factory.mktemp("gpu"), keypair, archives))


@pytest.fixture(scope="module")
def gpu_host(gpu_stack) -> dict:
    return gpu_stack.up_one()


@pytest.fixture(scope="module")
def repositories(gpu_stack, gpu_host, keypair):
    """{"good": url, "other": url, "good_key": SignedRepo, "other_key": SignedRepo}, served on the lab bridge."""
    kernel = ssh(gpu_host["address"], "uname -r", keypair).stdout.strip()
    good = SignedRepo(gpu_stack.dir / "repo-good", "ollastack test CUDA key")
    other = SignedRepo(gpu_stack.dir / "repo-other", "some other key")
    for repo in (good, other):
        repo.add_package("cuda-drivers-570", DRIVER, files={"/usr/share/doc/cuda-drivers-570/README": "stand-in\n"})
        # A newer branch in the repository: the pin must keep apt on 570.
        repo.add_package("nvidia-persistenced", DRIVER)
        repo.add_package("nvidia-persistenced", "575.51.03-1")
        repo.add_package(f"linux-headers-{kernel}", "6.1.0-1", files={f"/usr/src/linux-headers-{kernel}/Makefile": ""})
        repo.publish()
    gateway = lab._network("10.213.0.0/24")[1]
    with good.serve(gateway) as good_url, other.serve(gateway) as other_url:
        yield {"good": good_url, "other": other_url, "good_key": good, "other_key": other}


def nvidia_packages(address: str, keypair) -> list[str]:
    """Installed packages named like NVIDIA's, as "name version"."""
    out = ssh(address, "dpkg-query -W -f '${db:Status-Abbrev}|${Package} ${Version}\\n'", keypair).stdout
    installed = [line.split("|", 1)[1] for line in out.splitlines() if line.startswith("ii")]
    return [p for p in installed if "nvidia" in p or "cuda" in p]


def test_converge_without_gpu_installs_no_nvidia_package(gpu_stack, gpu_host, keypair):
    gpu_stack.gpu(mode="auto")
    _, report = gpu_stack.pyinfra()
    assert report["results"]["totals"]["error"] == 0
    assert not [name for name in changed_ops(report) if name.startswith("NVIDIA")]
    assert nvidia_packages(gpu_host["address"], keypair) == []
    listing = ssh(gpu_host["address"], "ls /etc/apt/sources.list.d /etc/systemd/system/ollama.service.d", keypair).stdout
    assert "ollastack-cuda.list" not in listing and "nvidia.conf" not in listing


def test_signed_repository_installs_the_pinned_dummy_driver(gpu_stack, gpu_host, keypair, repositories):
    good = repositories["good_key"]
    gpu_stack.gpu(cuda_repo_url=repositories["good"], cuda_key_fingerprint=good.fingerprint)
    _, report = gpu_stack.repository_converge()
    assert "NVIDIA repository | NVIDIA repository signing key (fingerprint checked)" in changed_ops(report)
    address = gpu_host["address"]
    assert nvidia_packages(address, keypair) == [f"cuda-drivers-570 {DRIVER}"]
    sources = ssh(address, "cat /etc/apt/sources.list.d/ollastack-cuda.list", keypair).stdout
    assert f"deb [signed-by=/etc/apt/keyrings/ollastack-cuda.asc] {repositories['good']} /" in sources
    keyring = ssh(address, "gpg --show-keys --with-colons /etc/apt/keyrings/ollastack-cuda.asc", keypair).stdout
    assert f"fpr:::::::::{good.fingerprint}:" in keyring
    assert ssh(address, "ls /etc/apt/trusted.gpg /etc/apt/trusted.gpg.d/*cuda* 2>/dev/null || true", keypair).stdout == ""
    policy = ssh(address, "apt-cache policy nvidia-persistenced", keypair).stdout
    assert f"Candidate: {DRIVER}" in policy, policy
    _, report = gpu_stack.repository_converge()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


def test_repository_signed_with_another_key_is_refused(gpu_stack, gpu_host, keypair, repositories):
    good = repositories["good_key"]
    gpu_stack.gpu(cuda_repo_url=repositories["other"], cuda_key_url=repositories["good"] + "3bf863cc.pub",
                  cuda_key_fingerprint=good.fingerprint)
    result, _ = gpu_stack.repository_converge(check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "NO_PUBKEY" in output or "not signed" in output, output[-3000:]
    # Nothing from the repository apt could not verify is known to apt.
    policy = ssh(gpu_host["address"], "apt-cache policy cuda-drivers-570", keypair).stdout
    assert repositories["other"] not in policy


def test_key_with_another_fingerprint_is_not_installed(gpu_stack, gpu_host, keypair, repositories):
    good, other = repositories["good_key"], repositories["other_key"]
    gpu_stack.gpu(cuda_repo_url=repositories["good"], cuda_key_fingerprint=other.fingerprint)
    result, _ = gpu_stack.repository_converge(check=False)
    assert result.returncode == 1
    assert f"not {other.fingerprint} (gpu.cuda_key_fingerprint): refused, nothing installed" in result.stdout + result.stderr
    keyring = ssh(gpu_host["address"], "gpg --show-keys --with-colons /etc/apt/keyrings/ollastack-cuda.asc", keypair).stdout
    assert f"fpr:::::::::{good.fingerprint}:" in keyring
    # Back to the right fingerprint: the installed key is kept, only the repository line changes back.
    gpu_stack.gpu(cuda_repo_url=repositories["good"], cuda_key_fingerprint=good.fingerprint)
    _, report = gpu_stack.repository_converge()
    assert "NVIDIA repository | NVIDIA repository signing key (fingerprint checked)" not in changed_ops(report)


NVIDIA_SMI_STANDIN = """#!/bin/sh
# Stand-in for nvidia-smi written by tests/test_lab_gpu.py (lab hosts have no GPU): the documented
# output of --query-gpu=name,memory.total --format=csv,noheader,nounits for a 15 GiB T4.
echo "Tesla T4, 15360"
"""


def test_status_reports_gpu_and_which_models_fit(gpu_stack, gpu_host, keypair):
    address = gpu_host["address"]
    result = gpu_stack.ollastack("--json", "status")
    gpu = json.loads(result.stdout)["hosts"][0]["gpu"]
    assert gpu["gpus"] == [] and "no NVIDIA GPU answers nvidia-smi: every model runs on the CPU" in gpu["warnings"]
    ssh(address, f"cat > /usr/local/bin/nvidia-smi <<'EOF'\n{NVIDIA_SMI_STANDIN}EOF\nchmod 0755 /usr/local/bin/nvidia-smi",
        keypair)
    try:
        gpu_stack.write(ollama={"models": ["llama3.2:1b", "llama3.1:70b"]}, extra="")
        result = gpu_stack.ollastack("status")
        report = json.loads(gpu_stack.ollastack("--json", "status").stdout)["hosts"][0]["gpu"]
    finally:
        ssh(address, "rm -f /usr/local/bin/nvidia-smi", keypair)
        gpu_stack.write()
    assert report["gpus"] == [{"name": "Tesla T4", "memory_mib": 15360}]
    sizes = json.loads(ssh(address, "curl -fsS 127.0.0.1:11434/api/tags", keypair).stdout)["models"]
    size = next(m["size"] for m in sizes if m["name"] == "llama3.2:1b")
    assert report["models"] == [{"name": "llama3.2:1b", "size": size, "fits": True},
                                {"name": "llama3.1:70b", "size": None, "fits": None}]
    assert "llama3.1:70b is not pulled on the host (not in /api/tags)" in report["warnings"]
    assert "gpu: Tesla T4, 15.0 GiB" in result.stdout
    assert f"model llama3.2:1b ({size / 1e9:.1f} GB): fits in GPU memory" in result.stdout
