"""Converge timings on fresh lab hosts, as one table of figures measured in the same run, with their ratios.

    python -m benchmarks.converge [--runs 5] [--first-runs 3] [--hosts 8] [--pip]

- floor: pyinfra running a single no-op command (``exec -- true``) on the host: what any converge costs
  before doing anything (start-up, inventory, SSH connection);
- no-op: a re-converge of the converged host, the spine (Open WebUI off) and the full site with Open WebUI on
  the container route (the lab's stand-in image, tests/support/webui_standin, loaded from an archive as
  tests/lab/test_lab_openwebui.py does), each against the floor of its own host;
- ``--pip``: the same for the pip route (the real Open WebUI, a 3 GB install from the package index and the
  wheelhouse in ``$PIP_FIND_LINKS``, default /opt/wheels): opt-in, its first converge takes minutes;
- first converge of a fresh host, against the by-hand floor: one shell script on an identical fresh host
  doing the same work by hand (``apt-get install`` of the same packages, unpack the same archive, write the
  same files, start the same services, pull the same model); medians of ``--first-runs`` of each, in turn
  (apt's downloads from the mirror vary by a second from one host to the next);
- 1 against ``--hosts`` hosts converged together, first and no-op (the no-op's one host is the first of those
  hosts alone, ``--limit``, taken in turn with the no-ops of all);
- the control machine's peak RSS and CPU time of each pyinfra run, and the lab hosts' CPU time in it (their
  cgroups' ``cpu.stat``), next to its wall time: the lab hosts run on the same cores as the control machine.

The checkout's modules are compiled first, as an installed package's are. Needs root (lab hosts) and GNU
time (``/usr/bin/time``, Debian's ``time``). Ollama is the test stand-in (tests/support/standin), installed from
an archive like a release.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ollastack import lab
from ollastack.deploy.base import PACKAGES
from tests.support.repo import REPO
from tests.support.standin.build_archive import build_archive
from tests.support.webui_standin.build_image import STANDIN_IMAGE, build_image

SSH_OPTS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
# The lab hosts' Debian release (the pip route's host is Debian 12: its Python).
RELEASE = "trixie"
# Everything the converge writes on a lab host (no GPU, no Open WebUI, self-signed TLS), copied from the
# converged host so that the by-hand script writes exactly the same files.
WRITTEN = ["etc/apt/apt.conf.d/90ollastack", "etc/ollastack", "etc/systemd/system/ollama.service",
           "etc/systemd/system/ollama.service.d", "etc/systemd/system/ollastack-firewall.service",
           "etc/nginx/sites-available/ollastack.conf", "usr/local/lib/ollastack", "var/www/ollastack-acme", "var/lib/ollastack"]
BY_HAND = """set -eu
export DEBIAN_FRONTEND=noninteractive
tar -xzf /root/written.tgz -C /
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends {packages} >/dev/null
nft -c -f /etc/ollastack/firewall.nft && nft -f /etc/ollastack/firewall.nft
useradd --system --home-dir /usr/share/ollama --create-home --shell /bin/false ollama
install -d -o ollama -g ollama /usr/share/ollama/.ollama /usr/share/ollama/.ollama/models
echo {sha256}'  /root/{archive}' | sha256sum -c --status
stage=$(mktemp -d) && tar -xzf /root/{archive} -C "$stage"
install -m 0755 "$stage/bin/ollama" /usr/local/bin/ollama
ln -sf /etc/nginx/sites-available/ollastack.conf /etc/nginx/sites-enabled/ollastack.conf
rm -f /etc/nginx/sites-enabled/default
systemctl daemon-reload
systemctl enable --now --quiet ollastack-firewall ollama
nginx -t -q && systemctl reload nginx
for i in $(seq 120); do curl -fsS --max-time 2 127.0.0.1:11434/api/version >/dev/null && break; sleep 0.5; done
python3 /usr/local/lib/ollastack/ollama-pull.py 127.0.0.1:11434 llama3.2:1b
"""


@dataclass
class Run:
    wall: float
    cpu: float
    rss_mib: float
    lab_cpu: float = 0.0


def measured(cmd: list[str], env: dict, stdin: str | None = None, hosts: list[str] = ()) -> Run:
    """Run ``cmd`` to success; its wall time, its CPU time on this machine (from wait4), its peak RSS and the CPU
    time the lab ``hosts`` used meanwhile.

    The peak RSS comes from GNU time's own child: a child forked from this process starts with this
    process's pages, so wait4's maxrss of a direct child would report this benchmark's size.
    """
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rss:
        lab_before = lab.cpu_seconds(list(hosts))
        started = time.monotonic()
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], cwd=REPO, env=env,
                                   stdin=subprocess.PIPE if stdin else None,
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
        if stdin:
            process.stdin.write(stdin)
            process.stdin.close()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        lab_cpu = lab.cpu_seconds(list(hosts)) - lab_before
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            out.seek(0)
            sys.exit(f"{shlex.join(cmd)} failed:\n{out.read().decode()[-4000:]}")
        peak_kib = int(rss.read().split()[-1])
    return Run(wall, usage.ru_utime + usage.ru_stime, peak_kib / 1024, lab_cpu)


class Stack:
    """One lab stack of the benchmark: its own stack file, hosts and certificates."""

    def __init__(self, tmp: Path, name: str, key: Path, archive: Path, sha: str, openwebui: str = 'install = "none"',
                 release: str = RELEASE):
        self.dir = tmp / name
        self.dir.mkdir()
        self.name, self.key = name, key
        self.hosts: list[str] = []
        config = self.dir / "stack.toml"
        config.write_text(f'[stack]\nname = "{name}"\nprovider = "lab"\n[lab]\nrelease = "{release}"\n'
                          f'[access]\nadmin_cidrs = ["198.51.100.0/24"]\n'
                          f'ssh_public_key = "{key}.pub"\nssh_private_key = "{key}"\n'
                          f'[ollama]\narchive = "{archive}"\nsha256 = "{sha}"\nmodels = ["llama3.2:1b"]\n'
                          f'[openwebui]\n{openwebui}\n')
        self.env = dict(os.environ, OLLASTACK_CONFIG=str(config), OLLASTACK_SSL_DIR=str(self.dir / "ssl"),
                        OLLASTACK_STATE_DIR=str(self.dir / "state"))

    def up(self, hosts: int) -> list[dict]:
        result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--json", "lab", "up", "--hosts", str(hosts)],
                                env=self.env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"lab up {self.name} failed:\n{result.stderr[-4000:]}")
        # As `ollastack up` does before it converges (not part of the figures).
        subprocess.run([sys.executable, "-m", "ollastack.certs", "inventories/lab.py"], cwd=REPO, env=self.env,
                       check=True, capture_output=True)
        hosts = json.loads(result.stdout)
        self.hosts = [h["name"] for h in hosts]
        return hosts

    def pyinfra(self, *args: str, limit: str | None = None) -> Run:
        """pyinfra on this stack's hosts, or (``limit``) on that one of them alone."""
        only = ["--limit", limit] if limit else []
        return measured([sys.executable, "-m", "ollastack.pyinfra_run", "-y", *only, "inventories/lab.py", *args],
                        self.env, hosts=self.hosts)

    def down(self) -> None:
        subprocess.run([sys.executable, "-m", "ollastack.cli", "lab", "down"], env=self.env, capture_output=True)

    def ssh(self, address: str) -> list[str]:
        return ["ssh", "-i", str(self.key), *SSH_OPTS, "-o", f"UserKnownHostsFile={lab.known_hosts_path()}",
                f"root@{address}"]


def by_hand(stack: Stack, address: str, written: Path, archive: Path, sha: str) -> Run:
    """The same work as the first converge, by hand: one upload, one shell script over one SSH session."""
    ssh = stack.ssh(address)
    scp = ["scp", "-q", "-i", str(stack.key), *SSH_OPTS, "-o", f"UserKnownHostsFile={lab.known_hosts_path()}"]
    started = time.monotonic()
    upload = measured([*scp, str(written), str(archive), f"root@{address}:/root/"], stack.env, hosts=stack.hosts)
    script = BY_HAND.format(packages=" ".join([*PACKAGES, "nginx"]), sha256=shlex.quote(sha), archive=shlex.quote(archive.name))
    run = measured([*ssh, "sh", "-s"], stack.env, stdin=script, hosts=stack.hosts)
    return Run(time.monotonic() - started, upload.cpu + run.cpu, max(upload.rss_mib, run.rss_mib),
               upload.lab_cpu + run.lab_cpu)


def median(runs: list[Run]) -> Run:
    return Run(statistics.median(r.wall for r in runs), statistics.median(r.cpu for r in runs),
               max(r.rss_mib for r in runs), statistics.median(r.lab_cpu for r in runs))


def noop_and_floor(stack: Stack, runs: int) -> tuple[Run, Run]:
    """Medians of ``runs`` no-op re-converges and floors, taken in turn so that both see the machine alike."""
    noops, floors = [], []
    for _ in range(runs):
        noops.append(stack.pyinfra("deploy/site.py"))
        floors.append(stack.pyinfra("exec", "--", "true"))
    return median(noops), median(floors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions of the no-op and floor runs")
    parser.add_argument("--first-runs", type=int, default=3,
                        help="first converges and by-hand runs, each on a fresh host, taken in turn")
    parser.add_argument("--hosts", type=int, default=8, help="hosts converged together for the scale figures")
    parser.add_argument("--pip", action="store_true",
                        help="also the pip route's no-op (the real Open WebUI: a 3 GB install, minutes)")
    args = parser.parse_args()
    # As pip does for an installed package: where PYTHONDONTWRITEBYTECODE is set, every pyinfra run would
    # otherwise compile the checkout's modules again (0.1-0.2 s of each run, floor included).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "ollastack", "deploy", "inventories"], cwd=REPO,
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        key = tmp / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        archive, sha = build_archive(tmp, "0.13.3")
        one, hand, many = (Stack(tmp, name, key, archive, sha) for name in ("bench", "benchhand", "benchmany"))
        admin = 'admin_email = "owner@example.org"\noffline = true\n'
        routes = {"container": Stack(tmp, "benchow", key, archive, sha,
                                     f'install = "container"\nimage = "{STANDIN_IMAGE}"\n'
                                     f'image_archive = "{build_image(tmp)}"\n{admin}')}
        if args.pip:
            wheels = os.environ.get("PIP_FIND_LINKS", "/opt/wheels")
            # The pip route needs Python 3.11 or 3.12: Debian 12's.
            routes["pip"] = Stack(tmp, "benchpip", key, archive, sha, f'install = "pip"\nfind_links = "{wheels}"\n{admin}',
                                  release="bookworm")
        rows: dict[str, Run] = {}
        try:
            host = one.up(1)[0]
            firsts = [one.pyinfra("deploy/site.py")]
            rows["noop"], rows["floor"] = noop_and_floor(one, args.runs)
            written = tmp / "written.tgz"
            with written.open("wb") as out:
                subprocess.run([*one.ssh(host["address"]), "tar", "-czf", "-", "-C", "/", *WRITTEN], stdout=out,
                               check=True)
            one.down()
            # In turn on fresh hosts, so that both see the mirror and the machine alike.
            hands = []
            for _ in range(args.first_runs):
                hands.append(by_hand(hand, hand.up(1)[0]["address"], written, archive, sha))
                hand.down()
                if len(firsts) < args.first_runs:
                    one.up(1)
                    firsts.append(one.pyinfra("deploy/site.py"))
                    one.down()
            rows["first"], rows["hand"] = median(firsts), median(hands)
            first_of_many = many.up(args.hosts)[0]["address"]
            rows["first_n"] = many.pyinfra("deploy/site.py")
            # In turn with one of the same hosts alone: the ratio then compares runs minutes apart no more.
            noops_n, noops_1 = [], []
            for _ in range(args.runs):
                noops_n.append(many.pyinfra("deploy/site.py"))
                noops_1.append(many.pyinfra("deploy/site.py", limit=first_of_many))
            rows["noop_n"], rows["noop_1"] = median(noops_n), median(noops_1)
            many.down()
            for route, stack in routes.items():
                stack.up(1)
                stack.pyinfra("deploy/site.py")
                rows[f"noop_{route}"], rows[f"floor_{route}"] = noop_and_floor(stack, args.runs)
                stack.down()
        finally:
            for stack in (one, hand, many, *routes.values()):
                stack.down()
    n, cores = args.hosts, os.cpu_count() or 1

    def cpu_bound(run: Run) -> str:
        # The lab hosts and the control machine share the cores: their CPU time over the cores is a floor
        # no converge of these hosts can go below, however well it overlaps the hosts' work.
        return f"; its CPU alone needs {(run.cpu + run.lab_cpu) / cores:.1f} s on {cores} cores"

    table = [
        ("floor: pyinfra exec -- true", rows["floor"], ""),
        ("no-op re-converge (spine)", rows["noop"], f"{rows['noop'].wall / rows['floor'].wall:.2f}x floor"),
        *((f"no-op, full site, {route} route", rows[f"noop_{route}"],
           f"{rows[f'noop_{route}'].wall / rows[f'floor_{route}'].wall:.2f}x its floor "
           f"({rows[f'floor_{route}'].wall:.1f} s)") for route in routes),
        ("by-hand floor (one script)", rows["hand"], ""),
        ("first converge", rows["first"], f"{rows['first'].wall / rows['hand'].wall:.2f}x by hand"),
        (f"first converge, {n} hosts", rows["first_n"],
         f"{rows['first_n'].wall / rows['first'].wall:.2f}x 1 host{cpu_bound(rows['first_n'])}"),
        ("no-op re-converge, 1 of them alone", rows["noop_1"], "pyinfra --limit, in turn with the next row"),
        (f"no-op re-converge, {n} hosts", rows["noop_n"],
         f"{rows['noop_n'].wall / rows['noop_1'].wall:.2f}x 1 host{cpu_bound(rows['noop_n'])}"),
    ]
    print(f"control machine: {cores} cores (shared with the lab hosts); lab hosts: Debian {RELEASE} "
          f"(the pip route's: bookworm); medians of {args.runs} runs for no-ops and floor, "
          f"{args.first_runs} for first converges and by hand")
    print(f"{'':34} {'wall s':>7} {'ctl CPU s':>9} {'lab CPU s':>9} {'peak RSS MiB':>12}  ratio")
    for label, run, ratio in table:
        print(f"{label:34} {run.wall:7.1f} {run.cpu:9.1f} {run.lab_cpu:9.1f} {run.rss_mib:12.0f}  {ratio}")


if __name__ == "__main__":
    main()
