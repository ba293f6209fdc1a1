"""NVIDIA driver from NVIDIA's CUDA apt repository, pinned to one branch, only where a GPU is present.

Debian's own driver (535) is too old for current Ollama, so the driver comes from NVIDIA's repository
(keyring checked against a pinned fingerprint, ``signed-by``, no apt-key) with an apt pin that keeps
``apt upgrade`` on ``gpu.driver_branch``. nouveau is blacklisted, ``nvidia`` and ``nvidia_uvm`` load
at boot, the persistence daemon runs, and the host reboots once when the new driver cannot be loaded
otherwise. A host whose driver already answers on the pinned branch sees no change and no reboot.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import KernelVersion
from pyinfra.operations import apt, files, server, systemd
from pyinfra.operations.util import any_changed

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.facts import DebianRelease, KeyFingerprints, NvidiaGpu, OllamaLoaded, SecureBoot
from ollastack.deploy.present import fact
from ollastack.deploy.guards import plan_check
from ollastack.resources import template
from ollastack.ollama_names import tagged

VRAM_CHECK = "/usr/local/lib/ollastack/nvidia-vram-check.py"
NVIDIA_REPO = "https://developer.download.nvidia.com/compute/cuda/repos/{release}/x86_64/"
KEYRING = "/etc/apt/keyrings/ollastack-cuda.asc"
SOURCES = "/etc/apt/sources.list.d/ollastack-cuda.list"
PIN = "/etc/apt/preferences.d/ollastack-nvidia"
BLACKLIST = "/etc/modprobe.d/ollastack-nouveau.conf"
MODULES = "/etc/modules-load.d/ollastack-nvidia.conf"
# Packages whose versions follow the driver's (570.124.06-1 ...): the pin keeps all of them on one branch.
PINNED = "cuda-drivers* nvidia-* libnvidia-* libcuda1* libnvcuvid1* libnvoptix1* xserver-xorg-video-nvidia* firmware-nvidia-*"


def gpu_present() -> bool:
    """Whether the current host gets the NVIDIA driver: a GPU on its PCI bus and ``gpu.mode`` is not off.

    Example (in another component): ``if gpu_present(): files.put(...)``
    """
    return host.data.ollastack_gpu_mode != "off" and bool(usable_gpu()["pci"])


def driver_on_branch(state: dict, branch: str) -> bool:
    """Whether nvidia-smi answers for every GPU with a driver of ``branch``: ``570.124.06`` is on ``570``."""
    gpus = state["gpus"]
    return bool(gpus) and len(gpus) == len(state["pci"]) and all(
        g["driver_version"].split(".")[0] == branch for g in gpus)


def repository_url(data, release: str | None) -> str:
    """``gpu.cuda_repo_url``, else NVIDIA's repository for the host's Debian release."""
    if data.ollastack_gpu_cuda_repo_url:
        return data.ollastack_gpu_cuda_repo_url.rstrip("/") + "/"
    if release is None:
        raise DeployError(f"{host.name}: not a Debian host (/etc/os-release); NVIDIA's driver repository is set up "
                          "for Debian 12/13 only: set gpu.mode = \"off\" or gpu.cuda_repo_url")
    return NVIDIA_REPO.format(release=release)


def install_key(data, repo: str):
    """Put the repository's signing key in place if it is not there yet, refusing any other fingerprint."""
    want = data.ollastack_gpu_cuda_key_fingerprint
    if host.get_fact(KeyFingerprints, path=KEYRING) == [want]:
        return None
    url = data.ollastack_gpu_cuda_key_url or repo + "3bf863cc.pub"
    fetched = "/etc/apt/keyrings/.ollastack-cuda.download"
    # Every stack value is quoted whole; "$got" is the only expansion the shell makes.
    q = shlex.quote
    refused = (f"printf '%s%s%s\\n' {q(f'the key at {url} has fingerprint(s) ')} \"${{got:-none}}\" "
               f"{q(f', not {want} (gpu.cuda_key_fingerprint): refused, nothing installed')} >&2")
    script = (
        f"set -e; mkdir -p /etc/apt/keyrings; curl -fsSL --retry 3 -o {fetched} -- {q(url)}; "
        f"got=$(gpg --show-keys --with-colons {fetched} | awk -F: '/^pub/ {{p=1}} /^fpr/ && p {{print $10; p=0}}'); "
        f"if [ \"$got\" != {q(want)} ]; then rm -f {fetched}; {refused}; exit 1; fi; "
        f"install -m 0644 {fetched} {KEYRING}; rm -f {fetched}")
    return server.shell(name="NVIDIA repository signing key (fingerprint checked)", commands=[script])


def cuda_repository(data, release: str | None) -> list:
    """NVIDIA's apt repository with its own keyring (``signed-by``) and the driver branch pin.

    Returns the operations that changed the apt configuration (an index refresh follows them).
    Example: ``cuda_repository(host.data, "debian12")``
    """
    repo = repository_url(data, release)
    ensure_packages(["gpg", "curl", "ca-certificates"], "Install gpg to check the NVIDIA key")
    key = install_key(data, repo)
    sources = files.put(name="NVIDIA CUDA repository", dest=SOURCES, mode="0644",
                        src=StringIO(f"# Managed by ollastack (gpu.cuda_repo_url).\n"
                                     f"deb [signed-by={KEYRING}] {repo} /\n"))
    pin = files.put(name=f"Pin the NVIDIA driver to branch {data.ollastack_gpu_driver_branch}", dest=PIN, mode="0644",
                    src=StringIO(f"# Managed by ollastack: keep the driver on gpu.driver_branch.\n"
                                 f"Package: {PINNED}\nPin: version {data.ollastack_gpu_driver_branch}.*\nPin-Priority: 1001\n"))
    changed = [op for op in (key, sources, pin) if op is not None]
    apt.update(name="Refresh the apt index for the NVIDIA repository", _if=any_changed(*changed), _retries=2,
               _retry_delay=5)
    return changed


def driver_packages(data, kernel: str):
    """The pinned driver branch and the headers DKMS builds the module against.

    Example: ``driver_packages(host.data, host.get_fact(KernelVersion))``
    """
    return apt.packages(name=f"NVIDIA driver {data.ollastack_gpu_driver_branch} and headers for {kernel}",
                        packages=[f"linux-headers-{kernel}", f"cuda-drivers-{data.ollastack_gpu_driver_branch}"],
                        no_recommends=True, _retries=2, _retry_delay=5)


def facts(data) -> list:
    """What ``usable_gpu`` asks ``deploy.present.fact`` (for ``prefetch``): nothing with ``gpu.mode = "off"``."""
    return [] if data.ollastack_gpu_mode == "off" else [(NvidiaGpu, {})]


@plan_check
def usable_gpu() -> dict:
    """The ``NvidiaGpu`` fact of the current host (read once per run), after refusing, before anything
    changes, a host that cannot get a working driver.

    Example: ``usable_gpu()["pci"]``
    """
    data = host.data
    if data.ollastack_gpu_mode == "off":
        # Not even looked for: a GPU is nothing to this host's converge.
        return NvidiaGpu().default()
    state = fact(NvidiaGpu)
    check_host(data, state, driver_on_branch(state, data.ollastack_gpu_driver_branch))
    return state


def check_host(data, state: dict, working: bool) -> None:
    """Raise when ``gpu.mode`` requires a GPU the host lacks, or Secure Boot would refuse the unsigned module."""
    if not state["pci"]:
        if data.ollastack_gpu_mode == "required":
            raise DeployError(f"{host.name}: gpu.mode = \"required\" but no NVIDIA GPU (PCI vendor 10de) was found; "
                              "choose a GPU size (azure.vm_size / alibaba.instance_type) or set gpu.mode = \"auto\"")
        return
    if not working and host.get_fact(SecureBoot) and not data.ollastack_gpu_secure_boot_signing:
        raise DeployError(
            f"{host.name}: Secure Boot is on, so the unsigned NVIDIA DKMS module would not load; nothing was changed. "
            "Create the VM without Secure Boot (Azure: security type Standard instead of Trusted Launch), or enroll "
            "a MOK for DKMS (mokutil --import /var/lib/dkms/mok.pub, then reboot and confirm on the console) and "
            "set gpu.secure_boot_signing = true")


def ollama_after_driver():
    """Order Ollama after the NVIDIA persistence daemon (a drop-in), on hosts with a GPU; None elsewhere.

    Example (in the Ollama component): ``after_driver = ollama_after_driver()``
    """
    if not gpu_present():
        return None
    return files.put(name="Ollama starts after the NVIDIA driver", src=str(template("nvidia-ollama-after.conf")),
                     dest="/etc/systemd/system/ollama.service.d/nvidia.conf", mode="0644")


def check_gpu_offload(data, address: str, changes: list):
    """Fail the converge when Ollama runs the first configured model on the CPU although a GPU is present.

    Runs when ``changes`` (Ollama restart, driver install) changed something, or when a model is already
    loaded on the CPU, so that a healthy host's re-run stays change-free.
    Example: ``check_gpu_offload(host.data, "127.0.0.1:11434", [restart, *gpu_changes])``
    """
    if not gpu_present() or not data.ollastack_ollama_models:
        return None
    model = tagged(data.ollastack_ollama_models[0])
    loaded = host.get_fact(OllamaLoaded, address=address)
    on_cpu = loaded is None or any(m["size_vram"] == 0 for m in loaded)
    files.put(name="GPU offload check helper", src=str(template("nvidia-vram-check.py")), dest=VRAM_CHECK,
              mode="0755")
    return server.shell(name=f"Ollama runs {model} on the GPU", commands=[shlex.join(["python3", VRAM_CHECK, address, model])],
                        _if=lambda: on_cpu or any(op.did_change() for op in changes))


@deploy("NVIDIA", data_defaults=DEFAULTS)
def nvidia():
    """The driver where a GPU is present; returns the operations that changed it (for Ollama's GPU check).

    Example (deploy/site.py): ``gpu_changes = nvidia()``, then ``ollama(models=False)``; last ``ollama_models(restart, gpu_changes)``
    """
    data = host.data
    if data.ollastack_gpu_mode == "off":
        return []
    state = usable_gpu()
    working = driver_on_branch(state, data.ollastack_gpu_driver_branch)
    if not state["pci"]:
        return []
    cuda_repository(data, host.get_fact(DebianRelease))
    packages = driver_packages(data, host.get_fact(KernelVersion))
    blacklist = files.put(name="Blacklist nouveau", dest=BLACKLIST, mode="0644",
                          src=StringIO("# Managed by ollastack: the NVIDIA driver needs the GPU.\n"
                                       "blacklist nouveau\noptions nouveau modeset=0\n"))
    server.shell(name="Rebuild the initramfs without nouveau", _if=blacklist.did_change,
                 commands=["if command -v update-initramfs >/dev/null; then update-initramfs -u; fi"])
    files.put(name="Load nvidia and nvidia_uvm at boot", dest=MODULES, mode="0644",
              src=StringIO("# Managed by ollastack: Ollama needs nvidia_uvm, which nothing else loads.\n"
                           "nvidia\nnvidia_uvm\n"))
    # A driver that already answers on the branch needs nothing; a new or changed one needs the boot
    # that unloads nouveau (or the old module) and loads the new one.
    def reboot_needed() -> bool:
        return not working or packages.did_change()
    reboot = server.reboot(name="Reboot to load the NVIDIA driver", delay=10, reboot_timeout=600, _if=reboot_needed)
    server.shell(name="NVIDIA driver answers", _if=reboot_needed, commands=[
        "modprobe nvidia && modprobe nvidia_uvm && nvidia-smi -L || { echo 'the NVIDIA driver did not load after "
        "the reboot: see `dkms status` and `journalctl -k | grep -i nvidia` (Secure Boot? a kernel without "
        "headers?)' >&2; exit 1; }"])
    systemd.service(name="NVIDIA persistence daemon", service="nvidia-persistenced", running=True, enabled=True)
    return [packages, reboot]
