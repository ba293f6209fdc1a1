"""Create time of an Alibaba stack against the local ECS+VPC emulator with fixed latencies.

Every emulator call takes ``--latency`` seconds and an instance needs ``--start`` seconds to reach
Running, so the figures show what the step scheduling costs, not what the real cloud costs.
Prints the concurrent create's wall time, the critical path (longest dependency chain of measured
step durations), the serial sum (all step durations added up) and a measured one-at-a-time run.

    python benchmarks/cloud_up_alibaba.py --latency 0.2 --start 2
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from alibaba_emulator import AlibabaEmulator  # noqa: E402  (a stand-in under tests/)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from ollastack.cloud import Progress, alibaba  # noqa: E402
from ollastack.config import parse_stack  # noqa: E402
from ollastack.state import StackState  # noqa: E402

KEY_ID, SECRET = "LTAI-bench", "bench-secret"


def critical_path(timings: dict[str, tuple[float, float]]) -> tuple[float, list[str]]:
    """Longest chain through alibaba.DEPENDENCIES, weighting each step by its measured duration."""
    finish: dict[str, tuple[float, list[str]]] = {}
    for name, deps in alibaba.DEPENDENCIES.items():
        before = max((finish[d] for d in deps), default=(0.0, []), key=lambda f: f[0])
        start, end = timings[name]
        finish[name] = (before[0] + end - start, before[1] + [name])
    return max(finish.values(), key=lambda f: f[0])


def stack_for(emu: AlibabaEmulator, workdir: Path, name: str):
    key = Ed25519PrivateKey.generate()
    private, public = workdir / f"{name}_key", workdir / f"{name}_key.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return parse_stack({"stack": {"name": name, "provider": "alibaba"},
                        "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                        "alibaba": {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url}})


def measure(emu: AlibabaEmulator, stack, timing: alibaba.Timing, workers: int | None) -> dict:
    timings: dict[str, tuple[float, float]] = {}
    calls = len(emu.requests)
    started = time.monotonic()
    alibaba.create(stack, StackState.load(stack.stack.name, "alibaba"), Progress(stream=io.StringIO()), timing,
                   timings=timings, workers=workers)
    wall = time.monotonic() - started
    created_calls = len(emu.requests) - calls
    started = time.monotonic()
    alibaba.destroy(stack, StackState.load(stack.stack.name), Progress(stream=io.StringIO()), timing)
    return {"wall": wall, "timings": timings, "calls": created_calls, "destroy": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per emulator call")
    parser.add_argument("--start", type=float, default=2.0, help="seconds until an instance is Running")
    parser.add_argument("--network-ready", type=float, default=0.0, help="seconds until a VPC/vSwitch is Available")
    parser.add_argument("--poll", type=float, default=0.5, help="status poll interval")
    args = parser.parse_args()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        os.environ.pop(var, None)
    os.environ.update(ALIBABA_CLOUD_ACCESS_KEY_ID=KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET)
    timing = alibaba.Timing(poll_s=args.poll, backoff_ms=100)
    with tempfile.TemporaryDirectory() as tmp, AlibabaEmulator(
            access_key_id=KEY_ID, access_key_secret=SECRET, latency=args.latency, instance_start_s=args.start,
            network_ready_s=args.network_ready, instance_delete_s=args.start / 2) as emu:
        os.environ["OLLASTACK_STATE_DIR"] = tmp
        concurrent = measure(emu, stack_for(emu, Path(tmp), "bench"), timing, None)
        serial = measure(emu, stack_for(emu, Path(tmp), "serial"), timing, 1)
    path, chain = critical_path(concurrent["timings"])
    steps = concurrent["timings"]
    print(f"emulator: {args.latency * 1000:.0f} ms per call, instance start {args.start:.1f} s, poll {args.poll:.1f} s")
    print("step durations: " + ", ".join(f"{n} {e - s:.2f} s" for n, (s, e) in steps.items()))
    print(f"create wall time (concurrent): {concurrent['wall']:.2f} s  ({concurrent['calls']} API calls)")
    print(f"critical path:                 {path:.2f} s  ({' -> '.join(chain)})")
    print(f"serial sum of steps:           {sum(e - s for s, e in steps.values()):.2f} s")
    print(f"create wall time (one worker): {serial['wall']:.2f} s  ({serial['calls']} API calls)")
    print(f"destroy wall time:             {concurrent['destroy']:.2f} s")


if __name__ == "__main__":
    main()
