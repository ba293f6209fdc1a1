"""Time a cloud ``create`` against the local emulators, with a fixed latency per call.

Prints the wall time of ``create`` next to the critical path of the resource graph (the longest
chain of steps that must wait for each other) and the serial sum of all steps (what a one-by-one
create would take). Step times are read from what the emulator received: a step spans from its
first request (the existence check) to its last (the final GET after the operation finished).

Example::

    python benchmarks/cloud_up.py                       # 200 ms per request, 2 s per operation
    python benchmarks/cloud_up.py --latency 0.05 --lro 1 --polling-interval 0.25
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trustme  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

from ollastack.cloud import azure  # noqa: E402
from ollastack.config import parse_stack  # noqa: E402
from ollastack.state import StackState  # noqa: E402
from tests.azure_emulator import AzureEmulator, loopback_only  # noqa: E402

# Azure's resource graph: each step with the steps it waits for.
AZURE_GRAPH = {
    "resourcegroups": [],
    "virtualnetworks": ["resourcegroups"],
    "networksecuritygroups": ["resourcegroups"],
    "publicipaddresses": ["resourcegroups"],
    "networkinterfaces": ["virtualnetworks", "networksecuritygroups", "publicipaddresses"],
    "virtualmachines": ["networkinterfaces"],
}


def critical_path(graph: dict[str, list[str]], seconds: dict[str, float]) -> float:
    """Length of the longest dependency chain, each step weighted by its duration."""
    done: dict[str, float] = {}

    def finish(step: str) -> float:
        if step not in done:
            done[step] = seconds[step] + max((finish(d) for d in graph[step]), default=0.0)
        return done[step]

    return max(finish(step) for step in graph)


def _keys(folder: Path) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / "id_ed25519", folder / "id_ed25519.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public, private


def azure_up(latency: float, lro: float, polling_interval: float) -> dict[str, float]:
    """Run ``ollastack.cloud.azure.create`` against the ARM emulator; return the figures."""
    with tempfile.TemporaryDirectory() as tmp, AzureEmulator(trustme.CA(), latency=latency, lro_delay=lro) as arm:
        public, private = _keys(Path(tmp))
        os.environ.update({
            "REQUESTS_CA_BUNDLE": arm.ca_bundle(), "AZURE_AUTHORITY_HOST": arm.url,
            "AZURE_TENANT_ID": "benchmark", "AZURE_CLIENT_ID": arm.client_id,
            "AZURE_CLIENT_SECRET": arm.client_secret, "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "OLLASTACK_STATE_DIR": str(Path(tmp) / "state")})
        for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            os.environ.pop(var, None)
        stack = parse_stack({
            "stack": {"name": "bench", "provider": "azure"},
            "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
            "azure": {"subscription_id": "benchmark", "resource_manager_url": arm.url,
                      "polling_interval": polling_interval, "dns_label": "bench-chat"}})
        started = time.monotonic()
        azure.create(stack, StackState.load("bench", "azure"), lambda line: None)
        wall = time.monotonic() - started
        steps = {}
        for step in AZURE_GRAPH:
            seen = arm.seen(rtype=step)
            steps[step] = max(r.ended for r in seen) - min(r.started for r in seen)
        sign_in = sum(r.ended - r.started for r in arm.requests if "/oauth2/" in r.path or "well-known" in r.path)
        return {"wall": wall, "critical_path": critical_path(AZURE_GRAPH, steps), "serial": sum(steps.values()),
                "sign_in": sign_in, "requests": len(arm.requests), **{f"step {k}": v for k, v in steps.items()}}


PROVIDERS = {"azure": azure_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="azure")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds added to every request (0.2)")
    parser.add_argument("--lro", type=float, default=2.0, help="seconds each long-running operation takes (2)")
    parser.add_argument("--polling-interval", type=float, default=0.5, help="SDK polling interval, seconds (0.5)")
    args = parser.parse_args()
    loopback_only()
    figures = PROVIDERS[args.provider](args.latency, args.lro, args.polling_interval)
    print(f"{args.provider}: latency {args.latency}s/request, {args.lro}s/operation, "
          f"polling every {args.polling_interval}s")
    for name, value in figures.items():
        print(f"  {name:<28} {value:7.2f}" + ("" if name == "requests" else " s"))


if __name__ == "__main__":
    main()
