"""The host firewall without a host: the rules as rendered, as nftables loads them, and when to re-apply.

The rules are loaded into a private network namespace (``unshare -n``), so the listing compared here
is the one the kernel holds, exactly as ``nft list table inet ollastack`` shows it on a host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import jinja2
import pytest

from ollastack.deploy.facts import NftTable, normalized_nft
from ollastack.deploy.firewall import admin_networks, fleet_rules, table_differs
from tests.support.repo import REPO

# Every line of the input chain, in order: anything else accepted, or one of these missing, fails.
INPUT_CHAIN = [
    "type filter hook input priority filter; policy accept;",
    "ct state established,related accept",
    "ct state invalid drop",
    'iif "lo" accept',
    "meta l4proto { icmp, ipv6-icmp } accept",
]
WEB = "tcp dport { 80, 443 } accept"


def render(admin_cidrs: list[str], **fleet) -> str:
    """The rules for a host; ``fleet`` as ``deploy.firewall.fleet_rules`` gives them (default: a single host's)."""
    admin4, admin6 = admin_networks(admin_cidrs)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"),
                             undefined=jinja2.StrictUndefined)
    return env.get_template("firewall.nft.j2").render(admin4=admin4, admin6=admin6,
                                                      **(fleet or {"web": True, "ollama_from": ""}))


def loaded(rules: str) -> str:
    """``nft list table inet ollastack`` after loading ``rules`` in a fresh network namespace."""
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"):
        pytest.skip("needs root, nft and unshare")
    result = subprocess.run(["unshare", "-n", "sh", "-c", "nft -f - && nft list table inet ollastack"],
                            input=rules, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def expected(admin4: list[str], admin6: list[str]) -> str:
    lines = ["table inet ollastack {"]
    for name, kind, elements in (("admin4", "ipv4_addr", admin4), ("admin6", "ipv6_addr", admin6)):
        if elements:
            lines += [f"set {name} {{", f"type {kind}", "flags interval",
                      f"elements = {{ {', '.join(elements)} }}", "}"]
    lines += ["chain input {", *INPUT_CHAIN]
    if admin4:
        lines.append("ip saddr @admin4 tcp dport 22 accept")
    if admin6:
        lines.append("ip6 saddr @admin6 tcp dport 22 accept")
    lines += [WEB, "drop", "}", "}"]
    return "\n".join(lines)


@pytest.mark.parametrize("cidrs,admin4,admin6", [
    (["198.51.100.0/24", "10.213.0.1/32"], ["10.213.0.1", "198.51.100.0/24"], []),
    # Overlaps nft refuses ("conflicting intervals") are collapsed first, per family.
    (["10.0.0.0/8", "10.1.0.0/16"], ["10.0.0.0/8"], []),
    (["0.0.0.0/0", "10.213.0.1/32"], ["0.0.0.0/0"], []),
    (["192.0.2.6/32", "192.0.2.7/32", "2001:db8::/32", "2001:db8:1::/48"], ["192.0.2.6/31"], ["2001:db8::/32"]),
    (["2001:db8::/32"], [], ["2001:db8::/32"]),
])
def test_loaded_rules_are_exactly_the_policy(cidrs, admin4, admin6):
    assert normalized_nft(loaded(render(cidrs))) == expected(admin4, admin6)


def test_rendered_set_elements_are_collapsed():
    text = render(["10.0.0.0/8", "10.1.0.0/16", "10.213.0.1/32", "2001:db8::/32", "2001:db8:1::/48"])
    elements = [line.strip() for line in text.splitlines() if line.strip().startswith("elements")]
    assert elements == ["elements = { 10.0.0.0/8 }", "elements = { 2001:db8::/32 }"]


def test_admin_networks_by_family():
    assert admin_networks(["10.1.0.0/16", "2001:db8::/32", "10.0.0.0/8"]) == (["10.0.0.0/8"], ["2001:db8::/32"])
    assert admin_networks(["2001:db8::/32"]) == ([], ["2001:db8::/32"])


def test_reapply_when_the_live_table_is_missing_or_differs():
    applied = loaded(render(["198.51.100.0/24"]))
    live = NftTable().process(applied.splitlines())
    assert not table_differs(live, applied)
    # Flushed (nft flush ruleset, restart of nftables.service): the fact gives None.
    assert NftTable().process([]) is None and table_differs(None, applied)
    # Edited by hand: a rule added to the live table.
    edited = applied.replace(WEB, f"{WEB}\n\t\ttcp dport 8081 accept")
    assert table_differs(NftTable().process(edited.splitlines()), applied)
    # Never applied by this tool on the host (no record): applied once to make the record.
    assert table_differs(live, None)


def test_unit_keeps_the_table_and_follows_nftables_service():
    unit = (REPO / "templates/ollastack-firewall.service.j2").read_text()
    lines = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert not any(line.startswith("ExecStop") for line in lines)
    for line in ("After=nftables.service", "PartOf=nftables.service", "ReloadPropagatedFrom=nftables.service",
                 "Before=network-pre.target", "DefaultDependencies=no"):
        assert line in lines


def test_a_fleet_backend_admits_ollama_from_the_gateway_alone_and_serves_no_web_ports():
    data = SimpleNamespace(ollastack_fleet_role="backend", ollastack_fleet_gateway="10.213.0.10",
                           ollastack_ollama_host="10.213.0.11:11434")
    rules = fleet_rules(data)
    assert rules == {"web": False, "ollama_from": "10.213.0.10", "ollama_family": "ip", "ollama_port": 11434}
    # The web ports' rule gives way to Ollama's port from the gateway's address; nothing else changes.
    want = expected(["198.51.100.0/24"], []).replace(WEB, "ip saddr 10.213.0.10 tcp dport 11434 accept")
    assert normalized_nft(loaded(render(["198.51.100.0/24"], **rules))) == want


def test_a_gateway_and_a_single_host_keep_the_single_host_rules():
    for role in ("gateway", ""):
        data = SimpleNamespace(ollastack_fleet_role=role, ollastack_fleet_gateway="", ollastack_ollama_host="127.0.0.1:11434")
        assert render(["198.51.100.0/24"], **fleet_rules(data)) == render(["198.51.100.0/24"])


def test_a_fleet_gateway_address_that_is_not_an_address_is_refused():
    data = SimpleNamespace(ollastack_fleet_role="backend", ollastack_fleet_gateway="10.0.0.1; tcp dport 0-65535 accept",
                           ollastack_ollama_host="10.213.0.11:11434")
    with pytest.raises(ValueError):
        fleet_rules(data)
