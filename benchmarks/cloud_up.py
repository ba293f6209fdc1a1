"""Time a cloud ``create`` against the local emulators (Azure and Alibaba) with one latency model.

Every emulator request takes ``--latency`` seconds and every long-running operation ``--lro``
seconds (Azure: each PUT's ``Azure-AsyncOperation``; Alibaba: a VPC or vSwitch becoming Available,
an instance reaching Running), so the figures show what the step scheduling costs, not what the
real clouds cost. Per provider it prints the wall time of ``create`` next to the critical path of
the provider's own resource graph (its ``GRAPH``, what ``ollastack.cloud.plan.run`` schedules: the
longest chain of steps that must wait for each other, each weighted by its measured duration) and the serial sum of all steps (what a one-by-one create would take), plus the
request count and the wall time of the ``destroy`` that follows. ``--backends N`` (repeatable) times
a fleet of a gateway and N backends (``fleet.backends``, the graph's ``graph(stack)``): the backends'
chains run beside each other, so the wall time stays near the one host's while the serial sum grows.

Example::

    python -m benchmarks.cloud_up                       # both providers, 200 ms per request, 2 s per operation
    python -m benchmarks.cloud_up --provider alibaba --latency 0.05 --lro 1 --polling-interval 0.25
    python -m benchmarks.cloud_up --backends 1 --backends 2 --backends 4      # fleets of 1, 2 and 4 backends
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable


import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ollastack.cloud import Progress, alibaba, azure, plan
from ollastack.config import parse_stack
from ollastack.state import StackState
from tests.support.alibaba_emulator import AlibabaEmulator  # stand-ins under tests/
from tests.support.azure_emulator import AzureEmulator, loopback_only

ALIBABA_KEY_ID, ALIBABA_SECRET = "LTAI-bench", "bench-secret"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def critical_path(graph: dict[str, list[str]], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """Length of the longest dependency chain, each step weighted by its duration, and the chain.

    Example: ``critical_path({"a": [], "b": ["a"]}, {"a": 1, "b": 2})`` -> ``(3, ["a", "b"])``
    """
    done: dict[str, tuple[float, list[str]]] = {}

    def finish(step: str) -> tuple[float, list[str]]:
        if step not in done:
            before = max((finish(d) for d in graph[step]), default=(0.0, []), key=lambda f: f[0])
            done[step] = (before[0] + seconds[step], before[1] + [step])
        return done[step]

    return max((finish(step) for step in graph), key=lambda f: f[0])


def _keys(folder: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)   # Alibaba refuses ed25519
    private, public = folder / "id_rsa", folder / "id_rsa.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return public, private


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def azure_up(latency: float, lro: float, polling_interval: float, backends: int = 0) -> dict:
    """Run ``ollastack.cloud.azure.create`` (then ``destroy``) against the ARM emulator."""
    with tempfile.TemporaryDirectory() as tmp, AzureEmulator(trustme.CA(), latency=latency, lro_delay=lro) as arm:
        public, private = _keys(Path(tmp))
        os.environ.update({
            "REQUESTS_CA_BUNDLE": arm.ca_bundle(), "AZURE_AUTHORITY_HOST": arm.url,
            "AZURE_TENANT_ID": "benchmark", "AZURE_CLIENT_ID": arm.client_id,
            "AZURE_CLIENT_SECRET": arm.client_secret, "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "OLLASTACK_STATE_DIR": str(Path(tmp) / "state"), plan.POLL_ENV: str(polling_interval)})
        stack = parse_stack({
            "stack": {"name": "bench", "provider": "azure"},
            "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
            "azure": {"subscription_id": "benchmark", "resource_manager_url": arm.url, "dns_label": "bench-chat"},
            "fleet": {"backends": backends}})
        timings: dict[str, tuple[float, float]] = {}
        wall = _timed(lambda: azure.create(stack, StackState.load("bench", "azure"), lambda line: None,
                                           timings=timings))
        requests = len(arm.requests)
        down = _timed(lambda: azure.destroy(stack, StackState.load("bench"), lambda line: None))
        steps = {name: end - start for name, (start, end) in timings.items()}
        return {"wall": wall, "graph": azure.graph(stack), "steps": steps, "requests": requests, "down": down}


def alibaba_up(latency: float, lro: float, polling_interval: float, backends: int = 0) -> dict:
    """Run ``ollastack.cloud.alibaba.create`` (then ``destroy``) against the ECS+VPC emulator."""
    os.environ.update(ALIBABA_CLOUD_ACCESS_KEY_ID=ALIBABA_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET=ALIBABA_SECRET)
    timing = alibaba.Timing(poll_s=polling_interval, backoff_ms=100)
    with tempfile.TemporaryDirectory() as tmp, AlibabaEmulator(
            access_key_id=ALIBABA_KEY_ID, access_key_secret=ALIBABA_SECRET, latency=latency,
            instance_start_s=lro, network_ready_s=lro, instance_delete_s=lro) as emu:
        public, private = _keys(Path(tmp))
        os.environ["OLLASTACK_STATE_DIR"] = str(Path(tmp) / "state")
        stack = parse_stack({"stack": {"name": "bench", "provider": "alibaba"},
                             "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                             "alibaba": {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url},
                             "fleet": {"backends": backends}})
        timings: dict[str, tuple[float, float]] = {}
        quiet = Progress(stream=io.StringIO())
        wall = _timed(lambda: alibaba.create(stack, StackState.load("bench", "alibaba"), quiet, timing,
                                             timings=timings))
        requests = len(emu.requests)
        down = _timed(lambda: alibaba.destroy(stack, StackState.load("bench"), quiet, timing))
        steps = {name: end - start for name, (start, end) in timings.items()}
        return {"wall": wall, "graph": alibaba.graph(stack), "steps": steps, "requests": requests, "down": down}


PROVIDERS = {"azure": azure_up, "alibaba": alibaba_up}


def table(results: dict[str, dict]) -> str:
    """One row per provider (and fleet size): up wall time, critical path, serial sum, requests, down wall time, chain."""
    header = (f"{'provider':<19} {'up wall':>8} {'critical path':>14} {'serial sum':>11} {'requests':>9} "
              f"{'down wall':>10}  critical chain")
    lines = [header]
    for name, figures in results.items():
        path, chain = critical_path(figures["graph"], figures["steps"])
        lines.append(f"{name:<19} {figures['wall']:>6.2f} s {path:>12.2f} s {sum(figures['steps'].values()):>9.2f} s "
                     f"{figures['requests']:>9} {figures['down']:>8.2f} s  {' -> '.join(chain)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=sorted(PROVIDERS), action="append",
                        help="only this provider (repeatable; default: all)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds added to every request (0.2)")
    parser.add_argument("--lro", type=float, default=2.0, help="seconds each long-running operation takes (2)")
    parser.add_argument("--polling-interval", type=float, default=0.5, help="status polling interval, seconds (0.5)")
    parser.add_argument("--steps", action="store_true", help="also print each step's duration")
    parser.add_argument("--backends", type=int, action="append",
                        help="time a fleet of this many backends (fleet.backends; repeatable; default: one host)")
    args = parser.parse_args()
    loopback_only()
    # Both SDKs ignore NO_PROXY: a proxy variable would send the loopback requests to the proxy.
    for var in PROXY_VARS:
        os.environ.pop(var, None)
    results = {name + (f" backends={n}" if n else ""): PROVIDERS[name](args.latency, args.lro, args.polling_interval, n)
               for name in (args.provider or PROVIDERS) for n in (args.backends or [0])}
    print(f"emulators: {args.latency * 1000:.0f} ms per request, {args.lro:.1f} s per long-running operation, "
          f"polling every {args.polling_interval:.2f} s")
    print(table(results))
    if args.steps:
        for name, figures in results.items():
            print(f"{name} steps: " + ", ".join(f"{step} {s:.2f} s" for step, s in figures["steps"].items()))


if __name__ == "__main__":
    main()
