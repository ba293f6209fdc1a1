"""nginx in front of Open WebUI on real Debian 12 and 13 lab hosts, spoken to as an attacker would.

The container route with the Open WebUI stand-in (tests/support/webui_standin), which echoes the Host and
forwarding headers it receives. Checked from the control machine with raw sockets, Python's TLS
and the control machine's ``openssl s_client``: only the stack's names get an answer, the redirect
never reflects the client's Host, sign-in POSTs are rate-limited, TLS 1.2 offers exactly the
intended suites, forwarded headers cannot be spoofed, cookies are Secure.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ollastack.deploy.nginx import AUTH_BURST, TLS12_CIPHERS
from tests.support.labkit import ssh
from tests.lab.test_lab_openwebui import ADMIN, container_stack, request, signin

pytestmark = pytest.mark.lab

DOMAIN = "chat.nginxtest.example"


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def stack(request, tmp_path_factory, keypair, archives, standin_image):
    yield from container_stack(f"nginxtest-{request.param[:3]}", request.param, tmp_path_factory, keypair, archives,
                               standin_image)


@pytest.fixture(scope="module")
def address(stack) -> str:
    return stack.up_one()["address"]


@pytest.fixture(scope="module")
def converged(stack, address) -> None:
    stack.pyinfra()


def exchange(address: str, port: int, head: str, context: ssl.SSLContext | None = None, sni: str | None = None,
             body: str = "") -> bytes:
    """What the server sends back to one raw HTTP/1.1 request (b"" when it closes without answering)."""
    with socket.create_connection((address, port), timeout=15) as raw:
        sock = context.wrap_socket(raw, server_hostname=sni) if context else raw
        length = f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n" if body else ""
        sock.sendall((head + length + "Connection: close\r\n\r\n" + body).encode())
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (ConnectionResetError, ssl.SSLEOFError):
            pass
        return answer


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verified(stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca))


def test_unknown_host_gets_no_answer_on_443(converged, stack, address):
    # By address, as browsers and `up` reach a stack without a domain: no SNI, routed by Host.
    ok = exchange(address, 443, f"GET / HTTP/1.1\r\nHost: {address}\r\n", verified(stack), sni=address)
    assert ok.startswith(b"HTTP/1.1 200") and b"Open WebUI (stand-in)" in ok
    assert exchange(address, 443, "GET / HTTP/1.1\r\nHost: evil.example\r\n", verified(stack), sni=address) == b""
    assert exchange(address, 443, "GET /api/config HTTP/1.1\r\nHost: evil.example\r\n", unverified(),
                    sni="evil.example") == b""
    # Without a Host header nginx itself refuses the request, before any server is chosen.
    bare = exchange(address, 443, "GET / HTTP/1.1\r\n", unverified(), sni="evil.example")
    assert bare.startswith(b"HTTP/1.1 400") and b"stand-in" not in bare


def test_http_answers_only_the_stack_name_and_redirects_to_it(converged, address):
    assert exchange(address, 80, "GET /x HTTP/1.1\r\nHost: evil.example\r\n") == b""
    for host in (address, f"{address}:80"):
        answer = exchange(address, 80, f"GET /some/page?x=1 HTTP/1.1\r\nHost: {host}\r\n"
                                       "X-Forwarded-Host: evil.example\r\n").decode()
        assert answer.startswith("HTTP/1.1 301")
        assert f"\r\nLocation: https://{address}/some/page?x=1\r\n" in answer, answer


def test_upstream_sees_fixed_host_and_the_real_client_address(converged, stack, address, keypair):
    client = ssh(address, "echo ${SSH_CLIENT%% *}", keypair).stdout.strip()
    answer = exchange(address, 443, f"GET /standin/request HTTP/1.1\r\nHost: {address}\r\n"
                                    "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: evil.example\r\n",
                      verified(stack), sni=address)
    seen = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert seen == {"client": "127.0.0.1", "host": address, "x_forwarded_for": [client], "x_forwarded_host": None}


def test_server_version_hidden_and_security_headers_present(converged, stack, address):
    connection = http.client.HTTPSConnection(address, 443, timeout=15, context=verified(stack))
    for path in ("/", "/no-such-page"):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.getheader("Server") == "nginx"
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert response.getheader("Referrer-Policy") == "strict-origin-when-cross-origin"
        assert response.getheader("Content-Security-Policy") == "frame-ancestors 'self'"
        assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
    connection.close()
    assert "\r\nServer: nginx\r\n" in exchange(address, 80, f"GET / HTTP/1.1\r\nHost: {address}\r\n").decode()


def test_session_cookie_is_secure(converged, stack, address, keypair):
    env = json.loads(ssh(address, "podman inspect open-webui", keypair).stdout)[0]["Config"]["Env"]
    assert {"WEBUI_SESSION_COOKIE_SECURE=true", "WEBUI_AUTH_COOKIE_SECURE=true"} <= set(env)
    connection = http.client.HTTPSConnection(address, 443, timeout=15, context=verified(stack))
    connection.request("POST", "/api/v1/auths/signin", json.dumps({"email": ADMIN, "password": stack.password()}),
                       {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    cookie = response.getheader("Set-Cookie")
    assert response.status == 200 and cookie.startswith("token=") and "; Secure" in cookie, cookie
    connection.close()


def test_tls12_offers_exactly_the_intermediate_suites(converged, address):
    """Every suite this machine's OpenSSL can speak in TLS 1.2, offered alone: the accepted ones are the
    intended list's ECDSA half (the stack CA issues ECDSA certificates)."""
    listing = subprocess.run(["openssl", "ciphers", "-v", "ALL:@SECLEVEL=0"], capture_output=True, text=True,
                             check=True).stdout
    suites = [line.split()[0] for line in listing.splitlines() if line.split()[1] != "TLSv1.3"]
    assert len(suites) > 40 and "ECDHE-ECDSA-AES128-SHA" in suites

    def accepted(suite: str) -> bool:
        result = subprocess.run(["openssl", "s_client", "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0", "-noservername",
                                 "-connect", f"{address}:443"], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=30)
        return result.returncode == 0 and f"Cipher is {suite}" in result.stdout
    assert [s for s in suites if accepted(s)] == [s for s in suites if s in TLS12_CIPHERS and "ECDSA" in s]
    assert {s for s in TLS12_CIPHERS if "ECDSA" in s} <= set(suites)


def test_sign_in_attempts_are_rate_limited_per_client(converged, stack, address, keypair):
    """61 rapid wrong-password POSTs from the host itself (its own address, a client no other test uses):
    the first reaches Open WebUI, later ones meet 429; the control machine still signs in."""
    statuses = ssh(address, f"for i in $(seq 61); do curl -s -o /dev/null -w '%{{http_code}}\\n' "
                            f"--cacert /etc/ollastack/tls/ca.pem -H 'Content-Type: application/json' "
                            f"-d '{{\"email\": \"{ADMIN}\", \"password\": \"guess-'$i'\"}}' "
                            f"https://{address}/api/v1/auths/signin; done", keypair).stdout.split()
    assert len(statuses) == 61 and set(statuses) == {"400", "429"}, statuses
    assert statuses[:AUTH_BURST + 1] == ["400"] * (AUTH_BURST + 1)
    status, session = signin(f"https://{address}", stack.ca, ADMIN, stack.password())
    assert status == 200 and session["role"] == "admin"
    # GETs are not counted: the UI's session checks keep working for the throttled client too.
    assert ssh(address, f"curl -s -o /dev/null -w '%{{http_code}}' --cacert /etc/ollastack/tls/ca.pem "
                        f"https://{address}/api/v1/auths/", keypair).stdout == "401"


def converge_with_nginx_held(stack, address: str, keypair, held_s: float = 8) -> None:
    """``stack.pyinfra()`` with the nginx master stopped (SIGSTOP) until ``held_s`` after its reload signal is
    pending: a master that has not yet read the new site leaves its old workers serving the old one, so the
    converge must still be waiting then; let go, it returns."""
    master = ssh(address, "cat /run/nginx.pid", keypair).stdout.strip()
    assert master.isdigit(), master

    def signalled() -> bool:
        pending = ssh(address, f"grep ShdPnd /proc/{master}/status", keypair).stdout.split()[1]
        return bool(int(pending, 16) & 1)  # SIGHUP, the reload

    ssh(address, f"kill -STOP {master}", keypair)
    try:
        with ThreadPoolExecutor(1) as pool:
            converge = pool.submit(stack.pyinfra)
            deadline = time.monotonic() + 600
            while not signalled():
                if converge.done():
                    converge.result()
                    pytest.fail("the converge returned without reloading nginx")
                assert time.monotonic() < deadline, "no reload within 600 s"
                time.sleep(0.5)
            time.sleep(held_s)
            assert not converge.done(), "the converge returned while nginx still served the old site"
            ssh(address, f"kill -CONT {master}", keypair)
            converge.result()
    finally:
        ssh(address, f"kill -CONT {master}", keypair, check=False)


def test_with_a_domain_other_names_fail_the_handshake(converged, stack, address, keypair):
    """A stack with tls.domain: handshakes for other names, or none (by address), are refused; the domain works,
    and the sign-up settings reach the stand-in. The converge returns only once nginx serves the new site, and
    checks come right after it."""
    try:
        stack.write(openwebui={"enable_signup": True, "default_user_role": "user"}, extra=f'[tls]\ndomain = "{DOMAIN}"\n')
        converge_with_nginx_held(stack, address, keypair)
        for sni in ("evil.example", None):
            with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
                exchange(address, 443, f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n", unverified(), sni=sni)
        ok = exchange(address, 443, f"GET / HTTP/1.1\r\nHost: {DOMAIN}\r\n", verified(stack), sni=DOMAIN)
        assert ok.startswith(b"HTTP/1.1 200")
        assert exchange(address, 443, "GET / HTTP/1.1\r\nHost: evil.example\r\n", verified(stack), sni=DOMAIN) == b""
        redirect = exchange(address, 80, f"GET /a HTTP/1.1\r\nHost: {address}\r\n").decode()
        assert f"\r\nLocation: https://{DOMAIN}/a\r\n" in redirect, redirect
        seen = json.loads(exchange(address, 443, f"GET /standin/request HTTP/1.1\r\nHost: {address}\r\n",
                                   verified(stack), sni=DOMAIN).split(b"\r\n\r\n", 1)[1])
        assert seen["host"] == DOMAIN
        body = json.dumps({"email": "visitor@example.org", "password": "Visitor-Pass-1", "name": "Visitor"})
        answer = exchange(address, 443, f"POST /api/v1/auths/signup HTTP/1.1\r\nHost: {DOMAIN}\r\n", verified(stack),
                          sni=DOMAIN, body=body)
        assert answer.startswith(b"HTTP/1.1 200") and json.loads(answer.split(b"\r\n\r\n", 1)[1])["role"] == "user"
    finally:
        stack.write()
        stack.pyinfra()
    assert request(f"https://{address}/health", stack.ca)[0] == 200
