"""A fleet whose backend is reached through its gateway, as on a cloud (``lab.jump_backends``): real SSH, real pyinfra.

One gateway and one backend (Debian 12, stand-in Ollama, no Open WebUI), one converge. The backend's
sshd logs every login pyinfra and ``doctor`` make as coming from the gateway's address, never from the
control machine's; the backend's firewall admits SSH from the gateway (the cloud's rule), so a second
converge through the jump, after the first put the firewall in place, changes nothing. A chat sent to
the gateway reaches the backend.

The control machine stays an admin network of every lab host (``LabProvider.host_settings``), as the
admin networks stay in a cloud backend's own firewall: there, only the cloud's rules and the missing
public address keep direct SSH out, and the lab has neither, so direct SSH is not refused here.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Iterator

import pytest

from ollastack import lab
from tests.support.fleetkit import chat, served
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

MODEL = "llama3.2:1b"
# sshd's line for each login: who, from which address and port.
ACCEPTED = re.compile(r"Accepted publickey for (\S+) from (\S+) port (\d+)")
# On the backend: this session's own source (``$SSH_CONNECTION``), then sshd's journal after a cursor
# (all of it without one), ending with a cursor for the next read.
READ_LOG = 'echo "$SSH_CONNECTION"; journalctl -t sshd -o cat --no-pager --show-cursor {after}'


class JumpStack(LabStack):
    name = "jumptest"

    def write(self, ollama: dict | None = None, extra: str = "") -> None:
        super().write(ollama, extra)
        self.path.write_text(self.path.read_text().replace("[lab]\n", "[lab]\njump_backends = true\n", 1))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[JumpStack]:
    def make() -> JumpStack:
        stack = JumpStack(tmp_path_factory.mktemp("jump"), keypair, archives)
        stack.write(extra="[fleet]\nbackends = 1\n")
        return stack

    yield from lab_stack_fixture(make)


class SshdLog:
    """The logins a host's sshd accepted since the last read, less the sessions this reader opened itself."""

    def __init__(self, address: str, keypair):
        self.address, self.keypair = address, keypair
        self.cursor = ""
        self.own: set[tuple[str, str]] = set()
        self.read()

    def read(self) -> list[str]:
        """The source address of each login since the last read."""
        after = f"--after-cursor={shlex.quote(self.cursor)}" if self.cursor else "-n 1"
        out = ssh(self.address, READ_LOG.format(after=after), self.keypair).stdout.splitlines()
        client, client_port, *_ = out[0].split()
        self.own.add((client, client_port))
        cursors = [line for line in out if line.startswith("-- cursor: ")]
        if cursors:
            self.cursor = cursors[-1].removeprefix("-- cursor: ")
        logins = [m.group(2, 3) for m in map(ACCEPTED.search, out[1:]) if m]
        return [source for source, port in logins if (source, port) not in self.own]

    def during(self, action: Callable[[], object]) -> list[str]:
        self.read()
        action()
        return self.read()


@pytest.fixture(scope="module")
def fleet(stack, keypair) -> dict:
    """{"gateway", "backend", "first": the backend's logins during the first converge} after ``lab up`` and one converge."""
    result = stack.ollastack("--json", "lab", "up")
    assert result.returncode == 0, result.stderr
    gateway, backend = json.loads(result.stdout)
    log = SshdLog(backend["address"], keypair)

    def converge() -> None:
        _, report = stack.pyinfra()
        assert report is not None and report["results"]["totals"]["error"] == 0

    return {"gateway": gateway, "backend": backend, "log": log, "first": log.during(converge)}


def test_pyinfra_reaches_the_backend_through_the_gateway(stack, fleet):
    gateway, backend = fleet["gateway"], fleet["backend"]
    assert fleet["first"] and set(fleet["first"]) == {gateway["address"]}, fleet["first"]
    config = (stack.dir / "state" / f"{stack.name}.ssh_config").read_text()
    assert f"Host {backend['address']}\n    ProxyCommand ssh " in config
    assert f"-W {backend['address']}:22 -- root@{gateway['address']}" in config


def test_the_backend_admits_ssh_from_the_gateway(fleet, keypair):
    admins = ssh(fleet["backend"]["address"], "nft list set inet ollastack admin4", keypair).stdout
    assert fleet["gateway"]["address"] in admins and lab.gateway("10.213.0.0/24") in admins
    # The gateway's own firewall needs no such rule: nothing logs in through a backend.
    admins = ssh(fleet["gateway"]["address"], "nft list set inet ollastack admin4", keypair).stdout
    assert fleet["backend"]["address"] not in admins


def test_a_second_converge_through_the_jump_changes_nothing(stack, fleet):
    """Now behind the backend's firewall: its rule for the gateway lets the jump in."""
    reports = []
    logins = fleet["log"].during(lambda: reports.append(stack.pyinfra()[1]))
    assert reports[0] is not None and reports[0]["results"]["totals"]["error"] == 0
    assert changed_ops(reports[0]) == [], changed_ops(reports[0])
    assert logins and set(logins) == {fleet["gateway"]["address"]}, logins


def test_doctor_and_status_reach_the_backend_through_the_gateway(stack, fleet):
    reports = []
    logins = fleet["log"].during(lambda: reports.append(json.loads(stack.ollastack("--json", "doctor").stdout)))
    assert logins and set(logins) == {fleet["gateway"]["address"]}, logins
    report = reports[0]
    assert report["ok"], [(h["name"], c) for h in report["hosts"] for c in h["checks"] if c["status"] != "ok"]
    checks = {h["name"]: {c["name"]: c["status"] for c in h["checks"]} for h in report["hosts"]}
    backend = fleet["backend"]["name"]
    assert checks[backend]["ssh"] == "ok" and checks[fleet["gateway"]["name"]][f"backend {backend}"] == "ok"
    status = json.loads(stack.ollastack("--json", "status").stdout)
    assert [(b["name"], b["reachable"], MODEL in b["models"]) for b in status["backends"]] == [(backend, True, True)]


def test_a_chat_through_the_gateway_reaches_the_backend(fleet, keypair):
    before = served(fleet["backend"], keypair)
    code, body = chat(fleet["gateway"], keypair, MODEL)
    assert code == "200" and json.loads(body)["done"] is True, body
    assert served(fleet["backend"], keypair) == [*before, MODEL]
