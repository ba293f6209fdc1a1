"""``ollastack doctor``: every host of a stack checked end to end, each problem with its cause and fix.

One SSH round trip per host runs ``PROBE`` (a fixed script; the stack's values reach it as quoted
positional arguments), whose output comes back in sections; each check is a small function of the
stack and those sections returning ``Check``\\ s, so the checks are tested without a host. The
certificate is looked at from the control machine, as a browser sees it.

Example::

    report = doctor.run(load_stack("stack.toml"))
    report["ok"]                                   # False when any check failed
    report["hosts"][0]["checks"][0]                # {"name": "service ollama", "status": "ok", ...}
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

from ollastack import fleet, orchestrate, providers
from ollastack.config import Stack, split_host_port
from ollastack.deploy.ollama import environment
from ollastack.gpus import estimated_gb
from ollastack.hostdata import host_data
from ollastack.host import Host
from ollastack.logs import SERVICES, installed
from ollastack.ollama_names import client_address, tagged
from ollastack.remote import host_command
from ollastack.state import admin_password_file

OK, WARN, FAIL = "ok", "warn", "fail"
OVERRIDE = "/etc/systemd/system/ollama.service.d/override.conf"
PROBE_TIMEOUT_S = 90
SECTION = "@@doctor:"
JOURNAL_LINES = 1000

# Error lines of Ollama's journal (its unit's output, or anything logged as ``ollama``): (text, status,
# advice). Matched case-insensitively.
OLLAMA_ERRORS = (
    ("CUDA error: out of memory", FAIL,
     ("the model does not fit in the GPU memory left: pick a smaller model or quantization, lower "
      "ollama.context_length or ollama.num_parallel, or stop other GPU processes (nvidia-smi)")),
    ("truncating input prompt", WARN,
     ("prompts are longer than the context window: raise ollama.context_length (OLLAMA_CONTEXT_LENGTH), "
      "then `ollastack up`")),
    ("failure during GPU discovery", FAIL,
     ("Ollama could not use the GPU and runs on the CPU: check `nvidia-smi` on the host (driver of "
      "gpu.driver_branch loaded; reboot after a driver update), then `systemctl restart ollama`")),
    ("entering low vram mode", WARN,
     "little GPU memory is free: models run partly on the CPU; stop other GPU processes or use smaller models"),
    ("address already in use", FAIL,
     "another process holds Ollama's port: see the port check, stop that process, `systemctl restart ollama`"),
    ("failed to pull model", WARN,
     "a model pull failed: check the name and the host's way out (ollama.https_proxy), then `ollastack up`"),
    ("starting runner", WARN,
     "models are loaded again and again (slow first answers): raise ollama.keep_alive or ollama.max_loaded_models"),
)
# A few runner starts are normal (one per model load); this many since the last start is churn.
RUNNER_STARTS_WARN = 20
WEBUI_ERRORS = (
    ("connection refused", FAIL,
     "Open WebUI cannot reach Ollama: check the service ollama check above and openwebui.ollama_url"),
)


def _grep(errors: tuple) -> str:
    return " ".join(f"-e {shlex.quote(text)}" for text, _, _ in errors)


# $1 Ollama's base URL, $2 the models directory, $3 Open WebUI's port, then the units to check. The
# first line of stdin is the admin's sign-in body ({"email", "password"} JSON; empty when ollastack did
# not install Open WebUI): it and the session token reach curl on stdin, never as an argument.
PROBE = f"""
s() {{ printf '\\n{SECTION}%s\\n' "$1"; }}
base=$1 models=$2 webui=$3; shift 3
IFS= read -r signin || :
s services; for u in "$@"; do printf '%s %s\\n' "$u" "$(systemctl is-active "$u" 2>/dev/null)"; done
s listeners; ss -ltnpH 2>&1
s cgroups; for p in $(ss -ltnpH | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do for i in 1 2 3 4; do
  c=$(grep -E '^0::|name=systemd:' "/proc/$p/cgroup" 2>/dev/null | tail -n 1); printf '%s %s\\n' "$p" "$c"
  case $c in *.service*) break ;; *libpod-*) ;; *) break ;; esac
  q=$(awk '/^PPid:/ {{print $2}}' "/proc/$p/status" 2>/dev/null); [ "${{q:-0}}" -gt 1 ] || break
  printf '%s ppid=%s\\n' "$p" "$q"; p=$q; done; done
s tags; curl -fsS --max-time 10 "$base/api/tags" 2>&1
s ps; curl -fsS --max-time 10 "$base/api/ps" 2>&1
s nginx; nginx -t 2>&1; echo "exit=$?"
s webui; curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 "http://127.0.0.1:$webui/health" 2>&1
s webuiollama; [ -n "$signin" ] && {{
  answer=$(printf '%s' "$signin" | curl -sS --max-time 10 -H 'Content-Type: application/json' --data-binary @- \\
    -w '\\n%{{http_code}}' "http://127.0.0.1:$webui/api/v1/auths/signin" 2>&1)
  printf 'signin=%s\\n' "$(printf '%s\\n' "$answer" | tail -n 1)"
  token=$(printf '%s\\n' "$answer" | sed -n 's/.*"token": *"\\([^"]*\\)".*/\\1/p' | head -n 1)
  [ -n "$token" ] && printf 'Authorization: Bearer %s\\n' "$token" \\
    | curl -sS --max-time 30 -H @- -w '\\nstatus=%{{http_code}}' "http://127.0.0.1:$webui/ollama/api/version" 2>&1; }}
s override; cat {OVERRIDE} 2>&1
s liveenv; pid=$(systemctl show -p MainPID --value ollama)
[ "${{pid:-0}}" -gt 0 ] && tr '\\0' '\\n' < "/proc/$pid/environ" | grep -E '^(OLLAMA_|HTTPS_PROXY=)'
s journal; since=$(systemctl show -p ActiveEnterTimestamp --value ollama)
[ -n "$since" ] && journalctl --no-pager -q -o cat --since "$since" _SYSTEMD_UNIT=ollama.service + SYSLOG_IDENTIFIER=ollama \\
  | grep -iF {_grep(OLLAMA_ERRORS)} | tail -n {JOURNAL_LINES}
s webuijournal; since=$(systemctl show -p ActiveEnterTimestamp --value open-webui)
[ -n "$since" ] && journalctl --no-pager -q -o cat --since "$since" -u open-webui \\
  | grep -iF {_grep(WEBUI_ERRORS)} | tail -n {JOURNAL_LINES}
s disk; df -PB1 -- "$models" 2>&1
s gpu; nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader,nounits 2>/dev/null
s gpuapps; nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits 2>/dev/null
s pci; grep -l 0x10de /sys/bus/pci/devices/*/vendor 2>/dev/null | wc -l
s end
"""


@dataclass(frozen=True)
class Check:
    """One finding: ``status`` ok / warn / fail, what was seen, and (unless ok) what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""


Probe = dict[str, str]


def sections(output: str) -> Probe:
    """Split the probe's output into its sections: ``{"services": "ollama active\\n...", ...}``.

    Example: ``sections("\\n@@doctor:tags\\n{}\\n@@doctor:end\\n") == {"tags": "{}", "end": ""}``
    """
    found: Probe = {}
    name = None
    for line in output.splitlines():
        if line.startswith(SECTION):
            name = line[len(SECTION):].strip()
            found[name] = ""
        elif name is not None:
            found[name] += line + "\n"
    return {key: value.strip("\n") for key, value in found.items()}


# --- parsing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listener:
    """A listening TCP socket as ``ss -ltnpH`` shows it, with the systemd unit of its first process."""

    address: str
    port: int
    processes: tuple[tuple[str, int], ...]
    unit: str = ""

    def holder(self) -> str:
        names = ", ".join(f"{name} (pid {pid})" for name, pid in self.processes) or "an unknown process"
        return f"{names}{f' in {self.unit}' if self.unit else ''}"


USERS_RE = re.compile(r'\("([^"]*)",pid=(\d+),fd=\d+\)')


def parse_listeners(ss_output: str, cgroups: str = "") -> list[Listener]:
    """``ss -ltnpH`` lines (and ``<pid> <cgroup line>`` lines) as Listeners.

    A process in a container's own scope (``libpod-<id>.scope``: Podman outside a Quadlet unit) belongs
    to the unit of its parent, conmon, given as ``<pid> ppid=<parent>`` lines.

    Example::

        parse_listeners('LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=7,fd=6))',
                        "7 0::/system.slice/nginx.service")
        # [Listener("0.0.0.0", 80, (("nginx", 7),), "nginx.service")]
    """
    units, parents = {}, {}
    for line in cgroups.splitlines():
        pid, _, path = line.partition(" ")
        match = re.search(r"/([^/]+\.(?:service|scope))(?:/|$)", path)
        if pid.isdigit() and path.startswith("ppid=") and path[5:].isdigit():
            parents[int(pid)] = int(path[5:])
        elif pid.isdigit() and match:
            units[int(pid)] = match.group(1)

    def unit_of(pid: int) -> str:
        for _ in range(len(parents)):
            if not units.get(pid, "").startswith("libpod-") or pid not in parents:
                break
            pid = parents[pid]
        return units.get(pid, "")

    listeners = []
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "LISTEN":
            continue
        address, _, port = fields[3].rpartition(":")
        if not port.isdigit():
            continue
        processes = tuple((name, int(pid)) for name, pid in USERS_RE.findall(line))
        unit = next((unit_of(pid) for _, pid in processes if pid in units), "")
        listeners.append(Listener(address.strip("[]"), int(port), processes, unit))
    return listeners


def journal_findings(lines: Iterable[str], errors: tuple = OLLAMA_ERRORS) -> dict[str, tuple[int, str]]:
    """How often each known error text occurs in journal ``lines``, with the last line showing it.

    Example: ``journal_findings(["x CUDA error: out of memory"])`` ->
    ``{"CUDA error: out of memory": (1, "x CUDA error: out of memory")}``
    """
    found: dict[str, tuple[int, str]] = {}
    for line in lines:
        lowered = line.lower()
        for text, _, _ in errors:
            if text.lower() in lowered:
                count, _ = found.get(text, (0, ""))
                found[text] = (count + 1, line.strip())
    return found


def parse_environment(override_text: str) -> dict[str, str]:
    """The ``Environment="KEY=value"`` lines of a systemd drop-in, unescaped as systemd reads them.

    Example: ``parse_environment('Environment="A=50%% \\\\"x\\\\""') == {"A": '50% "x"'}``
    """
    env = {}
    for line in override_text.splitlines():
        match = re.fullmatch(r'\s*Environment="(.*)"\s*', line)
        if not match:
            continue
        value = re.sub(r'\\(.)', r'\1', match.group(1)).replace("%%", "%")
        key, _, rest = value.partition("=")
        env[key] = rest
    return env


def _json(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- checks ----------------------------------------------------------------------------------------

def units(stack: Stack) -> dict[str, str]:
    """The unit whose state tells each installed service (``logs.SERVICES`` name -> unit) is up."""
    # certbot.service runs now and then; its timer is what must stay active.
    return {name: "certbot.timer" if name == "certbot" else SERVICES[name][0] for name in installed(stack)}


def check_services(stack: Stack, probe: Probe) -> list[Check]:
    states = dict(line.partition(" ")[::2] for line in probe.get("services", "").splitlines())
    checks = []
    for name, unit in units(stack).items():
        state = states.get(unit, "").strip() or "unknown"
        if state == "active":
            checks.append(Check(f"service {unit}", OK, "active"))
        else:
            checks.append(Check(f"service {unit}", FAIL, state,
                                f"see why: `ollastack logs {name}`; then `systemctl restart {unit}` "
                                "on the host, or `ollastack up`"))
    return checks


def expected_ports(stack: Stack) -> dict[int, tuple[str, str]]:
    """Port -> (service that should hold it, what it is), for the ports the stack's services listen on."""
    _, ollama_port = split_host_port(stack.ollama.host)
    return {80: ("nginx", "HTTP"), 443: ("nginx", "HTTPS"), ollama_port: ("ollama", "Ollama's API"),
            stack.openwebui.port: ("openwebui", "Open WebUI")}


def check_ports(stack: Stack, probe: Probe) -> list[Check]:
    listeners = parse_listeners(probe.get("listeners", ""), probe.get("cgroups", ""))
    checks = []
    for port, (service, what) in expected_ports(stack).items():
        unit = SERVICES[service][0]
        holders = [item for item in listeners if item.port == port]
        strangers = [item for item in holders if item.unit != f"{unit}.service"]
        name = f"port {port} ({what})"
        if strangers and service not in installed(stack):
            # openwebui.install = "none": nginx proxies to whatever the operator runs on that port.
            checks.append(Check(name, OK, f"held by {strangers[0].holder()} (yours: openwebui.install = \"none\")"))
        elif strangers:
            pid = strangers[0].processes[0][1] if strangers[0].processes else None
            checks.append(Check(name, FAIL, f"held by {strangers[0].holder()}, not {unit}",
                                f"stop that process ({f'kill {pid}' if pid else 'ss -ltnp'}) or move it to another "
                                f"port, then `systemctl restart {unit}`"
                                + ("; until then nginx serves it at / to everyone" if service == "openwebui" else "")))
        elif holders:
            checks.append(Check(name, OK, f"{unit} listens"))
        elif service in installed(stack):
            checks.append(Check(name, FAIL, "nothing listens",
                                f"start it: `systemctl restart {unit}` on the host (see `ollastack logs {service}`)"))
        else:
            checks.append(Check(name, OK, "free (Open WebUI is not installed)"))
    return checks


def check_ollama_api(stack: Stack, probe: Probe) -> list[Check]:
    tags = _json(probe.get("tags", ""))
    where = client_address(stack.ollama.host)
    if tags is None:
        error = (probe.get("tags", "").splitlines() or ["no answer"])[-1]
        return [Check("ollama api", FAIL, f"no answer on {where}/api/tags: {error}",
                      "check the service ollama and port checks; `ollastack logs ollama`")]
    present = {m.get("name") for m in tags.get("models", []) if isinstance(m, dict)}
    checks = [Check("ollama api", OK, f"answers on {where} ({len(present)} models)")]
    for model in stack.ollama.models:
        if tagged(model) in present:
            checks.append(Check(f"model {model}", OK, "present"))
        else:
            checks.append(Check(f"model {model}", FAIL, "configured but not in /api/tags",
                                f"`ollastack up` pulls it again (or `ollama pull {model}` on the host)"))
    return checks


def check_nginx(stack: Stack, probe: Probe) -> list[Check]:
    text = probe.get("nginx", "")
    lines = [line for line in text.splitlines() if not line.startswith("exit=")]
    if text.rstrip().endswith("exit=0"):
        return [Check("nginx config", OK, "nginx -t: syntax ok")]
    cause = next((line for line in lines if "emerg" in line or "error" in line), (lines or ["no output"])[0])
    return [Check("nginx config", FAIL, f"nginx -t: {cause}",
                  "a hand edit broke the configuration: `ollastack up` writes the stack's site again "
                  "(or fix the file named above); nginx keeps serving the old one until then")]


def check_webui(stack: Stack, probe: Probe) -> list[Check]:
    if stack.openwebui.install == "none":
        return []
    code = probe.get("webui", "").strip()
    if code == "200":
        return [Check("open webui health", OK, f"/health 200 on 127.0.0.1:{stack.openwebui.port}")]
    return [Check("open webui health", FAIL, f"/health on 127.0.0.1:{stack.openwebui.port}: {code or 'no answer'}",
                  "check the service open-webui check; it may still be starting (a minute after a restart): "
                  "`ollastack logs openwebui`")]


def parse_webui_ollama(text: str) -> tuple[str, str, dict | None]:
    """The ``webuiollama`` section as (sign-in status, ``/ollama/api/version`` status, its JSON body).

    Example: ``parse_webui_ollama('signin=200\\n{"version": "0.13.3"}\\nstatus=200')``
    -> ``("200", "200", {"version": "0.13.3"})``; a step not reached is ``""``.
    """
    lines = text.splitlines()
    signin = next((line.removeprefix("signin=") for line in lines if line.startswith("signin=")), "")
    status = next((line.removeprefix("status=") for line in lines if line.startswith("status=")), "")
    body = "\n".join(line for line in lines if not line.startswith(("signin=", "status=")))
    return signin, status, _json(body)


def check_webui_ollama(stack: Stack, probe: Probe) -> list[Check]:
    """Open WebUI's own view of Ollama: the admin signs in on the host's loopback and asks Open WebUI's
    ``GET /ollama/api/version``, which Open WebUI answers by asking every Ollama URL it keeps (its
    persistent config, which may differ from the stack's). Asked only when ``/health`` answers 200."""
    if stack.openwebui.install == "none" or probe.get("webui", "").strip() != "200":
        return []
    signin, status, body = parse_webui_ollama(probe.get("webuiollama", ""))
    name = "open webui -> ollama"
    if signin == "429":
        return [Check(name, WARN, "not asked: Open WebUI refused the admin's sign-in for now (429)",
                      "Open WebUI allows 15 sign-ins per account in 3 minutes: run doctor again in a few minutes")]
    if signin != "200":
        return [Check(name, WARN, f"not asked: the admin's sign-in answered {signin or 'nothing'}",
                      "the admin password was changed in Open WebUI: put it in openwebui.admin_password "
                      "(`ollastack admin-password` shows the one ollastack keeps)")]
    if status == "200" and body and isinstance(body.get("version"), str):
        return [Check(name, OK, f"Open WebUI reaches Ollama {body['version']}")]
    if status == "200" and body and body.get("version") is False:
        return [Check(name, FAIL, "Open WebUI has its Ollama connection turned off",
                      "turn it on in Open WebUI: Admin Settings > Connections > Ollama API")]
    detail = (body or {}).get("detail") or "no JSON answer"
    return [Check(name, FAIL, f"/ollama/api/version answered {status or 'nothing'}: {str(detail)[:200]}",
                  "Open WebUI cannot reach Ollama at the URL it keeps: check the ollama checks above, then "
                  "the URL in Admin Settings > Connections (it seeds from openwebui.ollama_url only on first start)")]


def check_drift(stack: Stack, probe: Probe) -> list[Check]:
    wanted = environment(SimpleNamespace(**host_data(stack)))
    written = parse_environment(probe.get("override", ""))
    if not written:
        return [Check("ollama settings", FAIL, f"{OVERRIDE} is missing or has no settings",
                      "`ollastack up` writes it again")]
    differ = [f"{key}={written.get(key, '(unset)')} (stack: {value})" for key, value in wanted.items()
              if written.get(key) != value]
    differ += [f"{key}={value} (not set by the stack)" for key, value in written.items() if key not in wanted]
    if differ:
        return [Check("ollama settings", FAIL, f"override.conf was edited by hand: {'; '.join(differ)}",
                      "`ollastack up` puts the stack's settings back; to keep a value, set it in the stack "
                      "file's [ollama] section instead")]
    live = dict(line.split("=", 1) for line in probe.get("liveenv", "").splitlines() if "=" in line)
    if live and any(live.get(key) != value for key, value in wanted.items()):
        stale = [key for key, value in wanted.items() if live.get(key) != value]
        return [Check("ollama settings", WARN, f"the running Ollama still has older values of {', '.join(stale)}",
                      "`systemctl daemon-reload && systemctl restart ollama` on the host (or `ollastack up`)")]
    return [Check("ollama settings", OK, "override.conf and the running Ollama match the stack")]


def check_journal(stack: Stack, probe: Probe) -> list[Check]:
    checks = []
    for section, errors, unit in (("journal", OLLAMA_ERRORS, "ollama"), ("webuijournal", WEBUI_ERRORS, "openwebui")):
        if unit == "openwebui" and stack.openwebui.install == "none":
            continue
        found = journal_findings(probe.get(section, "").splitlines(), errors)
        for text, status, advice in errors:
            count, last = found.get(text, (0, ""))
            if text == "starting runner" and count < RUNNER_STARTS_WARN:
                continue
            if count:
                checks.append(Check(f"journal {unit}: {text}", status,
                                    f"{count} line(s) since the last start, last: {last[:200]}", advice))
        if not any(c.name.startswith(f"journal {unit}:") for c in checks):
            checks.append(Check(f"journal {unit}", OK, "no known error lines since the last start"))
    return checks


def check_disk(stack: Stack, probe: Probe) -> list[Check]:
    """Free space under the models directory against the configured models: those on the host by their
    size in ``/api/tags``, those still to pull by ``gpus.estimated_gb`` of their tag."""
    lines = probe.get("disk", "").splitlines()
    fields = lines[-1].split() if len(lines) >= 2 else []
    if len(fields) < 4 or not fields[3].isdigit():
        return [Check("disk", FAIL, f"no free space figure for {stack.ollama.models_dir}: {' '.join(lines)[:200]}",
                      "the models directory is missing: `ollastack up` creates it")]
    free = int(fields[3])
    present = {m.get("name"): m.get("size", 0) for m in (_json(probe.get("tags", "")) or {}).get("models", [])
               if isinstance(m, dict)}
    sizes = [present[tagged(x)] for x in stack.ollama.models if tagged(x) in present]
    largest = max(sizes, default=0)
    # A configured model not on the host is pulled by the next `ollastack up`: its size from its tag.
    missing = {x: estimated_gb(x) for x in stack.ollama.models if tagged(x) not in present}
    needed = int(sum(size or 0 for size in missing.values()) * 10**9)
    shown = f"{free / 2**30:.1f} GiB free under {stack.ollama.models_dir}"
    if free < 2**29:
        return [Check("disk", FAIL, shown, "Ollama cannot store models or logs: free space on that disk "
                      "(`ollama rm` unused models, `journalctl --vacuum-size=200M`) or grow it")]
    if free < needed:
        sizes_shown = ", ".join(f"{x} ~{size} GB" if size else f"{x} (size unknown)" for x, size in missing.items())
        return [Check("disk", FAIL, f"{shown}, the configured models not pulled yet need about "
                      f"{needed / 2**30:.1f} GiB: {sizes_shown}",
                      "their pull would fail: free space on that disk (`ollama rm` unused models) or grow it, "
                      "then `ollastack up`")]
    if free < largest:
        return [Check("disk", WARN, f"{shown}, less than the largest configured model ({largest / 2**30:.1f} GiB)",
                      "pulling that model again or an update of it would not fit: free space or grow the disk")]
    return [Check("disk", OK, shown)]


def check_gpu(stack: Stack, probe: Probe) -> list[Check]:
    if stack.gpu.mode == "off":
        return []
    gpus = [line.split(", ") for line in probe.get("gpu", "").splitlines() if line.count(",") >= 3]
    nvidia_devices = int(probe.get("pci", "0").strip() or 0) if probe.get("pci", "0").strip().isdigit() else 0
    if not gpus:
        if nvidia_devices or stack.gpu.mode == "required":
            return [Check("gpu driver", FAIL, "nvidia-smi does not answer"
                          + (f" although {nvidia_devices} NVIDIA device(s) are present" if nvidia_devices else ""),
                          "`ollastack up` installs the driver; after a kernel or driver update reboot the host")]
        return [Check("gpu", OK, "no NVIDIA GPU: models run on the CPU")]
    checks = []
    for name, driver, total, used in (g[:4] for g in gpus):
        branch_ok = driver.split(".")[0] == stack.gpu.driver_branch
        checks.append(Check(f"gpu {name}", OK if branch_ok else WARN, f"driver {driver}, {used}/{total} MiB used",
                            "" if branch_ok else f"the driver is not of the pinned branch {stack.gpu.driver_branch}: "
                            "`ollastack up` installs it (then reboot)"))
    others = [line.split(", ") for line in probe.get("gpuapps", "").splitlines() if line.count(",") >= 2]
    others = [app for app in others if "ollama" not in app[1]]
    if others:
        taken = sum(int(app[2]) for app in others if app[2].strip().isdigit())
        checks.append(Check("gpu memory", WARN, f"{taken} MiB used by other processes: "
                            + ", ".join(f"{app[1]} (pid {app[0]})" for app in others),
                            "models may not fit and run partly on the CPU: stop those processes"))
    for model in (_json(probe.get("ps", "")) or {}).get("models", []):
        if not isinstance(model, dict):
            continue
        vram, size = model.get("size_vram", 0), model.get("size", 0)
        if not vram:
            checks.append(Check(f"loaded {model.get('name')}", FAIL, "size_vram 0: running on the CPU (slow)",
                                "Ollama lost the GPU: `ollastack logs ollama` (GPU discovery lines), "
                                "`systemctl restart ollama`; reboot after a driver update"))
        elif vram < size:
            checks.append(Check(f"loaded {model.get('name')}", WARN,
                                f"{vram / size:.0%} in GPU memory, the rest on the CPU",
                                "use a smaller model, quantization or ollama.context_length"))
        else:
            checks.append(Check(f"loaded {model.get('name')}", OK, "fully in GPU memory"))
    return checks


def check_certificate(stack: Stack, host: Host) -> list[Check]:
    cert = orchestrate.served_certificate(host.address, orchestrate.host_url_name(stack, host))
    if "error" in cert:
        return [Check("certificate", FAIL, cert["error"], "check the nginx checks; `ollastack up`")]
    days = cert["days_left"]
    detail = f"{days} days left (until {cert['not_after']}), issued by {cert['issuer']}"
    letsencrypt = stack.tls.mode == "letsencrypt"
    fix = ("certbot's timer should have renewed it: `ollastack logs all` around certbot, `certbot renew` on the host"
           if letsencrypt else "`ollastack up` issues a new one")
    if days <= 0:
        return [Check("certificate", FAIL, f"expired: {detail}", fix)]
    if days <= (20 if letsencrypt else stack.tls.renew_before_days):
        return [Check("certificate", WARN, f"close to expiry: {detail}", fix)]
    return [Check("certificate", OK, detail)]


HOST_CHECKS: tuple[Callable[[Stack, Probe], list[Check]], ...] = (
    check_services, check_ports, check_ollama_api, check_nginx, check_webui, check_webui_ollama, check_drift,
    check_journal, check_disk, check_gpu)


def signin_body(stack: Stack) -> str:
    """The probe's stdin: Open WebUI's sign-in body for the stack's admin, or "" when ollastack did not
    install Open WebUI (then there is no admin of ours to sign in as)."""
    if stack.openwebui.install == "none":
        return ""
    password = admin_password_file(stack.stack.name, stack.openwebui.admin_password.get_secret_value())
    return json.dumps({"email": stack.openwebui.admin_email, "password": password.read_text().strip()}) + "\n"


def probe_host(stack: Stack, host: Host) -> Probe | Check:
    """The probe's sections from ``host``, or a failed ``ssh`` Check when it cannot be run."""
    base = f"http://{client_address(stack.ollama.host)}"
    argv = host_command(stack, host, "sh", "-c", PROBE, "doctor", base, stack.ollama.models_dir,
                        str(stack.openwebui.port), *units(stack).values())
    try:
        result = subprocess.run(argv, input=signin_body(stack), capture_output=True, text=True,
                                timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return Check("ssh", FAIL, f"no answer within {PROBE_TIMEOUT_S}s", "is the host up and not overloaded?")
    probe = sections(result.stdout)
    if "end" not in probe:
        cause = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        return Check("ssh", FAIL, f"{host.user}@{host.address}: {cause[:200]}",
                     "check access.admin_cidrs, access.ssh_private_key and that the host runs"
                     + (" (and that sudo needs no password)" if host.user != "root" else ""))
    return probe


def check_host(stack: Stack, host: Host) -> dict[str, Any]:
    probe = probe_host(stack, host)
    if isinstance(probe, Check):
        checks = [probe]
    else:
        checks = [Check("ssh", OK, f"{host.user}@{host.address}")]
        for check in HOST_CHECKS:
            checks += check(stack, probe)
    checks += check_certificate(stack, host)
    return {"name": host.name, "address": host.address, "checks": [asdict(c) for c in checks]}


def check_backends(stack: Stack, hosts: list[Host]) -> list[Check]:
    """A fleet's backends as its gateway reaches them: each answering, with every model of ``ollama.models``."""
    try:
        gateway, backends = fleet.split(stack, hosts)
    except fleet.FleetError as exc:
        return [Check("fleet", FAIL, str(exc), "`ollastack up` starts the missing hosts")]
    if gateway is None:
        return []
    found = fleet.probe_backends(stack, gateway, backends)
    if isinstance(found, str):
        return [Check("fleet", FAIL, found, "is the gateway up? see its ssh check")]
    checks = []
    for index, backend in enumerate(found):
        name = f"backend {backend['name']}"
        if not backend["reachable"]:
            checks.append(Check(name, FAIL, f"no answer from Ollama on {backend['address']} (asked from the gateway); "
                                "nginx skips it and the other backends serve the chats",
                                f"start it: `systemctl restart ollama` on {backend['name']} (see `ollastack logs "
                                "ollama`), or `ollastack up`"))
            continue
        placed = fleet.placed_models(stack, index)
        missing = sorted({tagged(m) for m in placed} - set(backend["models"]))
        if missing:
            checks.append(Check(name, FAIL, f"answers on {backend['address']} without {', '.join(missing)}"
                                + (" (placed on it by fleet.placement)" if stack.fleet.placement else ""),
                                "`ollastack up` pulls the missing models"))
        elif stack.fleet.placement:
            running = ", ".join(backend.get("running", [])) or "none"
            checks.append(Check(name, OK, f"answers on {backend['address']} with its placed {', '.join(placed)} "
                                f"(running: {running})"))
        else:
            checks.append(Check(name, OK, f"answers on {backend['address']} ({len(backend['models'])} models)"))
    return checks


# The host checks a fleet host's role keeps: the gateway runs no Ollama of its own (its Ollama API is
# nginx's upstream of the backends), a backend runs Ollama alone.
GATEWAY_CHECKS: tuple[Callable[[Stack, Probe], list[Check]], ...] = (
    check_services, check_ports, check_ollama_api, check_nginx, check_webui, check_webui_ollama)
BACKEND_CHECKS: tuple[Callable[[Stack, Probe], list[Check]], ...] = (
    check_services, check_ports, check_ollama_api, check_drift, check_journal, check_disk, check_gpu)


def fleet_view(stack: Stack, backend_address: str | None, models: list[str] | None = None) -> Stack:
    """The stack as a fleet host runs it: a backend's Ollama on its own address with its placed ``models``
    (``fleet.placed_models``; None: ``ollama.models``), and no Open WebUI there. On the gateway (no
    ``backend_address``), ``models`` are those its ``ollama.host`` upstream serves: the first group's."""
    ollama = {k: v for k, v in (("host", backend_address), ("models", models)) if v is not None}
    if backend_address is None:
        return stack.model_copy(update={"ollama": stack.ollama.model_copy(update=ollama)}) if ollama else stack
    return stack.model_copy(update={"ollama": stack.ollama.model_copy(update=ollama),
                                    "openwebui": stack.openwebui.model_copy(update={"install": "none"})})


def role_skips(view: Stack, gateway: bool) -> set[str]:
    """Names of the service and port checks of services the role does not run."""
    absent = {"ollama"} if gateway else {"nginx", "openwebui", "certbot"}
    names = {f"service {unit}" for name, unit in units(view).items() if name in absent}
    return names | {f"port {port} ({what})" for port, (service, what) in expected_ports(view).items() if service in absent}


def check_fleet_host(stack: Stack, host: Host, backend_address: str | None,
                     models: list[str] | None = None) -> dict[str, Any]:
    """A fleet host's checks for its role: the gateway's (``backend_address`` None) or a backend's."""
    view = fleet_view(stack, backend_address, models)
    gateway = backend_address is None
    probe = probe_host(view, host)
    if isinstance(probe, Check):
        checks = [probe]
    else:
        checks = [Check("ssh", OK, f"{host.user}@{host.address}")]
        skips = role_skips(view, gateway)
        for check in GATEWAY_CHECKS if gateway else BACKEND_CHECKS:
            checks += [c for c in check(view, probe) if c.name not in skips]
    if gateway:
        checks += check_certificate(stack, host)
    return {"name": host.name, "address": host.address, "checks": [asdict(c) for c in checks]}


def run(stack: Stack) -> dict[str, Any]:
    """Every check on every host of the stack (hosts in parallel); ``ok`` is False when any check failed."""
    hosts = providers.get(stack.stack.provider).hosts(stack)
    if stack.fleet.backends:
        # A shrink that stopped before removing them: they are out of the upstream, no backend of the stack's.
        leaving = fleet.surplus(stack, hosts)
        hosts = [h for h in hosts if h not in leaving]
        addresses = [None, *(fleet.backend_address(stack, h) for h in hosts[1:])]
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            first_group = fleet.placed_models(stack, 0) if stack.fleet.placement else None
            placed = [first_group, *(fleet.placed_models(stack, i) for i in range(len(hosts) - 1))]
            reports = list(pool.map(lambda pair: check_fleet_host(stack, *pair), zip(hosts, addresses, placed)))
        backends = [asdict(c) for c in check_backends(stack, hosts)]
        if leaving:
            names = ", ".join(h.name for h in reversed(leaving))
            backends.append(asdict(Check("fleet", WARN, f"{names}: beyond fleet.backends = {stack.fleet.backends}, still "
                                         "running: a shrink that did not finish",
                                         "`ollastack up` drains and removes them")))
        if reports:
            reports[0]["checks"] += backends
        else:
            reports = [{"name": "fleet", "address": "", "checks": backends}]
        statuses = [c["status"] for r in reports for c in r["checks"]]
        return {"stack": stack.stack.name, "provider": stack.stack.provider, "hosts": reports,
                "ok": FAIL not in statuses, "warnings": statuses.count(WARN), "failures": statuses.count(FAIL)}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
        reports = list(pool.map(lambda h: check_host(stack, h), hosts))
    statuses = [c["status"] for r in reports for c in r["checks"]]
    return {"stack": stack.stack.name, "provider": stack.stack.provider, "hosts": reports,
            "ok": bool(reports) and FAIL not in statuses, "warnings": statuses.count(WARN),
            "failures": statuses.count(FAIL)}


def render(report: dict[str, Any]) -> str:
    """The text form: one line per check, each failure or warning followed by its fix."""
    lines = [f"stack {report['stack']} ({report['provider']})"]
    if not report["hosts"]:
        lines.append("  no running hosts: `ollastack up` creates them")
    for host in report["hosts"]:
        lines.append(f"  {host['name']} {host['address']}")
        for check in host["checks"]:
            lines.append(f"    {check['status'].upper():4}  {check['name']}: {check['detail']}")
            if check["fix"]:
                lines.append(f"          fix: {check['fix']}")
    lines.append(f"{report['failures']} failure(s), {report['warnings']} warning(s)")
    return "\n".join(lines)
