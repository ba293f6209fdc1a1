#!/usr/bin/python3
"""Request a certificate with certbot (HTTP-01 through nginx's webroot) and explain a failure in one line.

Pushed to the host by deploy/certbot.py. certbot's full output goes to stderr first, then one line
that names the cause and what to do, ending with the reminder that the previous certificate stays.

Example::

    certbot-issue.py chat.example.com admin@example.com https://acme-v02.api.letsencrypt.org/directory \\
        /var/www/ollastack-acme
"""

import argparse
import os
import re
import subprocess
import sys

KEEPS = "the previous certificate keeps serving"


def certbot_command(args: argparse.Namespace) -> list[str]:
    # --force-renewal: the converge only calls this when a request is due (none yet, other server, expiring).
    return ["certbot", "certonly", "--non-interactive", "--agree-tos", "--no-eff-email", "--email", args.email,
            "--server", args.server, "--webroot", "--webroot-path", args.webroot, "--cert-name", args.domain,
            "-d", args.domain, "--force-renewal"]


def explain(output: str, domain: str, server: str) -> str:
    """One line naming why certbot failed; ``output`` is certbot's combined output."""
    kind = re.search(r"^\s*Type:\s*(\S+)", output, re.M)
    detail = re.search(r"^\s*Detail:\s*(.+)$", output, re.M)
    detail_text = detail.group(1).strip() if detail else ""
    url = f"http://{domain}/.well-known/acme-challenge/"
    if kind and kind.group(1) == "connection":
        return (f"the ACME server could not reach {url} on port 80 ({detail_text}): open port 80 to the internet "
                f"(cloud firewall rules and the host firewall) and check that {domain} resolves to this host; {KEEPS}")
    if kind and kind.group(1) == "dns":
        return f"the ACME server cannot resolve {domain} ({detail_text}): publish an A record for it; {KEEPS}"
    if kind and kind.group(1) == "unauthorized":
        return (f"the ACME server fetched a wrong answer from {url} ({detail_text}): {domain} may point at another "
                f"server; {KEEPS}")
    if kind and kind.group(1) == "rateLimited":
        return f"the ACME server refused for now: rate limited ({detail_text}); wait and run again; {KEEPS}"
    if "CERTIFICATE_VERIFY_FAILED" in output:
        return (f"certbot does not trust the TLS certificate of the ACME server {server}: set tls.acme_ca_bundle "
                f"to its CA file; {KEEPS}")
    if re.search(r"Max retries exceeded|Connection refused|Failed to establish|timed out", output):
        return f"certbot cannot reach the ACME server {server}: check the URL and the host's outbound HTTPS; {KEEPS}"
    last = [line for line in output.splitlines() if line.strip()][-1:] or ["no output"]
    return f"certbot failed: {detail_text or last[0].strip()}; {KEEPS}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("domain")
    parser.add_argument("email")
    parser.add_argument("server")
    parser.add_argument("webroot")
    parser.add_argument("--ca-bundle", default="", help="CA file certbot trusts for a private ACME server")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.ca_bundle:
        env["REQUESTS_CA_BUNDLE"] = args.ca_bundle
    result = subprocess.run(certbot_command(args), env=env, capture_output=True, text=True)
    if result.returncode == 0:
        print(f"certificate for {args.domain} issued by {args.server}")
        return 0
    output = result.stdout + result.stderr
    sys.stderr.write(output)
    print(f"error: no certificate for {args.domain}: {explain(output, args.domain, args.server)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
