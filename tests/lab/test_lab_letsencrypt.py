"""Let's Encrypt mode against a real ACME server: Pebble on the control machine, certbot on a lab host.

Pebble validates every HTTP-01 challenge for real (PEBBLE_VA_ALWAYS_VALID=0) by fetching it from the
lab host's nginx; its DNS (pebble-challtestsrv) answers the test domains with the host's address.
The certificates it issues chain to a root regenerated at each start, fetched from ``/roots/0``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509

from ollastack import lab, orchestrate
from ollastack.config import ConfigError, parse_stack
from ollastack.dnscheck import domain_problem
from ollastack.host import Host
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh
from tests.support.pebble import Pebble, free_port

NAME = "acmetest"
DOMAIN = "chat.acme.test"
EMAIL = "admin@example.com"
lab_only = pytest.mark.lab


class AcmeStack(LabStack):
    """The lab test stack under its own name."""

    name = NAME


def tls_section(pebble: Pebble | None = None, **settings) -> str:
    values = {"mode": "letsencrypt", "domain": DOMAIN, "email": EMAIL}
    if pebble:
        values.update(acme_server=pebble.directory, acme_ca_bundle=str(pebble.tls_ca), dns_server=pebble.dns_server)
    values.update(settings)
    return "[tls]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def served(address: str, cafile: Path, name: str = DOMAIN) -> x509.Certificate:
    """The certificate nginx serves for ``name``, verified against ``cafile`` (raises if it does not verify)."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection((address, 443), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def access(keypair) -> dict:
    return {"ssh_public_key": str(keypair[0]), "ssh_private_key": str(keypair[1])}


def serial(address: str, name: str = DOMAIN) -> str:
    return orchestrate.served_certificate(address, name)["serial"]


# Bad input: refused before any host exists.

def test_invalid_email_and_domain_rejected_before_touching_anything(tmp_path, keypair):
    public, private = keypair
    path = tmp_path / "stack.toml"
    path.write_text(f'[stack]\nname = "acmebad"\n[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n'
                    '[tls]\nmode = "letsencrypt"\nemail = "root@localhost"\ndomain = "chat_ai.example.com"\n'
                    'acme_server = "http://10.213.0.1:14000/dir"\n')
    env = dict(os.environ, OLLASTACK_STATE_DIR=str(tmp_path / "state"), OLLASTACK_SSL_DIR=str(tmp_path / "ssl"))
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(path), "up"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "nothing was touched" in result.stderr
    for field in ("tls.email = 'root@localhost'", "tls.domain = 'chat_ai.example.com'", "tls.acme_server"):
        assert field in result.stderr
    assert lab.list_hosts("acmebad") == []
    assert not (tmp_path / "ssl").exists()


@pytest.mark.parametrize("tls, field", [
    ({"mode": "letsencrypt", "domain": DOMAIN}, "tls.email: tls.mode = \"letsencrypt\" needs an ACME account e-mail"),
    ({"mode": "letsencrypt", "email": EMAIL}, "tls.domain: tls.mode = \"letsencrypt\" needs a DNS name"),
    ({"dns_server": "resolver.example.com"}, "tls.dns_server = 'resolver.example.com'"),
])
def test_letsencrypt_needs_email_and_domain(tls, field, keypair):
    with pytest.raises(ConfigError) as caught:
        parse_stack({"access": access(keypair), "tls": tls})
    assert field in caught.value.render()


def test_azure_dns_label_is_enough_for_a_domain(keypair):
    stack = parse_stack({"stack": {"provider": "azure"}, "access": access(keypair),
                         "azure": {"subscription_id": "0" * 8, "dns_label": "mychat"},
                         "tls": {"mode": "letsencrypt", "email": EMAIL, "acme_server": "staging"}})
    assert stack.tls.acme_server == "staging"


# The DNS pre-flight against challtestsrv's real DNS server on loopback.

@pytest.fixture(scope="module")
def loopback_dns(tmp_path_factory):
    with Pebble(tmp_path_factory.mktemp("dns"), "127.0.0.1", answer="127.0.0.42") as pebble:
        yield pebble


def test_dns_check_accepts_a_domain_pointing_at_the_host(loopback_dns):
    assert domain_problem(DOMAIN, "127.0.0.42", loopback_dns.dns_server) is None


def test_dns_check_names_both_addresses_and_the_way_out(loopback_dns):
    loopback_dns.add_a("elsewhere.acme.test", "127.0.0.43")
    problem = domain_problem("elsewhere.acme.test", "127.0.0.42", loopback_dns.dns_server)
    assert problem.startswith("tls.domain elsewhere.acme.test resolves to 127.0.0.43")
    assert "not to the host's address 127.0.0.42" in problem and "tls.check_dns = false" in problem


def test_dns_check_reports_a_dead_resolver(loopback_dns):
    problem = domain_problem(DOMAIN, "127.0.0.42", f"127.0.0.1:{free_port('127.0.0.1')}")
    assert "cannot check where it points: no answer from the resolver" in problem


def test_preflight_is_skipped_with_check_dns_false(loopback_dns, keypair):
    base = {"access": access(keypair)}
    tls = {"mode": "letsencrypt", "email": EMAIL, "domain": "elsewhere.acme.test", "dns_server": loopback_dns.dns_server}
    loopback_dns.add_a("elsewhere.acme.test", "127.0.0.43")
    hosts = [Host("h", "127.0.0.42")]
    with pytest.raises(orchestrate.PreflightError, match="nothing was requested"):
        orchestrate.dns_preflight(parse_stack({**base, "tls": tls}), hosts)
    orchestrate.dns_preflight(parse_stack({**base, "tls": {**tls, "check_dns": False}}), hosts)


# A lab host and Pebble.

@pytest.fixture(scope="module")
def acme_stack(tmp_path_factory, keypair, archives):
    yield from lab_stack_fixture(lambda: AcmeStack(tmp_path_factory.mktemp("acme"), keypair, archives))


@pytest.fixture(scope="module")
def acme_host(acme_stack) -> dict:
    return acme_stack.up_one()


@pytest.fixture(scope="module")
def pebble(acme_stack, acme_host):
    gateway = lab._network("10.213.0.0/24")[1]
    with Pebble(acme_stack.dir, gateway, answer=acme_host["address"]) as server:
        root = acme_stack.dir / "pebble-root.pem"
        root.write_text(server.root_pem())
        server.root = root
        # ollastack's HTTPS check trusts the system store; here that is Pebble's root.
        acme_stack.env["SSL_CERT_FILE"] = str(root)
        yield server


@pytest.fixture(scope="module")
def issued(acme_stack, acme_host, pebble):
    """``ollastack up`` in letsencrypt mode on a fresh host: bootstrap, DNS pre-flight, certbot, switch."""
    acme_stack.write(extra=tls_section(pebble))
    started = time.monotonic()
    result = acme_stack.ollastack("--json", "up")
    assert result.returncode == 0, result.stderr[-4000:]
    return {"report": json.loads(result.stdout), "stderr": result.stderr, "seconds": time.monotonic() - started}


@lab_only
def test_dns_mismatch_stops_up_before_the_converge(acme_stack, acme_host, pebble):
    pebble.add_a("wrong.acme.test", "10.213.0.254")
    acme_stack.write(extra=tls_section(pebble, domain="wrong.acme.test"))
    result = acme_stack.ollastack("up")
    assert result.returncode == 1
    assert (f"tls.domain wrong.acme.test resolves to 10.213.0.254 (asked {pebble.dns_server}), "
            f"not to the host's address {acme_host['address']}") in result.stderr
    assert "converging with pyinfra" not in result.stderr
    assert ssh(acme_host["address"], "test -e /etc/letsencrypt", acme_stack.keypair, check=False).returncode != 0


@lab_only
def test_up_serves_a_pebble_certificate(issued, acme_stack, acme_host, pebble):
    host = issued["report"]["hosts"][0]
    assert host["url"] == f"https://{DOMAIN}/" and host["https"].startswith("HTTPS verified")
    cert = served(acme_host["address"], pebble.root)
    assert "Pebble Intermediate" in cert.issuer.rfc4514_string()
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [DOMAIN]
    with pytest.raises(ssl.SSLCertVerificationError):
        served(acme_host["address"], acme_stack.ca)
    print(f"\nfresh host to a Pebble certificate with `ollastack up`: {issued['seconds']:.1f}s")


@lab_only
def test_renewal_timer_trusts_the_private_acme_ca(issued, acme_host, acme_stack):
    address, keys = acme_host["address"], acme_stack.keypair
    assert ssh(address, "systemctl is-enabled certbot.timer", keys).stdout.strip() == "enabled"
    env = ssh(address, "systemctl show certbot.service -p Environment --value", keys).stdout
    assert "REQUESTS_CA_BUNDLE=/etc/ollastack/acme-ca.pem" in env
    conf = ssh(address, f"cat /etc/letsencrypt/renewal/{DOMAIN}.conf", keys).stdout
    assert "authenticator = webroot" in conf


@lab_only
def test_forced_renewal_is_served_without_a_manual_reload(issued, acme_host, acme_stack, pebble):
    address = acme_host["address"]
    before = serial(address)
    ssh(address, "REQUESTS_CA_BUNDLE=/etc/ollastack/acme-ca.pem certbot renew --force-renewal --no-random-sleep-on-renew",
        acme_stack.keypair)
    after = serial(address)
    assert after != before
    assert format(served(address, pebble.root).serial_number, "x") == after


@lab_only
def test_second_converge_requests_nothing(issued, acme_stack, acme_host):
    before = serial(acme_host["address"])
    _, report = acme_stack.pyinfra()
    assert report["results"]["totals"]["success"] == 0, changed_ops(report)
    assert serial(acme_host["address"]) == before


@lab_only
def test_status_shows_issuer_and_days_to_expiry(issued, acme_stack, acme_host, pebble):
    result = acme_stack.ollastack("--json", "status")
    assert result.returncode == 0, result.stderr
    cert = json.loads(result.stdout)["hosts"][0]["certificate"]
    served_cert = served(acme_host["address"], pebble.root)
    assert cert["issuer"] == served_cert.issuer.rfc4514_string() and "Pebble" in cert["issuer"]
    expected = (served_cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days
    assert cert["days_left"] == expected and cert["days_left"] > 0
    text = acme_stack.ollastack("status").stdout
    assert f"certificate: issued by {cert['issuer']}, expires in {cert['days_left']} days" in text


@pytest.fixture()
def port_80_blocked(acme_host, acme_stack):
    """Reject HTTP on the host, as a closed cloud firewall would; removed afterwards. In a table of its own:
    a rule added to ollastack's table is drift, which the converge under test would remove."""
    address, keys = acme_host["address"], acme_stack.keypair
    ssh(address, "nft add table inet acmetest && nft add chain inet acmetest input "
                 "'{ type filter hook input priority -10; }' && "
                 "nft add rule inet acmetest input tcp dport 80 reject with tcp reset", keys)
    yield
    ssh(address, "nft delete table inet acmetest", keys)


@lab_only
def test_blocked_port_80_names_the_cause_and_keeps_the_certificate(issued, acme_stack, acme_host, pebble, port_80_blocked):
    before = serial(acme_host["address"])
    acme_stack.write(extra=tls_section(pebble, domain="other.acme.test"))
    result, _ = acme_stack.pyinfra(check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert ("no certificate for other.acme.test: the ACME server could not reach "
            "http://other.acme.test/.well-known/acme-challenge/ on port 80") in output
    assert "the previous certificate keeps serving" in output
    # nginx answers only the configured name, now other.acme.test, still with the certificate it had.
    assert serial(acme_host["address"], "other.acme.test") == before


@lab_only
def test_switch_to_self_signed_and_back(issued, acme_stack, acme_host, pebble):
    address, keys = acme_host["address"], acme_stack.keypair
    acme_stack.write(extra=f'[tls]\ndomain = "{DOMAIN}"\n')
    acme_stack.pyinfra()
    assert "ollastack acmetest CA" in served(address, acme_stack.ca).issuer.rfc4514_string()
    assert ssh(address, "test -e /etc/letsencrypt/renewal-hooks/deploy/ollastack-nginx", keys, check=False).returncode == 1
    acme_stack.write(extra=tls_section(pebble))
    _, report = acme_stack.pyinfra()
    changed = changed_ops(report)
    assert f"Let's Encrypt | Serve the certificate for {DOMAIN}" in changed
    assert not any("Request a certificate" in op for op in changed), changed
    assert "Pebble Intermediate" in served(address, pebble.root).issuer.rfc4514_string()
