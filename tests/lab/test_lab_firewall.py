"""The host firewall on real Debian 12 and 13 lab hosts, probed by behaviour rather than by its rules' text.

Every service but 22/80/443 listens on loopback, so "only 22/80/443 answer" would hold with no
firewall at all. These tests open a listener on the host's bridge address, and try SSH from a second
network namespace on the lab bridge whose address is outside (or inside) ``access.admin_cidrs``.
They also break the live table the ways a host breaks it (``nft flush ruleset``, a restart of
Debian's nftables.service) and check that the converge or the unit puts it back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.support.labkit import LabStack, bridge_prober, changed_ops, lab_stack_fixture, port_open, ssh

pytestmark = pytest.mark.lab

# Far above the lab allocator's first addresses (lab.FIRST_HOST), so no lab host is given them.
INSIDER = "10.213.0.252"
OUTSIDER = "10.213.0.250"
PROBE_PORT = 8081
APPLY = "Firewall | Apply firewall rules"


class FirewallStack(LabStack):
    name = "fwtest"
    admin_cidrs = ["198.51.100.0/24", f"{INSIDER}/32"]


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def stack(request, tmp_path_factory, keypair, archives) -> Iterator[FirewallStack]:
    class ReleaseStack(FirewallStack):
        name, release = f"fwtest-{request.param[:3]}", request.param

    yield from lab_stack_fixture(lambda: ReleaseStack(tmp_path_factory.mktemp(request.param), keypair, archives))


@pytest.fixture(scope="module")
def host(stack) -> dict:
    return stack.converged_one()


def live_table(host: dict, keypair) -> str | None:
    result = ssh(host["address"], "nft list table inet ollastack", keypair, check=False)
    return result.stdout if result.returncode == 0 else None


def converge_changes_nothing(stack: FirewallStack) -> None:
    _, report = stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)


@pytest.fixture()
def from_bridge() -> Iterator[Callable[[str, str, int], bool]]:
    """``connects(source, address, port)``: a TCP connection from a network namespace on the lab bridge."""
    yield from bridge_prober("fwtest")


def test_ssh_only_from_the_admin_networks(host, from_bridge):
    # Port 80 answers the outsider: its path to the host works, only SSH is closed to it.
    assert from_bridge(OUTSIDER, host["address"], 80)
    assert not from_bridge(OUTSIDER, host["address"], 22)
    assert from_bridge(INSIDER, host["address"], 22)


def test_a_listener_on_the_public_address_is_unreachable(host, keypair):
    address = host["address"]
    unit = "fwtest-probe"
    ssh(address, f"systemd-run --unit={unit} python3 -m http.server {PROBE_PORT} --bind 0.0.0.0", keypair)
    try:
        # The host itself reaches the listener on its bridge address ...
        ssh(address, f"for i in $(seq 50); do curl -fsS -o /dev/null --max-time 2 http://{address}:{PROBE_PORT}/ "
                     "&& exit 0; sleep 0.2; done; exit 1", keypair)
        # ... the control machine (an admin network, for SSH only) does not.
        assert not port_open(address, PROBE_PORT)
        assert port_open(address, 443) and port_open(address, 22)
    finally:
        ssh(address, f"systemctl stop {unit}", keypair, check=False)


def test_flushed_ruleset_is_restored_by_the_next_converge(stack, host, keypair):
    before = live_table(host, keypair)
    assert before is not None
    ssh(host["address"], "nft flush ruleset", keypair)
    assert live_table(host, keypair) is None
    _, report = stack.pyinfra()
    assert APPLY in changed_ops(report)
    assert live_table(host, keypair) == before
    converge_changes_nothing(stack)


def test_protocol_names_appearing_later_are_not_drift(stack, host, keypair):
    """nft prints ``icmp`` instead of ``1`` once /etc/protocols exists (netbase, pulled in by Podman, adds
    it after the first apply): the same table must not be re-applied on every converge."""
    address = host["address"]
    ssh(address, "if [ -e /etc/protocols ]; then mv /etc/protocols /etc/protocols.away; "
                 "else printf 'icmp 1 ICMP\\nipv6-icmp 58 IPv6-ICMP\\n' > /etc/protocols; fi", keypair)
    try:
        converge_changes_nothing(stack)
    finally:
        ssh(address, "if [ -e /etc/protocols.away ]; then mv /etc/protocols.away /etc/protocols; "
                     "else rm -f /etc/protocols; fi", keypair)


def test_a_rule_added_by_hand_is_removed_by_the_next_converge(stack, host, keypair):
    before = live_table(host, keypair)
    assert before is not None
    ssh(host["address"], f"nft add rule inet ollastack input tcp dport {PROBE_PORT} accept", keypair)
    assert live_table(host, keypair) != before
    _, report = stack.pyinfra()
    assert APPLY in changed_ops(report)
    assert live_table(host, keypair) == before


def test_nftables_restart_reload_and_unit_stop_keep_the_table(stack, host, keypair):
    address = host["address"]
    before = live_table(host, keypair)
    assert before is not None
    # Debian's own rules file starts by flushing everything: the restart alone would remove our table.
    first = ssh(address, "grep -v '^#' /etc/nftables.conf | grep -m1 .", keypair).stdout.strip()
    assert first == "flush ruleset"
    for command in ("systemctl restart nftables", "systemctl reload nftables", "systemctl stop ollastack-firewall"):
        ssh(address, command, keypair)
        assert live_table(host, keypair) == before, command
    # The stopped unit is started again by the converge; the table was never gone.
    _, report = stack.pyinfra()
    assert changed_ops(report) == ["Firewall | Firewall enabled at boot"]
    converge_changes_nothing(stack)


def test_overlapping_admin_networks_converge(stack, host, keypair, from_bridge):
    """10.0.0.0/8 covers 10.1.0.0/16 and the lab's own /32: nft alone refuses them ("conflicting intervals")."""
    stack.admin_cidrs = ["10.0.0.0/8", "10.1.0.0/16"]
    try:
        stack.write()
        _, report = stack.pyinfra()
        assert APPLY in changed_ops(report)
        table = live_table(host, keypair)
        assert re.findall(r"elements = \{ ([^}]*) \}", table) == ["10.0.0.0/8"]
        assert from_bridge(OUTSIDER, host["address"], 22)
    finally:
        stack.admin_cidrs = FirewallStack.admin_cidrs
        stack.write()
        stack.pyinfra()
    assert not from_bridge(OUTSIDER, host["address"], 22)


def test_a_converge_that_would_lock_itself_out_changes_nothing(stack, host, keypair):
    """admin_cidrs without the converge's own address (forced past the lab's /32 with pyinfra's --data)."""
    probe = "/etc/apt/apt.conf.d/90ollastack"
    # Drift that Base, the first component, would repair: still there afterwards means nothing ran.
    ssh(host["address"], f"cp -p {probe} /root/probe.bak && echo '// drift' >> {probe}", keypair)
    try:
        process, _ = stack.pyinfra("--data", 'ollastack_access_admin_cidrs=["198.51.100.0/24"]', check=False)
        assert ssh(host["address"], f"tail -n1 {probe}", keypair).stdout.strip() == "// drift"
    finally:
        ssh(host["address"], f"mv /root/probe.bak {probe}", keypair)
    assert process.returncode == 1
    assert "does not include 10.213.0.1, the address this converge connects from" in process.stdout + process.stderr
    assert live_table(host, keypair) is not None


def exposure(host: dict, keypair, unit: str) -> float:
    out = ssh(host["address"], f"systemd-analyze security --no-pager {unit}", keypair).stdout
    return float(re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out).group(1))


def test_hardened_ollama_pulls_into_a_models_dir_of_its_own(stack, host, keypair):
    """ProtectSystem=strict leaves only Ollama's own paths writable: a pull into another models_dir must land there."""
    assert exposure(host, keypair, "ollama.service") <= 4.0
    assert exposure(host, keypair, "ollastack-firewall.service") <= 4.0
    models = "/srv/fwtest-models"
    try:
        # The configured model, listed in the old directory: it must be pulled again into the new one.
        stack.write(ollama={"models_dir": models})
        _, report = stack.pyinfra()
        assert "Ollama | Pull model llama3.2:1b" in changed_ops(report)
        manifest = ssh(host["address"], f"find {models}/manifests -type f", keypair).stdout.split()
        assert manifest == [f"{models}/manifests/registry.ollama.ai/library/llama3.2/1b"]
        _, report = stack.pyinfra()
        assert report["results"]["totals"]["success"] == 0, changed_ops(report)
    finally:
        stack.write()
        stack.pyinfra()
