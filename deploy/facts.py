"""Facts ollastack's deploys read from a host."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence

from pyinfra.api import FactBase


class FileText(FactBase[str | None]):
    """Content of a small text file, or None when it does not exist.

    Example: ``host.get_fact(FileText, path="/var/lib/ollastack/ollama.sha256")``
    """

    def command(self, path: str) -> str:
        return f"cat {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output):
        text = "\n".join(output).strip()
        return text or None


class InstalledRelease(FactBase[str | None]):
    """The sha256 of the archive the installed Ollama came from, or None when none is installed or its binary
    is no longer the one that archive installed (replaced or removed by hand): the stamp alone proves nothing.

    Example: ``host.get_fact(InstalledRelease, stamp="/var/lib/ollastack/ollama.sha256",
    binary_sums="/var/lib/ollastack/ollama.binary.sha256")``
    """

    def command(self, stamp: str, binary_sums: str) -> str:
        return f"sha256sum --status -c {shlex.quote(binary_sums)} 2>/dev/null && cat {shlex.quote(stamp)} 2>/dev/null; true"

    def process(self, output):
        text = "\n".join(output).strip()
        return text or None


class OllamaModels(FactBase[list[str] | None]):
    """Model names Ollama has locally (``/api/tags``), or None when Ollama does not answer.

    Example: ``host.get_fact(OllamaModels, address="127.0.0.1:11434")``
    """

    def command(self, address: str) -> str:
        return f"curl -fsS --max-time 5 {shlex.quote(f'http://{address}/api/tags')} 2>/dev/null || true"

    def process(self, output):
        text = "".join(output).strip()
        if not text:
            return None
        try:
            return [m["name"] for m in json.loads(text).get("models", [])]
        except ValueError:
            return None


class NftTable(FactBase[str | None]):
    """The live listing of one nftables table (``nft list table inet ollastack``), or None when it is absent.

    Example: ``host.get_fact(NftTable, table="inet ollastack")``
    """

    def command(self, table: str) -> str:
        return f"{nft_list_command(table)} 2>/dev/null || true"

    def process(self, output):
        text = normalized_nft("\n".join(output))
        return text or None


def nft_list_command(table: str) -> str:
    """``nft list table`` with output that does not depend on the host: protocols by number (names come
    from /etc/protocols, which a later package such as netbase adds) and no counters.

    Example: ``nft_list_command("inet ollastack") == "nft --stateless --numeric-protocol list table inet ollastack"``
    """
    family, name = table.split()
    return f"nft --stateless --numeric-protocol list table {shlex.quote(family)} {shlex.quote(name)}"


def normalized_nft(listing: str) -> str:
    """An ``nft list`` text without indentation and blank lines, so two listings compare by content.

    Example: ``normalized_nft("table inet t {\n\tchain c {\n\t}\n}\n") == "table inet t {\nchain c {\n}\n}"``
    """
    return "\n".join(line.strip() for line in listing.splitlines() if line.strip())


class SshClientAddress(FactBase[str | None]):
    """The address this SSH session comes from, as the host sees it (to avoid firewalling it out).

    Example: ``host.get_fact(SshClientAddress, _sudo=False)``
    """

    def command(self) -> str:
        return 'echo "${SSH_CONNECTION%% *}"'

    def process(self, output):
        text = "".join(output).strip()
        return text or None


# PCI class 0x03xxxx: display controllers (VGA 0x0300, 3D 0x0302); skips the GPUs' audio and NVSwitch functions.
# The shell's own read, not cat: a cloud VM has tens of PCI devices, and a process for each costs 2-3 ms.
NVIDIA_PCI = ('for d in /sys/bus/pci/devices/*; do v=; read -r v 2>/dev/null < "$d/vendor"; [ "$v" = 0x10de ] || continue; '
              'c=; read -r c 2>/dev/null < "$d/class"; case "$c" in 0x03*) echo "pci ${d##*/}";; esac; done')
NVIDIA_SMI = ('if command -v nvidia-smi >/dev/null 2>&1; then '
              'out=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits 2>&1); '
              'echo "smi-exit $?"; printf "%s\\n" "$out" | sed "s/^/smi /"; fi')


class NvidiaGpu(FactBase[dict]):
    """NVIDIA GPUs on the PCI bus (vendor 10de), what ``nvidia-smi`` reports, and whether nouveau is loaded.

    Returns ``{"pci": ["0000:00:1e.0"], "gpus": [{"name": "Tesla T4", "memory_mib": 15360,
    "driver_version": "570.124.06"}], "smi_error": None, "nouveau_loaded": False}``; ``gpus`` is empty
    and ``smi_error`` says why when the driver does not answer (None when nvidia-smi is not installed).

    Example: ``host.get_fact(NvidiaGpu)["pci"]``
    """

    def command(self) -> str:
        return f"{NVIDIA_PCI}; {NVIDIA_SMI}; [ -d /sys/module/nouveau ] && echo nouveau; true"

    def default(self):
        return self.process([])

    def process(self, output):
        state = {"pci": [], "gpus": [], "smi_error": None, "nouveau_loaded": False}
        smi_exit, smi_lines = None, []
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "pci":
                state["pci"].append(rest)
            elif kind == "smi-exit":
                smi_exit = int(rest)
            elif kind == "smi":
                smi_lines.append(rest)
            elif kind == "nouveau":
                state["nouveau_loaded"] = True
        if smi_exit is None:
            return state
        parsed = [parse_smi_line(line) for line in smi_lines]
        if smi_exit == 0 and parsed and all(parsed):
            state["gpus"] = parsed
        else:
            state["smi_error"] = " ".join(smi_lines).strip() or f"nvidia-smi exited with {smi_exit}"
        return state


def parse_smi_line(line: str) -> dict | None:
    """One line of ``nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader,nounits``.

    Example: ``parse_smi_line("Tesla T4, 15360, 570.124.06")["memory_mib"] == 15360``
    """
    parts = [p.strip() for p in line.rsplit(",", 2)]
    if len(parts) != 3 or not parts[1].isdigit() or not re.match(r"^\d+\.\d+", parts[2]):
        return None
    return {"name": parts[0], "memory_mib": int(parts[1]), "driver_version": parts[2]}


class SecureBoot(FactBase[bool]):
    """Whether UEFI Secure Boot is on: ``mokutil --sb-state`` when installed, else the EFI variable.

    Example: ``host.get_fact(SecureBoot)``
    """

    def command(self) -> str:
        return ("if command -v mokutil >/dev/null 2>&1; then mokutil --sb-state 2>&1; else "
                "for f in /sys/firmware/efi/efivars/SecureBoot-*; do [ -r \"$f\" ] && "
                "echo \"efivar $(od -An -t u1 \"$f\" | awk '{print $NF}')\"; done; fi; true")

    def process(self, output):
        text = " ".join(output)
        return "SecureBoot enabled" in text or "efivar 1" in text

    def default(self):
        return False


class DebianRelease(FactBase[str | None]):
    """The host's release as NVIDIA names its repositories (``debian12``), or None when not Debian.

    Example: ``host.get_fact(DebianRelease)``
    """

    def command(self) -> str:
        return '. /etc/os-release 2>/dev/null; echo "$ID $VERSION_ID"'

    def process(self, output):
        distro, _, version = "".join(output).strip().partition(" ")
        return f"{distro}{version.split('.')[0]}" if distro == "debian" and version else None


class KeyFingerprints(FactBase[list[str]]):
    """Primary key fingerprints in a keyring file (empty when missing or gpg is not installed yet).

    Example: ``host.get_fact(KeyFingerprints, path="/etc/apt/keyrings/ollastack-cuda.asc")``
    """

    def command(self, path: str) -> str:
        path = shlex.quote(path)
        return (f"[ -r {path} ] && command -v gpg >/dev/null 2>&1 && "
                f"gpg --show-keys --with-colons {path} 2>/dev/null | awk -F: '/^pub/ {{p=1}} /^fpr/ && p {{print $10; p=0}}'; true")

    def process(self, output):
        return [line.strip() for line in output if line.strip()]

    def default(self):
        return []


class OllamaLoaded(FactBase[list[dict] | None]):
    """Models Ollama has loaded (``/api/ps``) with ``size`` and ``size_vram``, or None when it does not answer.

    Example: ``host.get_fact(OllamaLoaded, address="127.0.0.1:11434")``
    """

    def command(self, address: str) -> str:
        return f"curl -fsS --max-time 5 {shlex.quote(f'http://{address}/api/ps')} 2>/dev/null || true"

    def process(self, output):
        try:
            models = json.loads("".join(output)).get("models", [])
        except ValueError:
            return None
        return [{"name": m["name"], "size": m.get("size", 0), "size_vram": m.get("size_vram", 0)} for m in models]


# certbot renews 30 days before expiry; a converge uses the same window so both agree on "due".
RENEW_WINDOW_S = 30 * 86400


class LetsEncryptCertificate(FactBase[dict]):
    """The certbot lineage of one domain: ``exists``, ``due`` (for renewal), ``server``, ``installed``.

    ``installed`` means nginx's files in ``tls_dir`` are this lineage's current certificate.

    Example: ``host.get_fact(LetsEncryptCertificate, domain="chat.example.com", tls_dir="/etc/ollastack/tls")["due"]``
    """

    @staticmethod
    def default() -> dict:
        return {"exists": False, "due": False, "installed": False, "server": ""}

    def command(self, domain: str, tls_dir: str) -> str:
        live = shlex.quote(f"/etc/letsencrypt/live/{domain}")
        conf = shlex.quote(f"/etc/letsencrypt/renewal/{domain}.conf")
        installed = shlex.quote(tls_dir)
        return (f"if [ -f {live}/cert.pem ]; then echo exists; "
                f"openssl x509 -checkend {RENEW_WINDOW_S} -noout -in {live}/cert.pem >/dev/null || echo due; "
                f"sed -n 's/^server *= *//p' {conf} | sed 's/^/server=/'; "
                f"cmp -s {live}/fullchain.pem {installed}/fullchain.pem && cmp -s {live}/privkey.pem {installed}/privkey.pem "
                "&& echo installed; fi; true")

    def process(self, output):
        lines = [line.strip() for line in output]
        servers = [line.removeprefix("server=") for line in lines if line.startswith("server=")]
        return {"exists": "exists" in lines, "due": "due" in lines, "installed": "installed" in lines,
                "server": servers[0] if servers else ""}


class OllamaShown(FactBase[dict]):
    """``/api/show`` of each named model (its ``modelfile``, ``parameters``, ``system``) by its index in
    ``names``; one Ollama does not have (or every one, when Ollama does not answer) is left out.

    Example: ``host.get_fact(OllamaShown, address="127.0.0.1:11434", names=["factual", "llama3.2:1b"]).get(0)``
    """

    def command(self, address: str, names: Sequence[str]) -> str:
        url = shlex.quote(f"http://{address}/api/show")
        # "<index> <reply>" per line: Ollama writes compact JSON, and every reply gets its newline.
        return "; ".join([*(f"printf '%d ' {i}; curl -sS --max-time 10 -d {shlex.quote(json.dumps({'model': n}))} "
                            f"{url} 2>/dev/null; echo" for i, n in enumerate(names)), "true"])

    def process(self, output):
        replies: dict[int, dict] = {}
        for line in output:
            index, _, text = line.strip().partition(" ")
            try:
                reply = json.loads(text)
            except ValueError:
                continue
            if index.isdigit() and isinstance(reply, dict) and "error" not in reply:
                replies[int(index)] = reply
        return replies
