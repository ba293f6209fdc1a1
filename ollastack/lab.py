"""Local Debian hosts for trying a stack (and for the tests): debootstrap + systemd-nspawn.

Each lab host is a real Debian system with systemd as PID 1 and sshd, booted by systemd-nspawn on a
private bridge. The root filesystem is built once per release with debootstrap and cached as a
tarball; starting a host unpacks it (seconds). Hosts reach the package mirror (and, for pip, the
package index) through a masquerade rule limited to those addresses and ports 80/443; nothing else
leaves the bridge.

Example::

    hosts = lab.up(stack, progress=print)   # lab.hosts of them: [{"name": "demo-1", "address": "10.213.0.10", ...}]
    lab.down(stack.stack.name)
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlparse

from ollastack.progress import Progress
from ollastack.ssh import SshTimeout, wait_for_ssh
from ollastack.state import write_atomic

if TYPE_CHECKING:
    # Only a type here: the stack schema asks the providers (this module among them) to validate a stack.
    from ollastack.config import Stack

LAB_ENV = "OLLASTACK_LAB_DIR"
BRIDGE = "ollastack0"
NFT_TABLE = "ollastack_lab"
FIRST_HOST = 10
# What a lab host needs before pyinfra can manage it; everything else is the deploy's job.
IMAGE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "ca-certificates",
                  "iproute2", "sudo", "curl", "gnupg")
# apt's periodic jobs race the converge for the dpkg lock; nothing in a lab host needs them. Lab
# hosts share the control machine's kernel, so loading kernel modules can only fail there.
MASKED_UNITS = ("systemd-modules-load.service", "apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
                "apt-daily-upgrade.service", "e2scrub_all.timer", "fstrim.timer", "man-db.timer",
                "systemd-timesyncd.service")
SYSCALLS = "add_key keyctl request_key bpf"
REQUIRED_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container",
                  "nft": "nftables", "ip": "iproute2", "ssh": "openssh-client", "ssh-keygen": "openssh-client"}

class LabError(Exception):
    """A lab problem explained in one line, with what to do next."""


def lab_dir() -> Path:
    return Path(os.environ.get(LAB_ENV) or "/var/lib/ollastack/lab")


def check_prerequisites() -> None:
    """Fail early, naming what is missing: root, and the tools from Debian's packages."""
    if os.geteuid() != 0:
        raise LabError("lab hosts need root (debootstrap, systemd-nspawn, bridges and nftables): run as root")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(f"missing tools: apt-get install {' '.join(missing)}")


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    kwargs.setdefault("check", True)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    try:
        return subprocess.run(cmd, **kwargs)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        raise LabError(f"{' '.join(cmd[:3])} failed ({exc.returncode}): {' | '.join(detail)}") from None


# --- where packages come from -------------------------------------------------------------------

def apt_sources(base: Path = Path("/etc/apt")) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every enabled deb source on the control machine."""
    found = []
    for path in sorted(base.glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    for path in [base / "sources.list", *sorted(base.glob("sources.list.d/*.list"))]:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            parts = line.split("#", 1)[0].split()
            if parts[:1] == ["deb"]:
                parts = [p for p in parts[1:] if not p.startswith("[")]
                if len(parts) >= 2:
                    found.append((parts[0], [parts[1]], parts[2:]))
    return found


def debian_mirror() -> str:
    """The control machine's Debian mirror (the URI that serves the main archive)."""
    for uri, suites, _ in apt_sources():
        if not any(s.endswith("-security") for s in suites):
            return uri
    raise LabError("no Debian mirror found in /etc/apt/sources.list(.d): configure apt on this machine first")


def package_index_hosts() -> list[str]:
    """Host names pip uses on the control machine, so lab hosts can install Python packages too."""
    hosts = []
    try:
        from pip._internal.models.index import PyPI
        hosts += [PyPI.netloc, PyPI.file_storage_domain]
    except ImportError:
        pass
    out = subprocess.run(["python3", "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "index-url" in line:
            for url in line.split("=", 1)[1].strip("'\" ").split():
                hostname = urlparse(url).hostname if url.startswith("http") else None
                if hostname:
                    hosts.append(hostname)
    return hosts


def egress_hosts() -> dict[str, list[str]]:
    """Name -> IPv4 addresses of everything lab hosts may reach (mirror, package index)."""
    names = {urlparse(uri).hostname for uri, _, _ in apt_sources()} | set(package_index_hosts())
    resolved = {}
    for name in sorted(n for n in names if n):
        try:
            infos = socket.getaddrinfo(name, 443, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        resolved[name] = sorted({str(info[4][0]) for info in infos})
    return resolved


# --- the image -----------------------------------------------------------------------------------

def image_path(release: str) -> Path:
    return lab_dir() / "images" / f"{release}.tar"


def ensure_image(release: str, progress: Progress) -> Path:
    """Build the cached root filesystem tarball for ``release`` unless it exists."""
    path = image_path(release)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".build-{release}-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        mirror = debian_mirror()
        progress(f"building the {release} image with debootstrap from the configured mirror (1-3 minutes, once)")
        started = time.monotonic()
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(IMAGE_PACKAGES)}",
              release, str(rootfs), mirror], timeout=1200)
        _configure_image(rootfs, release)
        progress(f"image built in {time.monotonic() - started:.0f}s; packing it")
        # Inside the build's own directory: two builders of one release never share a partial file.
        partial = Path(tmp) / f"{release}.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=600)
        partial.replace(path)
    return path


def control_codename() -> str:
    """The control machine's Debian codename (``bookworm``), from /etc/os-release."""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip('"')
    raise LabError("cannot tell this machine's Debian release from /etc/os-release")


def guest_sources(release: str) -> str:
    """deb822 apt sources for a lab host of ``release``: the control machine's mirrors, suites renamed."""
    ours = control_codename()
    stanzas = []
    for uri, suites, components in apt_sources():
        renamed = [suite.replace(ours, release, 1) for suite in suites]
        stanzas.append(f"Types: deb\nURIs: {uri}\nSuites: {' '.join(renamed)}\nComponents: {' '.join(components)}\n"
                       "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    return "\n".join(stanzas)


def _configure_image(rootfs: Path, release: str) -> None:
    etc = rootfs / "etc"
    (etc / "apt/sources.list").unlink(missing_ok=True)
    (etc / "apt/sources.list.d/debian.sources").write_text(guest_sources(release))
    for src in Path("/etc/apt/apt.conf.d").iterdir():
        target = etc / "apt/apt.conf.d" / src.name
        if src.is_file() and not target.exists():
            shutil.copy(src, target)
    extra_cas = Path("/usr/local/share/ca-certificates")
    if extra_cas.is_dir():
        shutil.copytree(extra_cas, rootfs / "usr/local/share/ca-certificates", dirs_exist_ok=True)
        _run(["chroot", str(rootfs), "update-ca-certificates"])
    for unit in MASKED_UNITS:
        link = etc / "systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    wants = etc / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-networkd.service", "ssh.service"):
        link = wants / unit
        if not os.path.lexists(link):
            link.symlink_to(f"/lib/systemd/system/{unit}")
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("")
    # Lab hosts resolve only the pinned egress hosts (/etc/hosts); no nameserver makes other lookups
    # fail at once instead of timing out.
    resolv = etc / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("# lab host: names come from /etc/hosts\n")


def _write_init(rootfs: Path) -> None:
    """PID 1 of a lab host: make the cgroup v1 controllers writable, then exec systemd.

    nspawn mounts them read-only; Podman needs them writable before systemd starts. memory, pids and
    devices are read-only bind mounts, which only ``remount,bind,rw`` changes. Written per host, not into
    the cached image, so hosts from an older image get the current wrapper too.
    """
    init = rootfs / "usr/local/sbin/ollastack-init"
    init.write_text("#!/bin/sh\nfor d in /sys/fs/cgroup/*/; do mount -o remount,rw \"$d\" 2>/dev/null || "
                    "mount -o remount,bind,rw \"$d\" 2>/dev/null; done\n"
                    "mount -o remount,rw /sys/fs/cgroup 2>/dev/null\nexec /lib/systemd/systemd \"$@\"\n")
    init.chmod(0o755)
    # A guest's /sys/kernel is a bind mount of its own (on a real host it is no mount point): with debugfs
    # and tracefs below it, crun cannot give a user-namespaced container its /sys ("cannot unmount /sys/kernel").
    for unit in ("sys-kernel-debug.mount", "sys-kernel-tracing.mount"):
        link = rootfs / "etc/systemd/system" / unit
        if not link.is_symlink():
            link.symlink_to("/dev/null")


# --- the bridge and its egress rule ----------------------------------------------------------------

def _network(subnet: str) -> tuple[ipaddress.IPv4Network, str]:
    net = ipaddress.IPv4Network(subnet)
    return net, str(net.network_address + 1)


def gateway(subnet: str) -> str:
    """The control machine's address on the lab bridge: ``gateway("10.213.0.0/24")`` -> ``"10.213.0.1"``."""
    return _network(subnet)[1]


def ensure_network(subnet: str) -> None:
    """Bridge with the control machine at .1, forwarding and masquerade for the egress hosts only."""
    net, gateway = _network(subnet)
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{gateway}/{net.prefixlen}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    saved = lab_dir() / "ip_forward.orig"
    if not saved.exists():
        write_atomic(saved, Path("/proc/sys/net/ipv4/ip_forward").read_text(), mode=0o644)
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
    addresses = sorted({a for addrs in egress_hosts().values() for a in addrs})
    elements = ", ".join(addresses) or "127.0.0.1"
    rules = f"""
table ip {NFT_TABLE} {{}}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
    set egress {{ type ipv4_addr; elements = {{ {elements} }} }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        oifname "{BRIDGE}" ct state established,related accept
        iifname "{BRIDGE}" oifname != "{BRIDGE}" ip daddr @egress tcp dport {{ 80, 443 }} accept
        iifname "{BRIDGE}" oifname != "{BRIDGE}" drop
        oifname "{BRIDGE}" iifname != "{BRIDGE}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100;
        ip saddr {net} oifname != "{BRIDGE}" masquerade
    }}
}}
"""
    _run(["nft", "-f", "-"], input=rules)


def remove_network() -> list[str]:
    removed = []
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        _run(["ip", "link", "del", BRIDGE])
        removed.append(f"bridge {BRIDGE}")
    if subprocess.run(["nft", "list", "table", "ip", NFT_TABLE], capture_output=True).returncode == 0:
        _run(["nft", "delete", "table", "ip", NFT_TABLE])
        removed.append(f"nft table ip {NFT_TABLE}")
    saved = lab_dir() / "ip_forward.orig"
    if saved.exists():
        Path("/proc/sys/net/ipv4/ip_forward").write_text(saved.read_text())
        saved.unlink()
    return removed


# --- hosts -----------------------------------------------------------------------------------------

def _hosts_dir() -> Path:
    return lab_dir() / "hosts"


def list_hosts(stack_name: str | None = None) -> list[dict[str, Any]]:
    """Lab hosts on this machine (of one stack, if given), with ``running`` checked live."""
    hosts = []
    for meta in sorted(_hosts_dir().glob("*/host.json")):
        host = json.loads(meta.read_text())
        if stack_name and host["stack"] != stack_name:
            continue
        host["running"] = _alive(host.get("pid"))
        hosts.append(host)
    return hosts


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"systemd-nspawn")


def known_hosts_path() -> Path:
    return lab_dir() / "known_hosts"


def _write_known_hosts() -> None:
    lines = [f"{h['address']} {h['host_key']}" for h in list_hosts()]
    write_atomic(known_hosts_path(), "".join(f"{line}\n" for line in lines), mode=0o644)


def _free_address(subnet: str) -> str:
    net, _ = _network(subnet)
    used = {h["address"] for h in list_hosts()}
    for offset in range(FIRST_HOST, net.num_addresses - 1):
        candidate = str(net.network_address + offset)
        if candidate not in used:
            return candidate
    raise LabError(f"no free address left in lab subnet {subnet}: remove hosts with `ollastack lab down`")


def authorize(rootfs: Path, public_key: str) -> None:
    """Make ``public_key`` the one key root of the guest ``rootfs`` accepts, also on a running host.

    A reused host gets the stack's current key: a host left running by an earlier session (or after
    access.ssh_public_key changed) would otherwise refuse the converge. The guest's root owns these
    paths, so a link there is refused rather than followed into this machine's own files.
    """
    ssh_dir = rootfs / "root" / ".ssh"
    if any(p.is_symlink() for p in (rootfs / "root", ssh_dir)):
        raise LabError(f"{ssh_dir} is a symbolic link: not writing the stack's key through it")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        fd = os.open(ssh_dir / "authorized_keys", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise LabError(f"cannot write {ssh_dir / 'authorized_keys'}: {exc}") from None
    with os.fdopen(fd, "w") as out:
        os.fchmod(fd, 0o600)
        out.write(public_key.strip() + "\n")


def _prepare_rootfs(rootfs: Path, name: str, address: str, subnet: str, public_key: str) -> str:
    net, gateway = _network(subnet)
    _write_init(rootfs)
    etc = rootfs / "etc"
    (etc / "hostname").write_text(f"{name}\n")
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    pins = "".join(f"{addrs[0]} {host}\n" for host, addrs in egress_hosts().items())
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost ip6-localhost\n{pins}")
    (etc / "systemd/network/10-ollastack-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{net.prefixlen}\nGateway={gateway}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    authorize(rootfs, public_key)
    _run(["ssh-keygen", "-A", "-f", str(rootfs)])
    _exempt_controller_from_penalties(rootfs, gateway)
    return (etc / "ssh/ssh_host_ed25519_key.pub").read_text().split(" #")[0].rsplit(" ", 1)[0].strip()


def _exempt_controller_from_penalties(rootfs: Path, gateway: str) -> None:
    """Let the control machine (the bridge's address) through sshd's per-source penalties.

    OpenSSH 9.8+ (trixie) refuses a source for 15 s to 10 min after connections that end before
    authenticating or a session that crashes; every test, probe and converge comes from the gateway, so
    one burst of port checks, or one wait that gave up during a slow boot, would lock the lab out. Written
    per host, only where sshd knows the option (bookworm's 9.2 would refuse to start on it).
    """
    if b"persourcepenaltyexemptlist" not in (rootfs / "usr/sbin/sshd").read_bytes():
        return
    (rootfs / "etc/ssh/sshd_config.d/ollastack-lab.conf").write_text(f"PerSourcePenaltyExemptList {gateway}\n")


def _cgroup_roots() -> list[Path]:
    """The lab's own cgroup in every hierarchy nspawn uses."""
    return [Path(d) / "ollastack" for d in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified") if Path(d).is_dir()]


def _cgroup_dirs(name: str) -> list[Path]:
    # Without a host systemd, nspawn takes the cgroup it was started in as the container's own; guests
    # that share one collide, so each gets its own child group in every hierarchy.
    return [root / name for root in _cgroup_roots()]


def cpu_seconds(names: list[str]) -> float:
    """The CPU time the lab hosts ``names`` have used since they booted (their cgroup's ``cpu.stat``), for
    benchmarks: on one machine the hosts' own work shares the control machine's cores.

    Example: ``cpu_seconds(["demo-1", "demo-2"])`` -> ``12.5``
    """
    total = 0
    for name in names:
        for group in _cgroup_dirs(name):
            stat = group / "cpu.stat"
            if stat.is_file():
                total += int(dict(line.split() for line in stat.read_text().splitlines())["usage_usec"])
    return total / 1e6


def _enter_cgroups(name: str) -> Callable[[], None]:
    dirs = _cgroup_dirs(name)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)

    def enter() -> None:
        for d in dirs:
            (d / "cgroup.procs").write_text(str(os.getpid()))
    return enter


def _boot(host_dir: Path, name: str) -> int:
    log = open(host_dir / "console.log", "ab")
    # No --boot: the wrapper must run as PID 1 and exec systemd itself.
    cmd = ["systemd-nspawn", "--quiet", "--kill-signal=SIGRTMIN+3", f"--directory={host_dir / 'rootfs'}", f"--machine={name}",
           f"--network-bridge={BRIDGE}", "--register=no", "--keep-unit", "--capability=all",
           f"--system-call-filter={SYSCALLS}", "--console=passive", "--resolv-conf=off",
           "--timezone=off", "--link-journal=no", "/usr/local/sbin/ollastack-init"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            preexec_fn=_enter_cgroups(name))
    log.close()
    return proc.pid


@contextlib.contextmanager
def _locked():
    """One lab change at a time on this machine (address allocation, bridge, image build)."""
    lab_dir().mkdir(parents=True, exist_ok=True)
    with open(lab_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def up(stack: Stack, progress: Progress) -> list[dict[str, Any]]:
    """Make ``lab.hosts`` hosts of the stack run, starting stopped ones, adding missing ones."""
    check_prerequisites()
    with _locked():
        _start(stack, progress)
    # A stopped host beyond the stack's number (a shrunk fleet's) is not started again: it answers no SSH.
    hosts = [h for h in list_hosts(stack.stack.name) if h["running"]]
    _, private_key_file = stack.key_paths()
    for host in hosts:
        try:
            took = wait_for_ssh(host["address"], "root", private_key_file, known_hosts_path(), timeout=90)
        except SshTimeout as exc:
            raise LabError(f"{exc}; see {_hosts_dir() / host['name'] / 'console.log'}") from None
        progress(f"{host['name']}: SSH ready ({took:.1f}s)")
    return [{k: h[k] for k in ("name", "address", "user")} for h in hosts]


def host_names(stack: Stack) -> list[str]:
    """The names of the stack's lab hosts, in order; a fleet's backends after its gateway (``ollastack.fleet``
    takes the first host as the gateway).

    Example: ``host_names(stack) == ["demo-1", "demo-2", "demo-3"]`` with ``fleet.backends = 2``
    """
    return [f"{stack.stack.name}-{index}" for index in range(1, stack.lab.hosts + stack.fleet.backends + 1)]


def _start(stack: Stack, progress: Progress) -> None:
    stack_name, subnet, release = stack.stack.name, stack.lab.subnet, stack.lab.release
    public_key_file, _ = stack.key_paths()
    image = ensure_image(release, progress)
    ensure_network(subnet)
    public_key = public_key_file.read_text()
    for name in host_names(stack):
        host_dir = _hosts_dir() / name
        meta_path = host_dir / "host.json"
        if meta_path.exists():
            host = json.loads(meta_path.read_text())
            authorize(host_dir / "rootfs", public_key)
            if _alive(host.get("pid")):
                continue
        else:
            address = _free_address(subnet)
            progress(f"{name}: unpacking the {release} image")
            if host_dir.exists():
                shutil.rmtree(host_dir)
            (host_dir / "rootfs").mkdir(parents=True)
            _run(["tar", "--numeric-owner", "-C", str(host_dir / "rootfs"), "-xpf", str(image)], timeout=600)
            host_key = _prepare_rootfs(host_dir / "rootfs", name, address, subnet, public_key)
            host = {"name": name, "stack": stack_name, "address": address, "user": "root",
                    "release": release, "host_key": host_key}
        host["pid"] = _boot(host_dir, name)
        write_atomic(meta_path, json.dumps(host, indent=2) + "\n", mode=0o644)
        _write_known_hosts()
        progress(f"{name}: booting at {host['address']}")


def _stop(host: dict[str, Any], timeout: float = 20) -> None:
    pid = host.get("pid")
    if pid is not None and _alive(pid):
        # nspawn turns SIGTERM into an orderly shutdown of the guest's systemd.
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for d in _cgroup_dirs(host["name"]):
        for proc_pid in _cgroup_pids(d):
            try:
                os.kill(proc_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for d in _cgroup_dirs(host["name"]):
        _remove_cgroup(d)
    # Return only once nspawn itself is reaped, not merely signalled: under load its exit (or its parent's
    # reaping of it) can lag, and a caller may reuse the host's name or address at once.
    deadline = time.monotonic() + timeout
    while pid and (_alive(pid) or _zombie(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _cgroup_pids(group: Path) -> list[int]:
    pids = []
    for procs in group.rglob("cgroup.procs") if group.exists() else []:
        pids += [int(p) for p in procs.read_text().split()]
    return pids


def _remove_cgroup(group: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while group.exists() and time.monotonic() < deadline:
        for child in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                child.rmdir()
            except OSError:
                pass
        try:
            group.rmdir()
        except OSError:
            time.sleep(0.2)


def _unmount_under(path: Path) -> None:
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def down(stack_name: str | None, progress: Progress) -> list[str]:
    """Stop and delete the stack's hosts (all lab hosts if ``stack_name`` is None); the bridge goes with the last."""
    check_prerequisites()
    with _locked():
        return _remove(stack_name, progress)


def _remove_tree(path: Path) -> str | None:
    """Remove ``path`` with everything under it; when some of it stays, what and why.

    Example: ``_remove_tree(Path("/var/lib/ollastack/lab/hosts/demo-1")) is None`` once it is gone.
    """
    try:
        shutil.rmtree(path)
        return None
    except OSError as exc:
        # Take away all that can go (rmtree stops at its first error), then say what stayed.
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return None
        # rmtree names what it could not remove relative to its directory: find it again, whole.
        leaves = [p for p in sorted(path.rglob("*")) if p.is_symlink() or not p.is_dir() or not any(p.iterdir())]
        more = f" and {len(leaves) - 1} more" if len(leaves) > 1 else ""
        return f"{path} ({leaves[0] if leaves else path}{more} stayed: {exc.strerror or exc})"


def _remove(stack_name: str | None, progress: Progress, names: list[str] | None = None) -> list[str]:
    removed, stayed = [], []
    for host in list_hosts(stack_name):
        if names is not None and host["name"] not in names:
            continue
        _stop(host)
        host_dir = _hosts_dir() / host["name"]
        _unmount_under(host_dir)
        left = _remove_tree(host_dir)
        # A stale neighbour entry would delay the next host given this address by ~20 s.
        subprocess.run(["ip", "neigh", "flush", "to", host["address"], "dev", BRIDGE], capture_output=True)
        if left:
            stayed.append(left)
            progress(f"{host['name']}: stopped, but not removed: {left}")
            continue
        removed.append(f"host {host['name']} ({host['address']})")
        progress(f"{host['name']}: stopped and removed")
    if not list_hosts():
        removed += remove_network()
        for d in _cgroup_roots():
            _remove_cgroup(d)
    _write_known_hosts()
    if stayed:
        raise LabError(f"could not remove {'; '.join(stayed)}: delete it as root (`lsattr -R` and `findmnt -R` "
                       "show what holds it), then run `ollastack lab down` again")
    return removed


def remove(stack_name: str, names: list[str], progress: Progress) -> list[str]:
    """Stop and delete these hosts of the stack (a shrunk fleet's backends), leaving its others running.

    Example: ``remove("demo", ["demo-4"], progress)`` -> ["host demo-4 (10.213.0.13)"]
    """
    check_prerequisites()
    with _locked():
        return _remove(stack_name, progress, names)
