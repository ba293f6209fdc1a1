"""``systemd-analyze security`` exposure of ollastack's units on converged Debian 12 and 13 lab hosts.

    python -m benchmarks.unit_security [--releases bookworm trixie] [--keep]

One lab host per release (stack ``unitsec-<rel>``), converged with the whole site: Open WebUI by the pip
route on Debian 12 (the real release from the package index, CPU torch from ``$PIP_FIND_LINKS``; a
3 GB venv, minutes) and by the container route on Debian 13 (the stand-in image from tests/support/webui_standin,
loaded from an archive like a ``podman save`` of the real one; its unit is what Quadlet generates,
whatever the image). Prints one table: unit × release, exposure 0 (locked down) to 10 (unconfined).
Needs root (lab hosts); the hosts are removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path


from ollastack import lab
from tests.support.repo import REPO
from tests.support.standin.build_archive import build_archive
from tests.support.webui_standin.build_image import STANDIN_IMAGE, build_image

UNITS = ["ollama.service", "open-webui.service", "nginx.service", "ollastack-firewall.service"]


def openwebui_settings(release: str, tmp: Path) -> str:
    if release == "bookworm":
        return f'install = "pip"\nfind_links = {json.dumps(os.environ.get("PIP_FIND_LINKS", "/opt/wheels"))}\n'
    return (f'install = "container"\nimage = "{STANDIN_IMAGE}"\n'
            f'image_archive = {json.dumps(str(build_image(tmp / "image")))}\n')


def converge(release: str, tmp: Path, archive: tuple[Path, str]) -> tuple[dict, dict]:
    """A converged host of this release: (host, env of its stack)."""
    work = tmp / release
    work.mkdir()
    (work / "image").mkdir()
    path, sha = archive
    config = work / "stack.toml"
    config.write_text(f'[stack]\nname = "unitsec-{release[:3]}"\n[lab]\nrelease = "{release}"\n'
                      f'[access]\nadmin_cidrs = ["198.51.100.0/24"]\n'
                      f'ssh_public_key = "{tmp}/id.pub"\nssh_private_key = "{tmp}/id"\n'
                      f'[ollama]\narchive = "{path}"\nsha256 = "{sha}"\n'
                      f'[openwebui]\nadmin_email = "owner@example.org"\noffline = true\n'
                      f'{openwebui_settings(release, work)}')
    env = dict(os.environ, OLLASTACK_CONFIG=str(config), OLLASTACK_SSL_DIR=str(work / "ssl"),
               OLLASTACK_STATE_DIR=str(work / "state"))
    up = run([sys.executable, "-m", "ollastack.cli", "--json", "lab", "up", "--hosts", "1"], env)
    run([sys.executable, "-m", "ollastack.certs", "inventories/lab.py"], env)
    run([sys.executable, "-m", "ollastack.pyinfra_run", "-y", "inventories/lab.py", "deploy/site.py"], env)
    return json.loads(up)[0], env


def run(cmd: list[str], env: dict) -> str:
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def exposure(host: dict, key: Path, unit: str) -> str:
    """The overall exposure figure and its word (``1.6 OK``), or why there is none."""
    result = subprocess.run(["ssh", "-i", str(key), "-o", "BatchMode=yes",
                             "-o", f"UserKnownHostsFile={lab.known_hosts_path()}", f"root@{host['address']}",
                             f"systemd-analyze security --no-pager {unit}"], capture_output=True, text=True)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+ \w+)", result.stdout)
    return found.group(1) if found else "(no unit)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", nargs="+", default=["bookworm", "trixie"], choices=["bookworm", "trixie"])
    parser.add_argument("--keep", action="store_true", help="leave the lab hosts running")
    args = parser.parse_args()
    table: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / "id")], check=True)
        archive = build_archive(tmp, "0.13.3")
        envs = []
        try:
            for release in args.releases:
                host, env = converge(release, tmp, archive)
                envs.append(env)
                table[release] = {unit: exposure(host, tmp / "id", unit) for unit in UNITS}
        finally:
            if not args.keep:
                for env in envs:
                    subprocess.run([sys.executable, "-m", "ollastack.cli", "lab", "down"], cwd=REPO,
                                   env=env, capture_output=True)
    routes = {"bookworm": "Debian 12 (Open WebUI: pip)", "trixie": "Debian 13 (Open WebUI: container)"}
    header = ["unit", *(routes[r] for r in table)]
    rows = [[unit, *(table[r][unit] for r in table)] for unit in UNITS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
