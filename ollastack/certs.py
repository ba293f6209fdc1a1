"""A private CA per stack and the server certificates it signs, written under ``ssl/<stack>/``.

Files in a stack's directory: ``ca.pem`` and ``ca-key.pem`` (the CA), and per host ``<host>.pem``
(leaf), ``<host>-fullchain.pem`` (leaf + CA: what nginx serves) and ``<host>-key.pem``. Keys are
0600 and every file is replaced atomically. Calls are idempotent: a certificate is re-issued only
when its CA, its names or its remaining lifetime no longer fit.

Example::

    from ollastack.certs import ensure_server_cert, ssl_dir

    cert, key, changed = ensure_server_cert(ssl_dir("demo"), "demo-1", ["10.0.0.4", "ai.example.org"])

The CA lives CA_DAYS (2 years) and is name-constrained to the stack's server names, so even a
stolen ca-key.pem cannot mint a certificate a browser that imported ca.pem would accept for
another site.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ollastack.state import private_dir, stack_home, write_atomic

# Two years: a CA users import into their browser should not outlive the stack by a decade.
CA_DAYS = 730
# A CA this close to expiry is replaced by the converge, so leaves are never cut short by their issuer.
CA_RENEW_DAYS = 60
SSL_ENV = "OLLASTACK_SSL_DIR"
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,252}$")
DNS_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CertError(Exception):
    """Certificate files that cannot be used as they are; the message says what to do."""


class ServerCertPaths(NamedTuple):
    cert: Path
    fullchain: Path
    key: Path


def ssl_dir(stack_name: str, root: str | Path | None = None) -> Path:
    """Where a stack's CA and certificates live: ``ssl_dir("demo")`` is ``<stack file's dir>/ssl/demo``.

    The root is ``$OLLASTACK_SSL_DIR`` when set, else ``ssl`` beside the stack file, so the same
    CA is found whatever directory a command runs from.
    """
    return Path(root or os.environ.get(SSL_ENV) or stack_home() / "ssl").absolute() / stack_name


def server_cert_paths(stack_dir: str | Path, host_name: str) -> ServerCertPaths:
    """The three files of one host: ``server_cert_paths("ssl/demo", "demo-1").fullchain``."""
    if not HOST_NAME_RE.match(host_name):
        raise CertError(f"host name {host_name!r} cannot name certificate files: use letters, digits, '.', '-'")
    base = Path(stack_dir)
    return ServerCertPaths(base / f"{host_name}.pem", base / f"{host_name}-fullchain.pem",
                           base / f"{host_name}-key.pem")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _same_key(cert: x509.Certificate, key) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return (cert.public_key().public_bytes(serialization.Encoding.DER, spki)
            == key.public_key().public_bytes(serialization.Encoding.DER, spki))


def _subtree(name: x509.GeneralName) -> x509.GeneralName:
    """The name-constraint subtree permitting one certificate name (a wildcard: its parent domain)."""
    if isinstance(name, x509.IPAddress):
        return x509.IPAddress(ipaddress.ip_network(name.value))
    return x509.DNSName(name.value.removeprefix("*."))


def _covers(ca_cert: x509.Certificate, names: set[x509.GeneralName]) -> bool:
    """Whether the CA's permitted subtrees allow every name in ``names``."""
    try:
        permitted = ca_cert.extensions.get_extension_for_class(x509.NameConstraints).value.permitted_subtrees or []
    except x509.ExtensionNotFound:
        return False
    for name in names:
        if isinstance(name, x509.IPAddress):
            ok = any(isinstance(p, x509.IPAddress) and isinstance(p.value, ipaddress.IPv4Network | ipaddress.IPv6Network)
                     and name.value in p.value for p in permitted)
        else:
            ok = any(isinstance(p, x509.DNSName) and (name.value == p.value or name.value.endswith("." + p.value))
                     for p in permitted)
        if not ok:
            return False
    return True


def _name_constraints(names: set[x509.GeneralName]) -> x509.NameConstraints:
    """Permit the stack's own names only; a name type the stack does not use is shut entirely.

    A type without any permitted subtree would be unconstrained (RFC 5280), so an IP-only stack
    permits DNS names under ``invalid`` (a reserved TLD, RFC 6761) and a DNS-only stack excludes
    every IP address.
    """
    permitted = sorted({_subtree(n) for n in names}, key=str)
    excluded = []
    if not any(isinstance(n, x509.DNSName) for n in permitted):
        permitted.append(x509.DNSName("invalid"))
    if not any(isinstance(n, x509.IPAddress) for n in permitted):
        excluded = [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")), x509.IPAddress(ipaddress.ip_network("::/0"))]
    return x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded or None)


def _load_ca(cert_path: Path, key_path: Path, names: set[x509.GeneralName]):
    """The existing CA as (cert, key), or None when there is none worth keeping.

    Not worth keeping: absent, expiring within CA_RENEW_DAYS, or not permitting one of ``names``.
    """
    if not cert_path.exists():
        return None
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - _now() < dt.timedelta(days=CA_RENEW_DAYS) or not _covers(cert, names):
        return None
    if not key_path.exists():
        raise CertError(f"{key_path} is missing: restore it, or delete {cert_path} to create a new CA "
                        "(clients must then trust the new ca.pem)")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not _same_key(cert, key):
        raise CertError(f"{key_path} does not belong to {cert_path}: restore the matching key, or delete both "
                        "to create a new CA (clients must then trust the new ca.pem)")
    return cert, key


def _new_ca(stack_name: str, names: set[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ollastack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"ollastack {stack_name} CA")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(_name_constraints(names), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def ensure_ca(stack_dir: str | Path, names: list[str]) -> tuple[Path, Path]:
    """Make sure the stack's CA exists and permits ``names``; return (ca.pem, ca-key.pem).

    EC P-256, CA:true pathlen 0, CA_DAYS long, name-constrained to ``names`` (each server name of
    the stack). It is made again, with a new key, when fewer than CA_RENEW_DAYS are left or when a
    name is not permitted (clients must then trust the new ca.pem). The stack name is the
    directory's name: ``ensure_ca("ssl/demo", ["10.0.0.4"])`` makes "ollastack demo CA".
    """
    stack_dir = Path(stack_dir)
    cert_path, key_path = stack_dir / "ca.pem", stack_dir / "ca-key.pem"
    wanted = {parse_san(n) for n in names}
    if _load_ca(cert_path, key_path, wanted) is None:
        private_dir(stack_dir.parent)
        private_dir(stack_dir)
        cert, key = _new_ca(stack_dir.resolve().name, wanted)
        # Key first: a crash in between leaves a key without a certificate, which the next run replaces.
        write_atomic(key_path, _key_pem(key), mode=0o600)
        write_atomic(cert_path, _pem(cert), mode=0o644)
    return cert_path, key_path


def parse_san(value: str) -> x509.GeneralName:
    """An IP address or a DNS name (``*.`` allowed first), decided by parsing it.

    >>> parse_san("10.0.0.4"), parse_san("AI.example.org")
    (<IPAddress(value=10.0.0.4)>, <DNSName(value='ai.example.org')>)
    """
    text = value.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    name = text.lower().rstrip(".")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    # An all-digit last label is a mistyped IP address (10.0.0.256), never a DNS name.
    if (not name or len(name) > 253 or labels[-1].isdigit()
            or not all(DNS_LABEL_RE.match(label) for label in labels)):
        raise CertError(f"certificate name {value!r} is neither an IP address nor a DNS name "
                        "(e.g. 10.0.0.4 or ai.example.org)")
    return x509.DNSName(name)


def _sans(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _reusable(paths: ServerCertPaths, ca_cert: x509.Certificate, wanted: set, renew_before: dt.timedelta) -> bool:
    """True when the files on disk already are what would be issued now."""
    if not all(p.exists() for p in paths):
        return False
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    return (set(_sans(cert)) == wanted
            and cert.not_valid_after_utc - _now() > renew_before
            and _same_key(cert, key)
            and paths.fullchain.read_text() == _pem(cert) + _pem(ca_cert))


def _issue(ca_cert, ca_key, host_name: str, sans: list[x509.GeneralName], days: int):
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host_name[:64])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def ensure_server_cert(stack_dir: str | Path, host_name: str, sans: list[str], days: int = 397,
                       renew_before_days: int = 30, ca_names: tuple[str, ...] | list[str] = ()) -> tuple[Path, Path, bool]:
    """Issue ``<host>.pem`` for ``sans`` (``host_name`` when empty) unless a fitting one exists.

    Returns (leaf certificate path, key path, changed); the fullchain nginx serves lies beside them
    (``server_cert_paths(stack_dir, host_name).fullchain``). Re-issued when the CA changed, the
    names differ, or fewer than ``renew_before_days`` days are left. ``ca_names``: the names of
    every host of the stack, which the CA must permit (this host's are always added).

    Example::

        cert, key, changed = ensure_server_cert("ssl/demo", "demo-1", ["127.0.0.1", "demo.local"])
    """
    if not 0 <= renew_before_days < days:
        raise CertError(f"renew_before_days ({renew_before_days}) must be at least 0 and below days ({days})")
    paths = server_cert_paths(stack_dir, host_name)
    wanted = [parse_san(s) for s in (sans or [host_name])]
    ca_cert_path, ca_key_path = ensure_ca(stack_dir, [*ca_names, *(sans or [host_name])])
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_key_path, set(wanted))
    if _reusable(paths, ca_cert, set(wanted), dt.timedelta(days=renew_before_days)):
        return paths.cert, paths.key, False
    cert, key = _issue(ca_cert, ca_key, host_name, list(dict.fromkeys(wanted)), days)
    write_atomic(paths.key, _key_pem(key), mode=0o600)
    write_atomic(paths.cert, _pem(cert), mode=0o644)
    write_atomic(paths.fullchain, _pem(cert) + _pem(ca_cert), mode=0o644)
    return paths.cert, paths.key, True


def host_names(domain: str, tls_names: list[str], name: str) -> list[str]:
    """Names and addresses a host's certificate carries: ``tls.domain``, the provider's names, then the
    host's inventory name (its address), each once.

    Example: ``host_names("chat.example.com", [], "10.0.0.4") == ["chat.example.com", "10.0.0.4"]``
    """
    return list(dict.fromkeys([*([domain] if domain else []), *tls_names, name]))


def issue_for_inventory(entries: list[tuple[str, dict]]) -> list[Path]:
    """Issue (or renew) the stack-CA certificate of every host of pyinfra inventory ``entries``.

    Runs on the control machine before pyinfra does (``ollastack up``, or ``python -m ollastack.certs
    INVENTORY`` before a plain ``pyinfra`` run), so that a converge, ``--dry`` included, only uploads
    files that exist. The CA permits every host's names, so issuing for the second host keeps the CA
    the first one's certificate came from. Returns the fullchain paths.

    Example: ``issue_for_inventory(pyinfra_hosts(stack, hosts))``
    """
    from ollastack.hostdata import defaults, key

    # A plain inventory may leave settings out: the deploys then use the defaults, and so does this.
    entries = [(address, {**defaults(), **data}) for address, data in entries]

    def names(address: str, data: dict) -> list[str]:
        return host_names(data[key("tls.domain")], data[key("tls_names")], address)

    issued = []
    for address, data in entries:
        stack_dir = ssl_dir(data[key("stack.name")])
        ca_names = [n for other, other_data in entries if other_data[key("stack.name")] == data[key("stack.name")]
                    for n in names(other, other_data)]
        label = data.get(key("name")) or address
        ensure_server_cert(stack_dir, label, names(address, data), days=data[key("tls.days")],
                           renew_before_days=data[key("tls.renew_before_days")], ca_names=list(dict.fromkeys(ca_names)))
        issued.append(server_cert_paths(stack_dir, label).fullchain)
    return issued


def inventory_entries(path: str | Path) -> list[tuple[str, dict]]:
    """The ``(name, data)`` hosts of a pyinfra inventory file (its top-level lists), as pyinfra reads them.

    Example: ``inventory_entries("inventories/lab.py")``
    """
    import runpy

    found = []
    for name, value in runpy.run_path(str(path)).items():
        if not name.startswith("_") and isinstance(value, (list, tuple)):
            found += [item for item in value if isinstance(item, tuple) and len(item) == 2
                      and isinstance(item[0], str) and isinstance(item[1], dict)]
    return found


def describe(cert_path: str | Path) -> dict:
    """What a status report shows about a certificate: issuer, not_after, days_left, sans, serial.

    >>> describe("ssl/demo/demo-1.pem")["days_left"]   # doctest: +SKIP
    396
    """
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    not_after = cert.not_valid_after_utc
    return {"issuer": cert.issuer.rfc4514_string(), "not_after": not_after.isoformat(),
            "days_left": (not_after - _now()).days, "sans": [str(name.value) for name in _sans(cert)],
            "serial": format(cert.serial_number, "x")}


def main(argv: list[str] | None = None) -> int:
    """``python -m ollastack.certs INVENTORY``: issue the certificates a plain ``pyinfra INVENTORY deploy/site.py``
    run uploads."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ollastack.certs INVENTORY (e.g. inventories/lab.py)", file=sys.stderr)
        return 2
    for path in issue_for_inventory(inventory_entries(args[0])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
