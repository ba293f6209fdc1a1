"""Legacy TLS probes that really offer TLS 1.0/1.1, so that a refusal is the server's.

Debian's OpenSSL 3 client (security level 2) has no cipher or signature algorithm left for TLS 1.0
and 1.1: asked for them, it gives up before or during the handshake whatever the server allows.
``-cipher DEFAULT:@SECLEVEL=0`` gives them back, and the server alone decides.

Example::

    probe = offer("10.213.0.10", 443, "tls1")
    assert not probe.done and "alert protocol version" in probe.output
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


@dataclass
class Handshake:
    done: bool
    output: str


def offer(address: str, port: int, version: str) -> Handshake:
    """``openssl s_client -<version>`` at security level 0; ``done`` when a cipher was agreed."""
    result = subprocess.run(["openssl", "s_client", "-connect", f"{address}:{port}", f"-{version}",
                             "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", address],
                            input="", capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr
    agreed = re.search(r"^New, (TLSv[\d.]+|SSLv3), Cipher is (\S+)", output, re.MULTILINE)
    return Handshake(result.returncode == 0 and agreed is not None and agreed.group(2) != "(NONE)", output)
