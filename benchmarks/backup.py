"""Backup and restore of the real Open WebUI holding 1,000 chats: time and size.

    python -m benchmarks.backup [--chats 1000]

One fresh Debian 12 lab host (stack ``backupbench``, pip route, CPU torch from ``$PIP_FIND_LINKS``)
converged by ``ollastack up``; the chats are created through Open WebUI's API (``POST /api/v1/chats/new``
through nginx, each with a two-message exchange), so the database grows as it does in use. Then
``ollastack backup`` and ``ollastack restore`` are timed end to end on the control machine (SSH,
snapshot, transfer, stop/start and /health included). Needs root (lab hosts); the host is removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.lab.test_lab_openwebui import ADMIN, WebUIStack, request, signin
from tests.support.standin.build_archive import build_archive


def timed(stack: WebUIStack, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = stack.ollastack(*args, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"ollastack {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return time.monotonic() - started, result


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ollastack-bench-backup-") as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (tmp / "archive").mkdir()
        archives = {"0.13.3": build_archive(tmp / "archive", "0.13.3")}
        stack = WebUIStack("backupbench", tmp, (key.with_suffix(".pub"), key), archives,
                           {"install": "pip", "find_links": os.environ.get("PIP_FIND_LINKS", "/opt/wheels")})
        try:
            converge_s, result = timed(stack, "--json", "up")
            base = f"https://{json.loads(result.stdout)['hosts'][0]['address']}"
            token = signin(base, stack.ca, ADMIN, stack.password())[1]["token"]
            started = time.monotonic()
            for n in range(args.chats):
                messages = [{"role": "user", "content": f"question {n} " * 20},
                            {"role": "assistant", "content": f"answer {n} " * 60}]
                status, body = request(f"{base}/api/v1/chats/new", stack.ca,
                                       {"chat": {"title": f"chat {n}", "messages": messages}}, token=token)
                if status != 200:
                    raise SystemExit(f"chat {n}: {status} {body[:200]!r}")
            fill_s = time.monotonic() - started
            backup_s, result = timed(stack, "backup")
            path = Path(result.stdout.strip())
            db_mb, all_mb = (path / "webui.db").stat().st_size / 1e6, size_mb(path)
            restore_s, _ = timed(stack, "restore")
        finally:
            stack.ollastack("lab", "down")
    print(f"first converge (ollastack up, pip route): {converge_s:.0f} s")
    print(f"{args.chats} chats through the API: {fill_s:.1f} s")
    print("| chats | webui.db | backup (all files) | ollastack backup | ollastack restore |")
    print("|---|---|---|---|---|")
    print(f"| {args.chats} | {db_mb:.1f} MB | {all_mb:.1f} MB | {backup_s:.1f} s | {restore_s:.1f} s |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
