"""The private CA and server certificates, checked by outside verifiers: ``openssl verify`` and real
TLS handshakes on loopback with a client that trusts only the stack's ca.pem."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509

from ollastack import certs
from ollastack.certs import CertError, describe, ensure_ca, ensure_server_cert, server_cert_paths


@pytest.fixture
def stack_dir(tmp_path) -> Path:
    return tmp_path / "ssl" / "demo"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl_verify(ca: Path, cert: Path, *checks: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(ca),
                           *checks, str(cert)], capture_output=True, text=True)


@contextlib.contextmanager
def tls_server(fullchain: Path, key: Path):
    """A TLS server on a free loopback port answering b"hello" to each client, like nginx would serve."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(fullchain, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with contextlib.suppress(ssl.SSLError, OSError), context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(timeout=5)


def handshake(port: int, ca: Path, server_hostname: str) -> bytes:
    client = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return tls.recv(5)


def test_ca_is_a_2_year_pathlen_0_name_constrained_ca_named_after_the_stack(stack_dir):
    ca_cert, ca_key = ensure_ca(stack_dir, ["10.0.0.4", "ai.example.org"])
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "ollastack demo CA"
    assert cert.issuer == cert.subject
    assert 729 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 731
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    names = cert.extensions.get_extension_for_class(x509.NameConstraints)
    assert names.critical and {str(n.value) for n in names.value.permitted_subtrees} == {"10.0.0.4/32", "ai.example.org"}
    assert (mode(ca_key), mode(ca_cert), mode(stack_dir), mode(stack_dir.parent)) == (0o600, 0o644, 0o700, 0o700)
    assert (stack_dir / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (stack_dir.parent / ".gitignore").read_text().splitlines()[-1] == "*"
    before = (ca_cert.read_bytes(), ca_key.read_bytes())
    assert ensure_ca(stack_dir, ["ai.example.org"]) == (ca_cert, ca_key)
    assert (ca_cert.read_bytes(), ca_key.read_bytes()) == before


@pytest.mark.parametrize("sans, outside", [
    (["127.0.0.1", "ollama.test"], "evil.example.com"),
    (["127.0.0.1", "ollama.test"], "127.0.0.2"),
    (["127.0.0.1"], "bank.example.com"),       # an IP-only stack permits no DNS name
    (["ollama.test"], "8.8.8.8"),              # a DNS-only stack permits no address
])
def test_stolen_ca_key_cannot_mint_a_certificate_for_another_name(stack_dir, tmp_path, sans, outside):
    ca_cert, ca_key = ensure_ca(stack_dir, sans)
    good, _, _ = ensure_server_cert(stack_dir, "demo-1", sans)
    assert openssl_verify(ca_cert, good).returncode == 0
    # What an attacker with ca-key.pem would do: sign a leaf for a name of their choosing.
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = certs.serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    forged, leaf_key = certs._issue(ca, key, "forged", [certs.parse_san(outside)], 30)
    forged_path = tmp_path / "forged.pem"
    forged_path.write_text(certs._pem(forged))
    result = openssl_verify(ca_cert, forged_path)
    assert result.returncode != 0 and "subtree violation" in result.stderr
    # Python's ssl (OpenSSL underneath, as in curl and the HTTPS check) refuses it in a real handshake.
    chain, key_path = tmp_path / "forged-fullchain.pem", tmp_path / "forged-key.pem"
    chain.write_text(certs._pem(forged) + certs._pem(ca))
    key_path.write_text(certs._key_pem(leaf_key))
    with tls_server(chain, key_path) as port:
        with pytest.raises(ssl.SSLCertVerificationError, match="subtree violation"):
            handshake(port, ca_cert, outside)


def test_new_name_outside_the_constraints_makes_a_new_ca(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["10.0.0.4"], ca_names=["10.0.0.4", "10.0.0.5"])
    old_ca = (stack_dir / "ca.pem").read_bytes()
    ensure_server_cert(stack_dir, "demo-2", ["10.0.0.5"])
    assert (stack_dir / "ca.pem").read_bytes() == old_ca, "a name it already permits keeps the CA"
    ensure_server_cert(stack_dir, "demo-1", ["10.0.0.4", "chat.example.org"])
    assert (stack_dir / "ca.pem").read_bytes() != old_ca
    assert openssl_verify(stack_dir / "ca.pem", cert, "-verify_hostname", "chat.example.org").returncode == 0


def test_ca_without_name_constraints_is_replaced(stack_dir):
    """A CA made before name constraints (10 years, unconstrained) is not kept."""
    stack_dir.mkdir(parents=True)
    key = certs.ec.generate_private_key(certs.ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ollastack demo CA")])
    now = certs._now()
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
           .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .sign(key, certs.hashes.SHA256()))
    (stack_dir / "ca.pem").write_text(certs._pem(old))
    (stack_dir / "ca-key.pem").write_text(certs._key_pem(key))
    ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    ca = x509.load_pem_x509_certificate((stack_dir / "ca.pem").read_bytes())
    assert ca.serial_number != 1 and ca.extensions.get_extension_for_class(x509.NameConstraints)


def test_server_cert_passes_openssl_verify_for_its_names_only(stack_dir):
    cert, key, changed = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1", "ollama.test", "::1"])
    ca = stack_dir / "ca.pem"
    assert changed and cert == stack_dir / "demo-1.pem" and key == stack_dir / "demo-1-key.pem"
    for check in (["-verify_ip", "127.0.0.1"], ["-verify_ip", "::1"], ["-verify_hostname", "ollama.test"]):
        result = openssl_verify(ca, cert, *check)
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr
    assert openssl_verify(ca, cert, "-verify_hostname", "other.test").returncode != 0
    assert openssl_verify(ca, cert, "-verify_ip", "127.0.0.2").returncode != 0
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(cert)], capture_output=True,
                          text=True, check=True).stdout
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text


def test_fullchain_is_leaf_then_ca(stack_dir):
    ensure_server_cert(stack_dir, "demo-1", ["ollama.test"])
    paths = server_cert_paths(stack_dir, "demo-1")
    chain = x509.load_pem_x509_certificates(paths.fullchain.read_bytes())
    ca = x509.load_pem_x509_certificate((stack_dir / "ca.pem").read_bytes())
    assert chain == [x509.load_pem_x509_certificate(paths.cert.read_bytes()), ca]
    chain[0].verify_directly_issued_by(ca)


def test_real_tls_handshake_trusting_only_the_stack_ca(stack_dir, tmp_path):
    ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1", "ollama.test"])
    paths = server_cert_paths(stack_dir, "demo-1")
    ca = stack_dir / "ca.pem"
    with tls_server(paths.fullchain, paths.key) as port:
        assert handshake(port, ca, "127.0.0.1") == b"hello"
        assert handshake(port, ca, "ollama.test") == b"hello"
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            handshake(port, ca, "other.test")
        other_ca, _ = ensure_ca(tmp_path / "ssl" / "other", ["127.0.0.1"])
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            handshake(port, other_ca, "127.0.0.1")


def test_unchanged_request_reuses_files(stack_dir):
    first = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1", "ollama.test"])
    paths = server_cert_paths(stack_dir, "demo-1")
    contents = [p.read_bytes() for p in paths]
    again = ensure_server_cert(stack_dir, "demo-1", ["ollama.test", "127.0.0.1"])
    assert again == (first[0], first[1], False)
    assert [p.read_bytes() for p in paths] == contents


def test_changed_names_reissue(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    serial = describe(cert)["serial"]
    _, _, changed = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1", "ai.example.org"])
    assert changed and describe(cert)["sans"] == ["127.0.0.1", "ai.example.org"]
    assert describe(cert)["serial"] != serial
    _, _, changed = ensure_server_cert(stack_dir, "demo-1", ["ai.example.org"])
    assert changed and describe(cert)["sans"] == ["ai.example.org"]


def test_near_expiry_reissues(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"], days=20, renew_before_days=10)
    assert describe(cert)["days_left"] in (19, 20)
    assert not ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"], days=20, renew_before_days=10)[2]
    assert ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])[2]
    assert describe(cert)["days_left"] in (396, 397)


def test_new_ca_reissues_and_verifies(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    (stack_dir / "ca.pem").unlink()
    (stack_dir / "ca-key.pem").unlink()
    assert ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])[2]
    assert openssl_verify(stack_dir / "ca.pem", cert, "-verify_ip", "127.0.0.1").returncode == 0


def test_replaced_key_reissues(stack_dir):
    ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    other = stack_dir.parent / "other"
    ensure_server_cert(other, "demo-1", ["127.0.0.1"])
    paths = server_cert_paths(stack_dir, "demo-1")
    paths.key.write_bytes(server_cert_paths(other, "demo-1").key.read_bytes())
    assert ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])[2]


def test_key_files_are_0600_and_certs_0644(stack_dir):
    ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    paths = server_cert_paths(stack_dir, "demo-1")
    assert (mode(paths.key), mode(stack_dir / "ca-key.pem")) == (0o600, 0o600)
    assert (mode(paths.cert), mode(paths.fullchain), mode(stack_dir / "ca.pem")) == (0o644, 0o644, 0o644)
    assert not [p for p in stack_dir.iterdir() if p.name.startswith(".") and p.name != ".gitignore"], \
        "no temporary files left behind"


def test_describe_reports_status_fields(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["10.0.0.4", "ollama.test"])
    info = describe(cert)
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert info["issuer"] == "CN=ollastack demo CA,O=ollastack"
    assert info["sans"] == ["10.0.0.4", "ollama.test"] and info["serial"] == format(parsed.serial_number, "x")
    assert dt.datetime.fromisoformat(info["not_after"]) == parsed.not_valid_after_utc
    assert info["days_left"] in (396, 397)


def test_host_name_is_the_name_when_no_sans_given(stack_dir):
    cert, _, _ = ensure_server_cert(stack_dir, "demo.example.org", [])
    assert describe(cert)["sans"] == ["demo.example.org"]


@pytest.mark.parametrize("bad", ["not a name", "-bad.example.org", "a..b", "10.0.0.256"])
def test_bad_names_are_refused_in_one_line(stack_dir, bad):
    with pytest.raises(CertError) as caught:
        ensure_server_cert(stack_dir, "demo-1", [bad])
    assert "\n" not in str(caught.value) and repr(bad) in str(caught.value)
    assert not (stack_dir / "demo-1.pem").exists()


def test_bad_arguments_are_refused(stack_dir):
    with pytest.raises(CertError, match="host name"):
        ensure_server_cert(stack_dir, "../escape", ["127.0.0.1"])
    with pytest.raises(CertError, match="renew_before_days"):
        ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"], days=30, renew_before_days=30)


def test_mismatched_ca_key_is_an_error_not_a_silent_new_ca(stack_dir, tmp_path):
    ensure_ca(stack_dir, ["127.0.0.1"])
    other_cert, other_key = ensure_ca(tmp_path / "other", ["127.0.0.1"])
    (stack_dir / "ca-key.pem").write_bytes(other_key.read_bytes())
    with pytest.raises(CertError, match="does not belong to") as caught:
        ensure_ca(stack_dir, ["127.0.0.1"])
    assert "BEGIN" not in str(caught.value)


def test_expiring_ca_is_renewed_and_the_leaf_reissued(stack_dir, monkeypatch):
    cert, _, _ = ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    ca_cert = stack_dir / "ca.pem"
    old = ca_cert.read_bytes()
    real_now = certs._now
    almost = real_now() + dt.timedelta(days=certs.CA_DAYS - certs.CA_RENEW_DAYS - 1)
    monkeypatch.setattr(certs, "_now", lambda: almost)
    ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])      # the leaf itself has expired by then
    assert ca_cert.read_bytes() == old, "kept while more than CA_RENEW_DAYS are left"
    late = real_now() + dt.timedelta(days=certs.CA_DAYS - certs.CA_RENEW_DAYS + 1)
    monkeypatch.setattr(certs, "_now", lambda: late)
    assert ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])[2]
    renewed = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    assert ca_cert.read_bytes() != old and (renewed.not_valid_after_utc - late).days >= certs.CA_DAYS - 1
    x509.load_pem_x509_certificate(cert.read_bytes()).verify_directly_issued_by(renewed)


def test_key_file_mode_survives_umask(stack_dir):
    old = os.umask(0)
    try:
        ensure_server_cert(stack_dir, "demo-1", ["127.0.0.1"])
    finally:
        os.umask(old)
    assert mode(server_cert_paths(stack_dir, "demo-1").key) == 0o600
