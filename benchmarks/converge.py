"""Converge timings on one fresh lab host: first converge, no-op re-converge, and pyinfra's floor.

    python -m benchmarks.converge [--runs 3]

The floor is pyinfra running a single no-op command (``exec -- true``) on the same host: what any
converge costs before doing anything (start-up, inventory, SSH connection). Needs root (lab hosts).
Ollama is the test stand-in (tests/support/standin), installed from an archive like a release.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from tests.support.repo import REPO
from tests.support.standin.build_archive import build_archive

STACK = "bench"


def timed(cmd: list[str], env: dict) -> float:
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="repetitions of the no-op and floor runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id")], check=True)
        archive, sha = build_archive(tmp, "0.13.3")
        config = tmp / "stack.toml"
        config.write_text(f'[stack]\nname = "{STACK}"\n[access]\nadmin_cidrs = ["198.51.100.0/24"]\n'
                          f'ssh_public_key = "{tmp}/id.pub"\nssh_private_key = "{tmp}/id"\n'
                          f'[ollama]\narchive = "{archive}"\nsha256 = "{sha}"\n'
                          # The spine only: Open WebUI's install is measured by its own tests.
                          '[openwebui]\ninstall = "none"\n')
        env = dict(__import__("os").environ, OLLASTACK_CONFIG=str(config), OLLASTACK_SSL_DIR=str(tmp / "ssl"))
        ollastack = [sys.executable, "-m", "ollastack.cli"]
        pyinfra = [sys.executable, "-m", "pyinfra", "-y", "inventories/lab.py"]
        try:
            lab_up = timed([*ollastack, "lab", "up", "--hosts", "1"], env)
            # As `ollastack up` does before it converges (not part of the converge figures).
            subprocess.run([sys.executable, "-m", "ollastack.certs", "inventories/lab.py"], cwd=REPO, env=env,
                           check=True, capture_output=True)
            first = timed([*pyinfra, "deploy/site.py"], env)
            noop = [timed([*pyinfra, "deploy/site.py"], env) for _ in range(args.runs)]
            floor = [timed([*pyinfra, "exec", "--", "true"], env) for _ in range(args.runs)]
        finally:
            subprocess.run([*ollastack, "lab", "down"], env=env, capture_output=True)
    print(f"lab host up (image cached):   {lab_up:6.1f} s")
    print(f"first converge:               {first:6.1f} s")
    print(f"no-op re-converge (median):   {statistics.median(noop):6.1f} s   runs: {', '.join(f'{t:.1f}' for t in noop)}")
    print(f"floor, pyinfra exec true:     {statistics.median(floor):6.1f} s   runs: {', '.join(f'{t:.1f}' for t in floor)}")


if __name__ == "__main__":
    main()
