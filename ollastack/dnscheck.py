"""Pre-flight for Let's Encrypt: does the certificate's domain resolve to the host it is for?

Checked from the control machine before anything is requested, because an ACME server that is sent
to the wrong address fails the challenge and counts it against the account's rate limits. A
resolver can be named (``tls.dns_server``) for split-horizon setups and tests; otherwise the
control machine's own resolver answers.

Example::

    from ollastack.dnscheck import domain_problem
    if problem := domain_problem("chat.example.com", "198.51.100.7"):
        raise SystemExit(problem)
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct

from ollastack.config import split_host_port

TIMEOUT_S = 3.0


class DnsError(Exception):
    """The resolver gave no usable answer; the message says why."""


def _query(name: str) -> tuple[int, bytes]:
    ident = random.randrange(1 << 16)
    labels = b"".join(bytes([len(part)]) + part.encode("idna") for part in name.rstrip(".").split("."))
    # Header: id, flags = recursion desired, one question; then QNAME, QTYPE A, QCLASS IN.
    return ident, struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def _skip_name(packet: bytes, offset: int) -> int:
    while True:
        length = packet[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + length


def _a_records(packet: bytes, ident: int) -> list[str]:
    got_id, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", packet[:12])
    if got_id != ident:
        raise DnsError("the resolver answered another query")
    rcode = flags & 0xF
    if rcode == 3:
        return []
    if rcode:
        raise DnsError(f"the resolver answered with error code {rcode}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(packet, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(packet, offset)
        rtype, rclass, _, length = struct.unpack("!HHIH", packet[offset:offset + 10])
        offset += 10
        if rtype == 1 and rclass == 1 and length == 4:
            addresses.append(socket.inet_ntoa(packet[offset:offset + 4]))
        offset += length
    return addresses


def resolve(name: str, server: str = "") -> list[str]:
    """IPv4 addresses of ``name``: asked of ``server`` ("10.0.0.2" or "10.0.0.2:5353"), else the system resolver.

    Example: ``resolve("chat.example.com", "127.0.0.1:8053") == ["10.213.0.10"]``
    """
    if not server:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        return sorted({str(info[4][0]) for info in infos})
    address, port = split_host_port(server, default_port=53)
    ident, query = _query(name)
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT_S)
        try:
            sock.sendto(query, (address, port))
            packet, _ = sock.recvfrom(4096)
        except OSError as exc:
            raise DnsError(f"no answer from the resolver {server} ({exc.strerror or exc})") from None
    return _a_records(packet, ident)


def domain_problem(domain: str, address: str, server: str = "") -> str | None:
    """Why ``domain`` cannot get a certificate for the host at ``address``, or None when it resolves there."""
    skip = "or set tls.check_dns = false if the ACME server sees other DNS than this machine"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        address = (resolve(address, server) or [address])[0]
    try:
        found = resolve(domain, server)
    except DnsError as exc:
        return f"tls.domain {domain}: cannot check where it points: {exc}; name a working tls.dns_server, {skip}"
    via = f" (asked {server})" if server else ""
    if not found:
        return f"tls.domain {domain} does not resolve{via}: add an A record pointing at {address}, {skip}"
    if address not in found:
        return (f"tls.domain {domain} resolves to {', '.join(found)}{via}, not to the host's address {address}: "
                f"point its A record at {address}, {skip}")
    return None
