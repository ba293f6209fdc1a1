"""Helpers of the lab tests: a rewritable stack description, the real pyinfra and ollastack CLIs, ssh."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ollastack import lab
from tests.support.repo import REPO

STACK = "citest"
# ConnectTimeout also bounds sshd's banner: with two lab modules converging on 2 cores a host's sshd has
# taken over 5 s to answer ("Connection timed out during banner exchange").
SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"]


class LabStack:
    """A stack description for the lab tests, rewritten per test, plus helpers to converge and inspect.

    Subclasses give each test module its own ``name``, so their lab hosts never collide.
    """

    name = STACK
    release = "bookworm"
    admin_cidrs = ["198.51.100.0/24"]

    def __init__(self, workdir: Path, keypair, archives):
        self.dir = workdir
        self.keypair = keypair
        self.archives = archives
        self.path = workdir / "stack.toml"
        self.env = dict(os.environ, OLLASTACK_CONFIG=str(self.path), OLLASTACK_SSL_DIR=str(workdir / "ssl"),
                        OLLASTACK_STATE_DIR=str(workdir / "state"))
        self.write()

    def write(self, ollama: dict | None = None, extra: str = "") -> None:
        archive, sha = self.archives["0.13.3"]
        settings = {"archive": str(archive), "sha256": sha, "models": ["llama3.2:1b"]}
        settings.update(ollama or {})
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        public, private = self.keypair
        if "[openwebui]" not in extra:
            # Open WebUI has its own tests (test_lab_openwebui.py); the others leave it out.
            extra = '[openwebui]\ninstall = "none"\n\n' + extra
        self.path.write_text(
            f'[stack]\nname = "{self.name}"\nprovider = "lab"\n\n[lab]\nrelease = "{self.release}"\n\n'
            f'[access]\nadmin_cidrs = {json.dumps(self.admin_cidrs)}\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n\n'
            f"[ollama]\n{lines}\n\n{extra}")

    def pyinfra(self, *extra: str, check: bool = True, deploy: str = "deploy/site.py"
                ) -> tuple[subprocess.CompletedProcess, dict | None]:
        """Run the real pyinfra CLI against the lab inventory; returns the process and its --json results.

        The stack-CA certificates are issued first, as ``ollastack up`` does before it converges.
        """
        issued = subprocess.run([sys.executable, "-m", "ollastack.certs", "inventories/lab.py"], cwd=REPO,
                                env=self.env, capture_output=True, text=True, timeout=300)
        assert issued.returncode == 0, issued.stderr
        cmd = [sys.executable, "-m", "ollastack.pyinfra_run", "-y", "--json", *extra, "inventories/lab.py", deploy]
        result = subprocess.run(cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=900)
        lines = [line for line in result.stdout.splitlines() if line.startswith('{"plan"')]
        report = json.loads(lines[-1]) if lines else None
        if check and result.returncode != 0:
            raise AssertionError(f"pyinfra failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result, report

    def up_one(self) -> dict:
        """Start (or find) the stack's single lab host: {"name", "address", "user"}."""
        result = self.ollastack("--json", "lab", "up", "--hosts", "1")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)[0]

    def converged_one(self) -> dict:
        """The stack's single lab host after a first converge that ended without an error."""
        host = self.up_one()
        _, report = self.pyinfra()
        assert report is not None and report["results"]["totals"]["error"] == 0
        return host

    def ollastack(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ollastack.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    @property
    def ca(self) -> Path:
        return self.dir / "ssl" / self.name / "ca.pem"


def changed_ops(report: dict) -> list[str]:
    """Names of the operations that changed something, from pyinfra's --json results."""
    return [op["name"] for op in report["results"]["operations"] if op["success"]]


def ssh(address: str, command: str, keypair, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ssh", "-i", str(keypair[1]), *SSH_OPTS, "-o", f"UserKnownHostsFile={lab.known_hosts_path()}",
                             f"root@{address}", command], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{command!r} failed on {address}: {result.stderr}")
    return result


def lab_stack_fixture(make: Callable[[], LabStack]) -> Iterator[LabStack]:
    """Body of a module's stack fixture: skips without root, removes the stack's lab hosts afterwards.

    Example::

        @pytest.fixture(scope="module")
        def gpu_stack(tmp_path_factory, keypair, archives):
            yield from lab_stack_fixture(lambda: GpuStack(tmp_path_factory.mktemp("gpu"), keypair, archives))
    """
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    stack = make()
    without_leftovers(stack.name, lambda: stack.ollastack("lab", "down"))
    yield stack
    stack.ollastack("lab", "down")


def without_leftovers(stack_name: str, down: Callable[[], object]) -> None:
    """Run ``down`` if lab hosts of ``stack_name`` are left from an earlier run that never reached its own.

    ``lab up`` starts a stopped host of the same name again, disk and all: a run killed before its teardown
    (or a reboot of the machine) would otherwise hand the next run a host that is not fresh, e.g. one that
    already has the Open WebUI release an upgrade test means to install.
    """
    if lab.list_hosts(stack_name):
        down()


def port_open(address: str, port: int) -> bool:
    """Whether a TCP connection from the control machine to ``address:port`` succeeds within 3 s."""
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def bridge_prober(tag: str) -> Iterator[Callable[[str, str, int], bool]]:
    """Body of a fixture giving ``connects(source, address, port)``: a TCP connection (4 s) from a network
    namespace on the lab bridge, as a machine at ``source`` outside the lab hosts sees them.

    Each source address gets its own namespace (``<tag>-<last octet>``), joined to the bridge by a veth
    pair, removed afterwards. Give each module its own ``tag`` (the veth names take its first 3 letters).
    """
    subnet = lab._network("10.213.0.0/24")[0]
    made: list[str] = []

    def connects(source: str, address: str, port: int) -> bool:
        assert ipaddress.ip_address(source) in subnet
        suffix = source.rsplit(".", 1)[1]
        namespace, outer, inner = f"{tag}-{suffix}", f"{tag[:3]}{suffix}h", f"{tag[:3]}{suffix}n"
        if namespace not in made:
            made.append(namespace)
            for command in (["ip", "netns", "add", namespace],
                            ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
                            ["ip", "link", "set", inner, "netns", namespace],
                            ["ip", "link", "set", outer, "master", lab.BRIDGE, "up"],
                            ["ip", "-n", namespace, "addr", "add", f"{source}/{subnet.prefixlen}", "dev", inner],
                            ["ip", "-n", namespace, "link", "set", inner, "up"],
                            ["ip", "-n", namespace, "link", "set", "lo", "up"]):
                subprocess.run(command, check=True, capture_output=True)
        probe = (f"import socket\ntry:\n    socket.create_connection(({address!r}, {port}), timeout=4).close()\n"
                 "except OSError:\n    raise SystemExit(1)\n")
        return subprocess.run(["ip", "netns", "exec", namespace, "python3", "-c", probe],
                              capture_output=True, timeout=30).returncode == 0

    try:
        yield connects
    finally:
        for namespace in made:
            # Deleting the namespace deletes its end of the veth pair, and with it the bridge's end.
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def processes(matches: Callable[[list[bytes]], bool]) -> list[int]:
    """Pids of this machine's processes whose argument list (read from /proc, not guessed) ``matches``.

    Example: ``processes(lambda args: args[0] == b"ssh")``
    """
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if matches(args):
            found.append(int(cmdline.parent.name))
    return found
