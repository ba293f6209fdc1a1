"""``ollastack up / down / status``: hosts (lab, cloud or static) -> converge (pyinfra) -> verify.

Data flows one way: the stack's provider (``ollastack.providers``: the lab, a cloud or a static
list) gives hosts, the provider's inventory file turns them into pyinfra hosts, and ``deploy/site.py``
converges them. This module never touches a host itself except to check that HTTPS answers (and, through
``ollastack.upgrade``, to ask which Open WebUI a host has and back it up before an upgrade), and never
asks which provider a stack has: whatever differs is a method of the provider.

Example::

    result = orchestrate.up(load_stack("stack.toml"), Progress(), config_path="stack.toml")
    print(result["hosts"][0]["url"])
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ollastack import accounts, certs, dnscheck, fleet, planning, providers, ready, resources, upgrade
from ollastack.config import Stack
from ollastack.host import Host
from ollastack.inventory import pyinfra_hosts
from ollastack.ollama_names import client_address, tagged
from ollastack.progress import Progress
from ollastack.remote import host_command
from ollastack.state import LOCK_FD_ENV, admin_password_file, held_lock, state_dir


class ConvergeError(Exception):
    """pyinfra reported a failure on at least one host."""


class PreflightError(Exception):
    """Something outside the hosts would make the converge fail (e.g. DNS for Let's Encrypt); nothing was requested."""


def provision(stack: Stack, progress: Progress) -> list[Host]:
    """Make the stack's hosts exist and accept SSH, after the provider's warnings; return them."""
    provider = providers.get(stack.stack.provider)
    for line in provider.warnings(stack):
        progress(line)
    return provider.create(stack, progress)


def _env(config_path: str, lock_fd: int | None = None) -> dict[str, str]:
    """Environment for the pyinfra run: every path absolute, since pyinfra runs in a directory of its own.

    ``lock_fd``, the stack lock this process holds, tells the run that it converges under that lock.
    """
    env = dict(os.environ)
    env["OLLASTACK_CONFIG"] = str(Path(config_path).resolve())
    env["OLLASTACK_STATE_DIR"] = str(state_dir().resolve())
    env["OLLASTACK_SSL_DIR"] = str(certs.ssl_dir("x").parent.resolve())
    env.pop(LOCK_FD_ENV, None)
    if lock_fd is not None:
        env[LOCK_FD_ENV] = str(lock_fd)
    return env


def converge(stack: Stack, config_path: str, progress: Progress, dry: bool = False) -> list[dict[str, Any]]:
    """Run ``pyinfra -y inventories/<provider>.py deploy/site.py``, its output shown as progress.

    ``dry``: ``pyinfra --dry --json`` instead, which changes nothing on the hosts and returns pyinfra's
    plan: one entry per operation, with ``hosts_with_change`` and ``hosts_with_conditional_change``
    (inventory names). Without ``-y``, since ``-y`` also skips pyinfra's change detection.
    """
    provider = stack.stack.provider
    progress(f"{'dry run' if dry else 'converging'} with pyinfra (inventories/{provider}.py deploy/site.py)")
    cmd = [sys.executable, "-m", "ollastack.pyinfra_run", *(["--dry", "--json"] if dry else ["-y"]),
           str(resources.inventory_file(provider)), str(resources.deploy_file("site.py"))]
    lock_fd = held_lock(stack.stack.name)
    # pyinfra runs the config.py of its working directory: an empty one, so that no file beside the
    # stack file (nor the package's own config.py) is ever taken for pyinfra's configuration.
    with tempfile.TemporaryDirectory(prefix="ollastack-pyinfra-") as cwd:
        # pyinfra's own progress goes to stderr so that stdout stays free for --json.
        result = subprocess.run(cmd, cwd=cwd, env=_env(config_path, lock_fd), stdout=subprocess.PIPE if dry else sys.stderr,
                                text=True, pass_fds=() if lock_fd is None else (lock_fd,))
    if dry:
        plans = [line for line in result.stdout.splitlines() if line.startswith('{"plan"')]
        if result.returncode == 0 and plans:
            return list(json.loads(plans[-1])["plan"])
        raise ConvergeError(f"the dry run failed on at least one host (pyinfra exit {result.returncode}); "
                            "see what it reported above; nothing was changed")
    if result.returncode != 0:
        raise ConvergeError(f"the converge failed on at least one host (pyinfra exit {result.returncode}); "
                            "fix what it reported above and run `ollastack up` again: finished steps are skipped")
    return []


# Open WebUI may still be starting after a converge restarted it, and nginx may still be reloading.
UP_READY_WAIT_S = 60.0


def https_check(stack: Stack, host: Host, wait_s: float = 0.0) -> dict[str, Any]:
    """Whether the host is ready through nginx (``ready.check``): HTTPS verified for <name>, and when
    ollastack installed Open WebUI, ``/health`` 200 and the admin signs in.

    Self-signed: trusted through the stack CA only; letsencrypt: through the system's CAs.
    Example: ``https_check(stack, Host("h", "10.213.0.10"))["problem"]``
    """
    admin = (stack.openwebui.admin_email, admin_password(stack)) if stack.openwebui.install != "none" else None
    return ready.check(webui_target(stack, host), admin, wait_s)


def webui_target(stack: Stack, host: Host) -> ready.Target:
    """Where the control machine reaches a host's web UI through nginx, and the CA it verifies it with.

    Self-signed: trusted through the stack CA only; letsencrypt: through the system's CAs.
    """
    ca = certs.ssl_dir(stack.stack.name) / "ca.pem"
    use_ca = stack.tls.mode == "self-signed" and ca.exists()
    return ready.Target(host_url_name(stack, host), host.address, cafile=str(ca) if use_ca else None)


def admin_password(stack: Stack) -> str:
    """The Open WebUI admin password (the stack's, or the one generated once), from its 0600 file."""
    configured = stack.openwebui.admin_password.get_secret_value()
    return admin_password_file(stack.stack.name, configured).read_text().strip()


def served_certificate(address: str, name: str) -> dict[str, Any]:
    """What a host serves on 443 for ``name``: ``certs.describe()`` fields, or {"error": ...}.

    Not verified on purpose: status reports an expired or untrusted certificate instead of hiding it.
    Example: ``served_certificate("10.213.0.10", "chat.example.com")["days_left"]``
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, 443), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname=name) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError as exc:
        return {"error": f"no TLS handshake: {exc}"}
    if der is None:
        return {"error": "the server sent no certificate"}
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as pem:
        pem.write(ssl.DER_cert_to_PEM_cert(der))
        pem.flush()
        return certs.describe(pem.name)


def dns_preflight(stack: Stack, hosts: list[Host]) -> None:
    """Raise PreflightError unless each host's Let's Encrypt domain resolves to that host (tls.check_dns)."""
    if stack.tls.mode != "letsencrypt" or not stack.tls.check_dns:
        return
    problems = [problem for host in hosts
                if (problem := dnscheck.domain_problem(host_url_name(stack, host), host.address, stack.tls.dns_server))]
    if problems:
        raise PreflightError("; ".join(problems) + " (nothing was requested from the ACME server)")


def host_url_name(stack: Stack, host: Host) -> str:
    return stack.tls.domain or host.url_name


def issue_certificates(stack: Stack, hosts: list[Host]) -> None:
    """Issue (or renew) the hosts' stack-CA certificates on the control machine, before any converge.

    Control-machine work happens here, not in the deploys: a converge (``--dry`` included) only
    uploads what exists. ``up`` and ``lab up`` call it, so that a plain ``pyinfra`` run after either
    finds the certificates.
    """
    certs.issue_for_inventory(pyinfra_hosts(stack, hosts))


def up(stack: Stack, progress: Progress, config_path: str) -> dict[str, Any]:
    planning.gate(stack, progress)
    hosts = provision(stack, progress)
    removed = fleet.surplus(stack, hosts)
    hosts = [h for h in hosts if h not in removed]
    dns_preflight(stack, hosts)
    issue_certificates(stack, hosts)
    # A changed Open WebUI release: backup first, checks after, rollback by itself (ollastack.upgrade).
    upgrade.guarded(stack, upgrade.detect(stack, hosts), config_path, progress,
                    converge=lambda path: converge(stack, path, progress),
                    check=lambda host, wait_s: https_check(stack, host, wait_s), wait_s=UP_READY_WAIT_S)
    gone = shrink(stack, hosts[0], removed, progress) if removed else []
    report = []
    # A fleet's backends serve no HTTPS: only its gateway is checked.
    for host in hosts[:1] if stack.fleet.backends else hosts:
        check = https_check(stack, host, wait_s=UP_READY_WAIT_S)
        progress(f"{host.name}: {check['https']}; Open WebUI {check['webui']}")
        report.append({"name": host.name, "address": host.address, **check, **reconcile_accounts(stack, host, check, progress)})
    ca = certs.ssl_dir(stack.stack.name) / "ca.pem"
    return {"ok": all(h["ok"] for h in report), "stack": stack.stack.name, "provider": stack.stack.provider,
            "hosts": report, "ca": str(ca) if stack.tls.mode == "self-signed" else None,
            **({"removed": gone} if removed else {})}


def reconcile_accounts(stack: Stack, host: Host, check: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """After a ready check that passed: the stack's accounts on the host (``accounts.reconcile``).

    {} when the stack lists none; else {"accounts": [what changed]}, and on failure "ok" False and the problem.
    """
    if not stack.accounts.managed or stack.openwebui.install == "none" or not check["ok"]:
        return {}
    try:
        changed = accounts.reconcile(stack, webui_target(stack, host), admin_password(stack))
    except accounts.AccountsError as exc:
        return {"accounts": [], "ok": False, "problem": f"accounts: {exc}"}
    for line in changed:
        progress(f"{host.name}: {line}")
    progress(f"{host.name}: accounts: {len(changed)} changed")
    return {"accounts": changed}


def down(stack: Stack, progress: Progress) -> list[str]:
    return providers.get(stack.stack.provider).destroy(stack, progress)


def hosts_of(stack: Stack) -> list[Host]:
    return providers.get(stack.stack.provider).hosts(stack)


GPU_PROBE = ("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null; echo ---; "
             "curl -fsS --max-time 5 {tags_url} 2>/dev/null")
SSH_PROBE_TIMEOUT_S = 60


def what_fits(smi_lines: list[str], tags: dict, models: list[str]) -> dict[str, Any]:
    """Which configured ``models`` fit in the GPUs' memory, by their size in Ollama's ``/api/tags``.

    Example::

        what_fits(["Tesla T4, 15360"], {"models": [{"name": "llama3.2:1b", "size": 1321098329}]}, ["llama3.2:1b"])
        # {"gpus": [{"name": "Tesla T4", "memory_mib": 15360}], "vram_bytes": 16106127360,
        #  "models": [{"name": "llama3.2:1b", "size": 1321098329, "fits": True}], "warnings": []}
    """
    gpus: list[dict[str, Any]] = []
    for line in smi_lines:
        name, _, memory = line.rpartition(",")
        if name and memory.strip().isdigit():
            gpus.append({"name": name.strip(), "memory_mib": int(memory)})
    vram = sum(g["memory_mib"] for g in gpus) * 1024 * 1024
    sizes = {m["name"]: m.get("size", 0) for m in tags.get("models", [])}
    report, warnings = [], []
    for model in models:
        size = sizes.get(tagged(model))
        fits = None if size is None or not gpus else size <= vram
        report.append({"name": model, "size": size, "fits": fits})
        if size is None:
            warnings.append(f"{model} is not pulled on the host (not in /api/tags)")
        elif gpus and not fits:
            warnings.append(f"{model} ({size / 1e9:.1f} GB) is larger than the GPU memory ({vram / 1e9:.1f} GB): "
                            "Ollama runs part of it on the CPU, slowly")
    if not gpus:
        warnings.append("no NVIDIA GPU answers nvidia-smi: every model runs on the CPU")
    return {"gpus": gpus, "vram_bytes": vram, "models": report, "warnings": warnings}


def gpu_report(stack: Stack, host: Host, known_only: bool = False) -> dict[str, Any]:
    """GPU name and memory (nvidia-smi over SSH) and which configured models fit; {"error": ...} if unreachable.

    ``known_only`` as for ``remote.host_command``.
    """
    address = client_address(stack.ollama.host)
    # The probe is one shell script (it needs ";" and redirections): its only value is quoted.
    cmd = host_command(stack, host, "sh", "-c",
                       GPU_PROBE.format(tags_url=shlex.quote(f"http://{address}/api/tags")), known_only=known_only)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=SSH_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"SSH to {host.address} gave no answer within {SSH_PROBE_TIMEOUT_S}s"}
    if result.returncode == 255:
        return {"error": f"SSH to {host.address} failed: {result.stderr.strip()[-200:]}"}
    smi, _, tags_text = result.stdout.partition("---\n")
    try:
        tags = json.loads(tags_text) if tags_text.strip() else {}
    except ValueError:
        tags = {}
    return what_fits(smi.splitlines(), tags, stack.ollama.models)


def unlisted_accounts(stack: Stack, host: Host, check: dict[str, Any]) -> dict[str, Any]:
    """For ``status``: {"unlisted_accounts": [...]} when the stack lists accounts and the host is ready, else {}."""
    if not stack.accounts.managed or stack.openwebui.install == "none" or not check["ok"]:
        return {}
    try:
        return {"unlisted_accounts": accounts.unlisted(stack, webui_target(stack, host), admin_password(stack))}
    except accounts.AccountsError as exc:
        return {"unlisted_accounts": [f"not read: {exc}"]}


def status(stack: Stack) -> dict[str, Any]:
    hosts = []
    listed = hosts_of(stack)
    # A fleet's backends serve no HTTPS: they are reported as its gateway reaches them (ollastack.fleet).
    for host in listed[:1] if stack.fleet.backends else listed:
        check = https_check(stack, host)
        hosts.append({"name": host.name, "address": host.address, **check,
                      "certificate": served_certificate(host.address, host_url_name(stack, host)),
                      "gpu": gpu_report(stack, host), **unlisted_accounts(stack, host, check)})
    return {"stack": stack.stack.name, "provider": stack.stack.provider, "hosts": hosts, **fleet.status(stack, listed)}


def shrink(stack: Stack, gateway: Host, removed: list[Host], progress: Progress) -> list[str]:
    """After the converge that left them out of the gateway's upstream: drain, then remove a shrunk fleet's backends.

    Example: ``shrink(stack, gateway, [Host("demo-4", "10.213.0.13")], progress)`` -> ["host demo-4 (10.213.0.13)"]
    """
    fleet.drain(stack, gateway, removed, progress)
    return providers.get(stack.stack.provider).remove(stack, removed, progress)
