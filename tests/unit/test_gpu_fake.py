"""The NVIDIA component's branches, run by pyinfra against its ``@fake`` connector.

The fake connector executes nothing: every command the deploy sends is recorded, and the facts it
reads are answered from scripted command output (``fake_responses``) describing the host: its PCI
devices, nvidia-smi, Secure Boot, installed packages and the files already in place. The facts' own
parsing and pyinfra's own change detection run for real.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operations import run_ops

from ollastack.deploy import nvidia as component
from ollastack.deploy.facts import NvidiaGpu, parse_smi_line
from tests.support.repo import REPO
from ollastack.config import NVIDIA_CUDA_KEY_FINGERPRINT
from ollastack.orchestrate import what_fits

KERNEL = "6.1.0-31-cloud-amd64"
# nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits (documented format).
SMI_570 = "Tesla T4, 15360, 570.124.06"
BASE_HOST = {
    "/sys/bus/pci/devices": ["pci 0000:00:1e.0"],
    "/etc/os-release": ["debian 12"],
    "uname -r": [KERNEL],
    "/proc/uptime": ["4242"],
}
INSTALL = re.compile(r"apt-get .*install")


@pytest.fixture(autouse=True)
def no_reboot_wait(monkeypatch):
    """server.reboot sleeps before reconnecting; the fake host 'comes back' at once. Returns the sleeps."""
    sleeps = []
    monkeypatch.setattr("pyinfra.operations.server.sleep", sleeps.append)
    return sleeps


def converge(responses: dict, deploy=None, **data) -> tuple[list[str], list[str]]:
    """Run ``deploy`` (the nvidia one) on one fake host; returns (names of changed operations, commands sent)."""
    host_data = {"fake_responses": responses, "fake_delay": 0, "fake_delay_jitter": 0, **data}
    inventory = Inventory(([("@fake/gpu-host", host_data)], {}))
    state = State(inventory, Config())
    connect_all(state)
    fake = inventory.get_host("@fake/gpu-host")
    try:
        add_deploy(state, deploy or component.nvidia)
        run_ops(state)
    finally:
        converge.commands = fake.connector.executed_commands
    # Read from the state directly: importing pyinfra_cli would gevent-monkey-patch the whole test process.
    changed = []
    for op_hash in state.get_op_order():
        if op_hash not in state.ops[fake]:
            continue
        meta = state.ops[fake][op_hash].operation_meta
        assert meta.did_succeed(_raise_if_not_complete=False), list(state.op_meta[op_hash].names)
        if meta.did_change():
            names = list(state.op_meta[op_hash].names)[0]
            args = state.op_meta[op_hash].args
            changed.append(f"{names} ({', '.join(str(a) for a in args)})" if args else names)
    return changed, fake.connector.executed_commands


def present_file(path: str, content: str, mode: str = "-rw-r--r--") -> dict:
    """Scripted answers of the stat and sha1sum facts for a file that holds ``content`` (and its directory)."""
    sha1 = hashlib.sha1(content.encode()).hexdigest()
    directory = path.rsplit("/", 1)[0]
    return {
        f"test -e {directory} || test -L {directory} )": [
            f"user=root group=root mode=drwxr-xr-x atime=1 mtime=1 ctime=1 size=4096 '{directory}'"],
        f"test -e {path} || test -L {path} )": [
            f"user=root group=root mode={mode} atime=1 mtime=1 ctime=1 size={len(content)} '{path}'"],
        f"sha1sum {path} ": [f"{sha1}  {path}"],
    }


def managed_files(branch: str = "570") -> dict:
    """The files the component writes, as a host that already has them would report them."""
    repo = component.NVIDIA_REPO.format(release="debian12")
    contents = {
        component.SOURCES: f"# Managed by ollastack (gpu.cuda_repo_url).\n"
                           f"deb [signed-by={component.KEYRING}] {repo} /\n",
        component.PIN: f"# Managed by ollastack: keep the driver on gpu.driver_branch.\n"
                       f"Package: {component.PINNED}\nPin: version {branch}.*\nPin-Priority: 1001\n",
        component.BLACKLIST: "# Managed by ollastack: the NVIDIA driver needs the GPU.\n"
                             "blacklist nouveau\noptions nouveau modeset=0\n",
        component.MODULES: "# Managed by ollastack: Ollama needs nvidia_uvm, which nothing else loads.\n"
                           "nvidia\nnvidia_uvm\n",
    }
    responses = {}
    for path, content in contents.items():
        responses.update(present_file(path, content))
    return responses


def dpkg(*packages: str) -> list[str]:
    return [f"ii  {name}  {version}  amd64  stand-in description" for name, version in
            (p.split("=") for p in packages)]


BASE_PACKAGES = ("gpg=2.2.40-1.1", "curl=7.88.1-10", "ca-certificates=20230311")


def test_smi_line_parsing():
    assert parse_smi_line(SMI_570) == {"name": "Tesla T4", "memory_mib": 15360, "driver_version": "570.124.06"}
    assert parse_smi_line("NVIDIA H100 80GB HBM3, 81559, 570.86.15")["memory_mib"] == 81559
    # A name containing a comma still splits right: the last two fields are numbers.
    assert parse_smi_line("NVIDIA A10, Rev. 2, 23028, 550.54.15")["name"] == "NVIDIA A10, Rev. 2"
    assert parse_smi_line("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") is None


def test_fact_reports_a_driver_that_does_not_answer():
    fact = NvidiaGpu()
    state = fact.process(["pci 0000:00:1e.0", "smi-exit 9",
                          "smi NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
                          "nouveau"])
    assert state["pci"] == ["0000:00:1e.0"] and state["gpus"] == [] and state["nouveau_loaded"]
    assert "couldn't communicate" in state["smi_error"]
    assert fact.process([]) == {"pci": [], "gpus": [], "smi_error": None, "nouveau_loaded": False}


def test_no_gpu_skips_the_component():
    changed, commands = converge({"/sys/bus/pci/devices": [], "uname -r": [KERNEL]})
    assert changed == []
    # The GPU probe is the only command: no repository, package, file or service was touched.
    assert len(commands) == 1 and "/sys/bus/pci/devices" in commands[0]


def test_gpu_off_is_not_even_probed():
    changed, commands = converge(dict(BASE_HOST), ollastack_gpu_mode="off")
    assert changed == [] and commands == []


def test_gpu_without_driver_installs_pinned_branch_and_reboots_once(no_reboot_wait):
    changed, commands = converge({**BASE_HOST, "dpkg -l": dpkg(*BASE_PACKAGES)}, ollastack_gpu_driver_branch="570")
    joined = "\n".join(commands)
    assert changed == [
        "NVIDIA | NVIDIA repository signing key (fingerprint checked)", "NVIDIA | NVIDIA CUDA repository",
        "NVIDIA | Pin the NVIDIA driver to branch 570", "NVIDIA | Refresh the apt index for the NVIDIA repository",
        f"NVIDIA | NVIDIA driver 570 and headers for {KERNEL}", "NVIDIA | Blacklist nouveau",
        "NVIDIA | Rebuild the initramfs without nouveau", "NVIDIA | Load nvidia and nvidia_uvm at boot",
        "NVIDIA | Reboot to load the NVIDIA driver", "NVIDIA | NVIDIA driver answers",
        "NVIDIA | NVIDIA persistence daemon"]
    install = [c for c in commands if INSTALL.search(c)]
    assert len(install) == 1 and install[0].endswith(f"install --no-install-recommends linux-headers-{KERNEL} cuda-drivers-570")
    assert "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/3bf863cc.pub" in joined
    assert NVIDIA_CUDA_KEY_FINGERPRINT in joined
    assert "apt-key" not in joined
    assert len([c for c in commands if c.startswith("( sleep 1 && reboot )")]) == 1
    assert no_reboot_wait and no_reboot_wait[0] == 10  # waited for the host before reconnecting
    assert commands.index("systemctl enable nvidia-persistenced.service") > joined.count("\n") // 2


def test_pinned_driver_already_working_changes_nothing(no_reboot_wait):
    responses = {
        **BASE_HOST,
        "/sys/bus/pci/devices": ["pci 0000:00:1e.0", "smi-exit 0", f"smi {SMI_570}"],
        "gpg --show-keys": [NVIDIA_CUDA_KEY_FINGERPRINT],
        "dpkg -l": dpkg(*BASE_PACKAGES, f"linux-headers-{KERNEL}=6.1.128-1", "cuda-drivers-570=570.124.06-1",
                        "nvidia-persistenced=570.124.06-1"),
        "--property SubState nvidia-persistenced": ["Id=nvidia-persistenced.service", "SubState=running"],
        "--property UnitFileState nvidia-persistenced": ["Id=nvidia-persistenced.service", "UnitFileState=enabled"],
        **managed_files("570"),
    }
    changed, commands = converge(responses)
    assert changed == []
    assert not [c for c in commands if INSTALL.search(c) or "reboot" in c or "apt-get update" in c]
    assert no_reboot_wait == []


def test_driver_on_another_branch_is_replaced_with_a_reboot():
    responses = {**BASE_HOST, "/sys/bus/pci/devices": ["pci 0000:00:1e.0", "smi-exit 0", "smi Tesla T4, 15360, 550.54.15"],
                 "gpg --show-keys": [NVIDIA_CUDA_KEY_FINGERPRINT],
                 "dpkg -l": dpkg(*BASE_PACKAGES, f"linux-headers-{KERNEL}=6.1.128-1", "cuda-drivers-550=550.54.15-1"),
                 **managed_files("550")}
    changed, _ = converge(responses)
    assert "NVIDIA | Pin the NVIDIA driver to branch 570" in changed
    assert "NVIDIA | Reboot to load the NVIDIA driver" in changed


def test_required_without_gpu_fails_before_any_change():
    with pytest.raises(DeployError, match=r'gpu.mode = "required" but no NVIDIA GPU \(PCI vendor 10de\) was found'):
        converge({"/sys/bus/pci/devices": []}, ollastack_gpu_mode="required")
    # Only fact probes ran: nothing was installed, written or restarted.
    assert converge.commands and all("/sys/bus/pci/devices" in c for c in converge.commands)


def test_secure_boot_stops_with_guidance():
    with pytest.raises(DeployError) as raised:
        converge({**BASE_HOST, "mokutil": ["SecureBoot enabled"]})
    message = str(raised.value)
    assert "Secure Boot is on" in message and "nothing was changed" in message
    assert "security type Standard" in message and "gpu.secure_boot_signing = true" in message
    assert not [c for c in converge.commands if INSTALL.search(c) or "apt-get" in c]


def test_secure_boot_from_the_efi_variable_when_mokutil_is_missing():
    with pytest.raises(DeployError, match="Secure Boot is on"):
        converge({**BASE_HOST, "/sys/firmware/efi/efivars/SecureBoot-": ["efivar 1"]})


def test_secure_boot_with_an_enrolled_signing_key_installs():
    changed, _ = converge({**BASE_HOST, "mokutil": ["SecureBoot enabled"], "dpkg -l": dpkg(*BASE_PACKAGES)},
                          ollastack_gpu_secure_boot_signing=True)
    assert f"NVIDIA | NVIDIA driver 570 and headers for {KERNEL}" in changed


def test_repository_url_override():
    changed, commands = converge({**BASE_HOST, "dpkg -l": dpkg(*BASE_PACKAGES)},
                                 ollastack_gpu_cuda_repo_url="http://10.213.0.1:8080/repo")
    joined = "\n".join(commands)
    assert "http://10.213.0.1:8080/repo/3bf863cc.pub" in joined
    assert "NVIDIA | NVIDIA CUDA repository" in changed


def site_gpu_and_ollama():
    """deploy/site.py's order of the two components."""
    from ollastack.deploy.ollama import ollama
    ollama(gpu_changes=component.nvidia())


LINUX = {"uname -s": ["Linux"], "command -v useradd": ["/usr/sbin/useradd"]}  # what server.user asks


def test_ollama_waits_for_the_driver_and_checks_vram_with_a_gpu():
    changed, commands = converge({**BASE_HOST, **LINUX, "dpkg -l": dpkg(*BASE_PACKAGES)}, deploy=site_gpu_and_ollama)
    assert "Ollama | Ollama starts after the NVIDIA driver" in changed
    assert "Ollama | Ollama runs llama3.2:1b on the GPU" in changed
    assert changed.index("NVIDIA | NVIDIA persistence daemon") < changed.index("Ollama | Restart Ollama")
    assert any(c.startswith("python3 /usr/local/lib/ollastack/nvidia-vram-check.py 127.0.0.1:11434 llama3.2:1b")
               for c in commands)


def test_ollama_without_gpu_has_no_driver_ordering_nor_vram_check():
    changed, commands = converge({"/sys/bus/pci/devices": [], **LINUX}, deploy=site_gpu_and_ollama)
    assert not [name for name in changed if "NVIDIA" in name or "GPU" in name]
    assert not [c for c in commands if "nvidia-vram-check" in c or "nvidia.conf" in c]
    assert "Ollama | Restart Ollama" in changed


def test_what_fits_warns_about_models_larger_than_vram():
    tags = {"models": [{"name": "llama3.2:1b", "size": 1_321_098_329}, {"name": "llama3.1:70b", "size": 42_520_413_916}]}
    report = what_fits(["Tesla T4, 15360"], tags, ["llama3.2:1b", "llama3.1:70b"])
    assert report["gpus"] == [{"name": "Tesla T4", "memory_mib": 15360}]
    assert [(m["name"], m["fits"]) for m in report["models"]] == [("llama3.2:1b", True), ("llama3.1:70b", False)]
    assert report["warnings"] == ["llama3.1:70b (42.5 GB) is larger than the GPU memory (16.1 GB): "
                                  "Ollama runs part of it on the CPU, slowly"]
    # Two GPUs: Ollama splits a model across them.
    assert what_fits(["NVIDIA A10, 23028", "NVIDIA A10, 23028"], tags, ["llama3.1:70b"])["models"][0]["fits"]
    assert what_fits([], tags, ["llama3.2:1b"])["warnings"] == [
        "no NVIDIA GPU answers nvidia-smi: every model runs on the CPU"]


@pytest.mark.parametrize("vram, code", [("0", 1), (str(8 * 1024**3), 0)])
def test_vram_check_against_the_ollama_standin(binary, tmp_path, vram, code):
    """templates/nvidia-vram-check.py against a real (stand-in) Ollama process whose GPU has ``vram`` bytes."""
    from tests.integration.test_standin import Ollama
    server = Ollama(binary, tmp_path / "models", tmp_path / "ollama.log", OLLAMA_STANDIN_VRAM_BYTES=vram).start()
    try:
        server.post_lines("/api/pull", {"model": "llama3.2:1b"})
        check = subprocess.run([sys.executable, str(REPO / "templates/nvidia-vram-check.py"),
                                f"127.0.0.1:{server.port}", "llama3.2:1b"], capture_output=True, text=True, timeout=30)
    finally:
        server.stop()
    assert check.returncode == code, check.stderr
    if code:
        assert check.stderr.startswith("Ollama runs llama3.2:1b on the CPU (size_vram 0 in /api/ps) although an "
                                       "NVIDIA GPU is present")
    else:
        assert check.stdout.startswith("llama3.2:1b: ") and "bytes in GPU memory" in check.stdout


INSTALLED_570 = {
    "gpg --show-keys": [NVIDIA_CUDA_KEY_FINGERPRINT],
    "dpkg -l": dpkg(*BASE_PACKAGES, f"linux-headers-{KERNEL}=6.1.128-1", "cuda-drivers-570=570.124.06-1",
                    "nvidia-persistenced=570.124.06-1"),
    "--property SubState nvidia-persistenced": ["Id=nvidia-persistenced.service", "SubState=running"],
    "--property UnitFileState nvidia-persistenced": ["Id=nvidia-persistenced.service", "UnitFileState=enabled"],
}
NOT_ANSWERING = ["smi-exit 9", "smi NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."]
REBOOT_ONLY = ["NVIDIA | Reboot to load the NVIDIA driver", "NVIDIA | NVIDIA driver answers"]


def test_driver_installed_but_not_answering_reboots_without_reinstalling(no_reboot_wait):
    """Packages and files in place, nvidia-smi fails (module not loaded yet, nouveau holding the GPU): the
    reboot that loads the driver, its check, and nothing installed again."""
    responses = {**BASE_HOST, "/sys/bus/pci/devices": ["pci 0000:00:1e.0", *NOT_ANSWERING, "nouveau"],
                 **INSTALLED_570, **managed_files("570")}
    changed, commands = converge(responses)
    assert changed == REBOOT_ONLY
    assert not [c for c in commands if INSTALL.search(c) or "apt-get update" in c]
    assert len([c for c in commands if c.startswith("( sleep 1 && reboot )")]) == 1 and no_reboot_wait == [10]


def test_driver_not_answering_and_not_installed_installs_then_reboots():
    responses = {**BASE_HOST, "/sys/bus/pci/devices": ["pci 0000:00:1e.0", *NOT_ANSWERING],
                 "dpkg -l": dpkg(*BASE_PACKAGES)}
    changed, commands = converge(responses)
    assert f"NVIDIA | NVIDIA driver 570 and headers for {KERNEL}" in changed
    assert changed[-3:-1] == REBOOT_ONLY
    assert len([c for c in commands if INSTALL.search(c)]) == 1


def test_some_gpus_answer_takes_the_reboot_path():
    """Two GPUs on the bus, nvidia-smi answers for one: the driver is not working for the host."""
    responses = {**BASE_HOST, "/sys/bus/pci/devices": ["pci 0000:00:1e.0", "pci 0000:00:1f.0", "smi-exit 0",
                                                       f"smi {SMI_570}"],
                 **INSTALLED_570, **managed_files("570")}
    changed, commands = converge(responses)
    assert changed == REBOOT_ONLY
    assert not [c for c in commands if INSTALL.search(c)]


def test_every_gpu_answering_changes_nothing(no_reboot_wait):
    responses = {**BASE_HOST, "/sys/bus/pci/devices": ["pci 0000:00:1e.0", "pci 0000:00:1f.0", "smi-exit 0",
                                                       f"smi {SMI_570}", f"smi {SMI_570}"],
                 **INSTALLED_570, **managed_files("570")}
    changed, commands = converge(responses)
    assert changed == [] and no_reboot_wait == []
    assert not [c for c in commands if INSTALL.search(c) or "reboot" in c]


def test_pci_probe_in_the_shell_finds_nvidia_display_controllers_only(tmp_path):
    """NVIDIA_PCI itself, run by Debian's sh over a made-up PCI tree: NVIDIA display and 3D controllers, not
    their audio functions, other vendors or a device whose files cannot be read."""
    from ollastack.deploy.facts import NVIDIA_PCI

    devices = {"0000:00:1e.0": ("0x10de", "0x030200"), "0000:00:1e.1": ("0x10de", "0x040300"),
               "0000:00:02.0": ("0x8086", "0x030000"), "0000:00:1f.0": ("0x10de", "0x030000"),
               "0000:00:05.0": (None, "0x030000")}
    for name, (vendor, klass) in devices.items():
        device = tmp_path / name
        device.mkdir()
        if vendor is not None:
            (device / "vendor").write_text(f"{vendor}\n")
        (device / "class").write_text(f"{klass}\n")
    probe = NVIDIA_PCI.replace("/sys/bus/pci/devices", str(tmp_path))
    result = subprocess.run(["sh", "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["pci 0000:00:1e.0", "pci 0000:00:1f.0"]
    assert result.stderr == ""
