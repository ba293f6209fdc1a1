"""The ``ollastack`` command: validate, plan, up, down, status, doctor, logs, admin-password, lab
up/down/list, settings, pin ollama, password, api-key.

Exit codes mean something to pipelines: 0 ok, 1 a failure on a host or in the cloud, 2 bad input
(nothing was touched). Progress goes to stderr, so ``--json`` output on stdout stays parseable.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from ollastack import __version__, accounts, backup, doctor, lab, logs, orchestrate, pin, planning, upgrade
from ollastack.cloud import CloudError
from ollastack.config import CONFIG_ENV, ConfigError, Stack, config_path, iter_settings, load_stack
from ollastack.host import Host
from ollastack.progress import Progress
from ollastack.state import StackBusy, admin_password_file, stack_lock, user_password_file

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)


def cmd_validate(args: argparse.Namespace, stack: Stack) -> int:
    _emit(args, {"ok": True, "stack": stack.stack.name, "provider": stack.stack.provider},
          f"{args.config_path}: ok (stack {stack.stack.name!r}, provider {stack.stack.provider})")
    return EXIT_OK


def cmd_settings(args: argparse.Namespace) -> int:
    rows = list(iter_settings())
    if args.example:
        print(example_toml(), end="")
    elif args.json:
        print(json.dumps([{"name": n, "default": d, "description": doc} for n, d, doc in rows], indent=2))
    else:
        print(settings_markdown())
    return EXIT_OK


def settings_markdown() -> str:
    """The README's settings table, generated from the stack description model."""
    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for name, default, doc in iter_settings():
        shown = json.dumps(default) if not isinstance(default, str) else (f'"{default}"' if default else '""')
        lines.append(f"| `{name}` | `{shown}` | {doc} |")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    return json.dumps(value)


def example_toml() -> str:
    """``stack.example.toml``: every setting with its default and its one line of documentation."""
    lines = ["# ollastack stack description: copy to stack.toml and edit. Every setting is shown with its",
             "# default; delete what you do not change. `ollastack validate` checks the file.", ""]
    section = None
    for name, default, doc in iter_settings():
        table, key = name.split(".", 1)
        if table != section:
            lines += ([""] if section else []) + [f"[{table}]"]
            section = table
        lines += [f"# {doc}", f"{key} = {_toml_value(default)}"]
    return "\n".join(lines) + "\n"


def cmd_lab(args: argparse.Namespace, stack: Stack) -> int:
    progress = Progress("lab: ")
    if args.lab_command == "up":
        hosts = lab.up(stack, progress)
        orchestrate.issue_certificates(stack, [Host.from_record(h) for h in hosts])
        _emit(args, hosts, "\n".join(f"{h['name']}\t{h['address']}" for h in hosts))
    elif args.lab_command == "down":
        removed = lab.down(None if args.all else stack.stack.name, progress)
        _emit(args, {"removed": removed}, "\n".join(removed) or "nothing to remove")
    else:
        hosts = lab.list_hosts(None if args.all else stack.stack.name)
        _emit(args, hosts, "\n".join(f"{h['name']}\t{h['address']}\t{'running' if h['running'] else 'stopped'}"
                                      for h in hosts) or "no lab hosts")
    return EXIT_OK


def cmd_up(args: argparse.Namespace, stack: Stack) -> int:
    result = orchestrate.up(stack, Progress(), config_path=str(args.config_path))
    if not result["ok"]:
        if args.json:
            print(json.dumps(result, indent=2))
        for host in result["hosts"]:
            if host["problem"]:
                print(f"error: {host['name']}: {host['problem']}", file=sys.stderr)
        return EXIT_FAILED
    urls = "\n".join(h["url"] for h in result["hosts"])
    _emit(args, result, f"ready:\n{urls}\ntrust the stack CA once: curl --cacert {result['ca']} {result['hosts'][0]['url']}"
          if result.get("ca") else f"ready:\n{urls}")
    return EXIT_OK


def cmd_plan(args: argparse.Namespace, stack: Stack) -> int:
    plan = planning.make(stack, dry_run=True)
    _emit(args, plan.to_json(), plan.render())
    return EXIT_FAILED if plan.problems else EXIT_OK


def cmd_down(args: argparse.Namespace, stack: Stack) -> int:
    if not args.yes and sys.stdin.isatty():
        answer = input(f"Delete every resource of stack {stack.stack.name!r} ({stack.stack.provider})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing was deleted", file=sys.stderr)
            return EXIT_FAILED
    elif not args.yes:
        print("down deletes resources: pass --yes when running non-interactively", file=sys.stderr)
        return EXIT_BAD_INPUT
    removed = orchestrate.down(stack, Progress())
    _emit(args, {"removed": removed}, "\n".join(removed) or "nothing to remove")
    return EXIT_OK


def cmd_admin_password(args: argparse.Namespace, stack: Stack) -> int:
    """Print the Open WebUI admin password (generated once per stack when openwebui.admin_password is empty)."""
    configured = stack.openwebui.admin_password.get_secret_value()
    password = admin_password_file(stack.stack.name, configured).read_text().strip()
    _emit(args, {"email": stack.openwebui.admin_email, "password": password}, password)
    return EXIT_OK


def cmd_password(args: argparse.Namespace, stack: Stack) -> int:
    """Print the password an account of the stack (accounts.users.NAME) was created with."""
    if args.user not in stack.accounts.users:
        print(f"error: {args.user!r} is not in accounts.users of the stack", file=sys.stderr)
        return EXIT_BAD_INPUT
    password = user_password_file(stack.stack.name, args.user).read_text().strip()
    _emit(args, {"user": args.user, "email": stack.accounts.users[args.user].email, "password": password}, password)
    return EXIT_OK


def cmd_api_key(args: argparse.Namespace, stack: Stack) -> int:
    """Print the Open WebUI API key of the admin or of accounts.users.NAME, as the stack allows (exit 2 otherwise)."""
    if refusal := accounts.api_key_refusal(stack, args.user):
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if stack.openwebui.install == "none":
        print("error: openwebui.install = \"none\": the web UI is not ollastack's", file=sys.stderr)
        return EXIT_BAD_INPUT
    hosts = [h for h in orchestrate.hosts_of(stack) if args.host in (None, h.name)]
    if not hosts:
        print(f"error: no host {args.host!r} in the stack" if args.host else "error: the stack has no hosts yet "
              "(run `ollastack up`)", file=sys.stderr)
        return EXIT_BAD_INPUT
    host = hosts[0]
    try:
        key = accounts.api_key(stack, orchestrate.webui_target(stack, host), orchestrate.admin_password(stack), args.user)
    except accounts.AccountsError as exc:
        print(f"error: {host.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _emit(args, {"host": host.name, "url": orchestrate.webui_target(stack, host).url, "user": args.user,
                 "api_key": key}, key)
    return EXIT_OK


def gpu_lines(report: dict) -> list[str]:
    """The "what fits" part of ``ollastack status`` for one host."""
    if "error" in report:
        return [f"    gpu: {report['error']}"]
    lines = [f"    gpu: {g['name']}, {g['memory_mib'] / 1024:.1f} GiB" for g in report["gpus"]]
    for model in report["models"]:
        if model["fits"] is not None:
            lines.append(f"    model {model['name']} ({model['size'] / 1e9:.1f} GB): "
                         f"{'fits in GPU memory' if model['fits'] else 'does NOT fit in GPU memory'}")
    return lines + [f"    warning: {w}" for w in report["warnings"]]


def cmd_status(args: argparse.Namespace, stack: Stack) -> int:
    report = orchestrate.status(stack)
    lines = [f"stack {report['stack']} ({report['provider']})"]
    for host in report["hosts"]:
        lines.append(f"  {host['name']} {host['address']}: {host['https']}; Open WebUI {host['webui']}")
        if host["problem"]:
            lines.append(f"    not ready: {host['problem']}")
        cert = host["certificate"]
        lines.append(f"    certificate: {cert['error']}" if "error" in cert else
                     f"    certificate: issued by {cert['issuer']}, expires in {cert['days_left']} days ({cert['not_after']})")
        lines += gpu_lines(host["gpu"])
        lines += [f"    account not in the stack: {account}" for account in host.get("unlisted_accounts", [])]
    backends = report.get("backends", [])
    if isinstance(backends, str):
        lines.append(f"  backends: {backends}")
    for backend in backends if isinstance(backends, list) else []:
        lines.append(f"  backend {backend['name']} {backend['address']}: "
                     + (f"answers, models: {', '.join(backend['models']) or 'none'}; "
                        f"running: {', '.join(backend.get('running', [])) or 'none'}" if backend["reachable"]
                        else "no answer from the gateway"))
    _emit(args, report, "\n".join(lines))
    backends_ok = isinstance(backends, list) and all(b["reachable"] for b in backends)
    return EXIT_OK if all(h["ok"] for h in report["hosts"]) and backends_ok else EXIT_FAILED


def cmd_doctor(args: argparse.Namespace, stack: Stack) -> int:
    report = doctor.run(stack)
    _emit(args, report, doctor.render(report))
    if not report["ok"] or (args.strict and report["warnings"]):
        return EXIT_FAILED
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, stack: Stack) -> int:
    return EXIT_OK if logs.show(stack, args.service, since=args.since, follow=args.follow) == 0 else EXIT_FAILED


def cmd_pin(args: argparse.Namespace, stack: Stack) -> int:
    try:
        pinned = pin.pin_ollama(args.config_path, args.version)
    except pin.PinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    # An explicit source is installed instead of the release: it must be the pinned archive too.
    for setting, value in (("ollama.archive", stack.ollama.archive), ("ollama.url", stack.ollama.url)):
        if value:
            print(f"warning: {setting} is set and is installed instead of the release: make sure {value} is "
                  f"{pinned['archive']} of v{pinned['version']}, or the sha256 check stops the converge", file=sys.stderr)
    _emit(args, {"config": str(args.config_path), **pinned},
          f"{args.config_path}: ollama.version = {pinned['version']}, ollama.sha256 = {pinned['sha256']} "
          f"({pinned['archive']}, from {pinned['sums_url']})")
    return EXIT_OK


def cmd_backup(args: argparse.Namespace, stack: Stack) -> int:
    if args.action == "list":
        rows = backup.list_backups()
        _emit(args, rows, "\n".join(f"{r['host']}\t{r['id']}\tOpen WebUI {r['openwebui_version']}\t"
                                    f"{r['size'] / 1e6:.1f} MB" + (f"\t{r['label']}" if r["label"] else "")
                                    for r in rows) or "no backups")
        return EXIT_OK
    taken = backup.take(stack, Progress("backup: "), fetch=args.fetch)
    _emit(args, taken, "\n".join(t["path"] for t in taken))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, stack: Stack) -> int:
    restored = backup.restore(stack, Progress("restore: "), args.id)
    _emit(args, restored, "\n".join(f"{r['host']}: restored {r['id']}" for r in restored))
    return EXIT_OK


def _argument(check: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse ``type`` from a checker that raises ValueError: its message becomes argparse's usage error."""
    def parse(value: str) -> str:
        try:
            return check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _global_options(default: Any) -> argparse.ArgumentParser:
    """``--config`` and ``--json``; subcommands get them with ``default`` SUPPRESS, so a value given
    before the subcommand survives and one given after it wins."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--config", default=default if default is argparse.SUPPRESS else None,
                         help="stack description (default: $OLLASTACK_CONFIG or ./stack.toml)")
    options.add_argument("--json", action="store_true", default=default if default is argparse.SUPPRESS else False,
                         help="machine-readable output on stdout")
    return options


@contextlib.contextmanager
def _stack_file(path: Path) -> Iterator[None]:
    """Make ``path`` the stack file of everything this command does (state and ssl/ live beside it)."""
    before = os.environ.get(CONFIG_ENV)
    os.environ[CONFIG_ENV] = str(path.resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(CONFIG_ENV, None)
        else:
            os.environ[CONFIG_ENV] = before


EXIT_CODES = """exit codes:
  0  done
  1  a failure on a host, in the cloud or in the lab (what was done is recorded; run again to resume)
  2  bad input: the stack description or the arguments; nothing was touched"""

# name -> (one-line help, what it does and what it touches). The exit codes follow each description.
COMMANDS = {
    "validate": ("check the stack description; touches nothing",
                 "Reads the stack description, reports every bad setting at once and prints warnings\n"
                 "(e.g. SSH open to the whole internet). Touches nothing: no host, no cloud, no file."),
    "settings": ("every setting with its default (markdown table)",
                 "Prints every setting of a stack description with its default and what it does; with\n"
                 "--example a complete stack.example.toml. Needs no stack file and touches nothing."),
    "plan": ("what `up` would create, change and cost, and whether the size can be created; touches nothing",
             "Cloud stacks: each resource `up` would create, update in place (e.g. the firewall rules\n"
             "after an admin_cidrs change) or leave, from the state file and what the cloud holds by the\n"
             "stack's tag; the price per hour and per 30-day month of the VM size, disk and public IP\n"
             "(Azure Retail Prices API, Alibaba ECS DescribePrice), whether the size is offered and\n"
             "within quota there (with sizes or zones that would work), and the permissions needed.\n"
             "Lab and static stacks: the hosts, lab hosts `up` would create, and per host the operations\n"
             "the converge would change (pyinfra --dry), or \"no changes\"; certificates and files `up`\n"
             "would write on this machine are listed, not written.\n"
             "Only reads: no cloud write, no state file, no host.\n"
             "Exit 1 when the size cannot be created or the dry run fails; a price not found is a warning."),
    "up": ("create hosts (lab or cloud), converge them, verify HTTPS, print the URL",
           "Creates what the provider needs (cloud: resource group or VPC, network, firewall rules,\n"
           "VM; lab: local hosts), records each resource in the state file beside the stack file,\n"
           "keeps the stack CA and certificates in ssl/ beside it, converges every host over SSH\n"
           "with pyinfra "
           "(NVIDIA driver, Ollama, Podman, Open WebUI, nginx, firewall) and prints the HTTPS URL\n"
           "once it answers verified and the admin signs in. Re-running changes only what differs.\n"
           "First it prints the plan's one line (`ollastack plan`) and stops before creating anything\n"
           "when the size cannot be created there or costs more than cloud.max_hourly_price.\n"
           "A changed Open WebUI release (openwebui.version or image) gets a backup first; when the\n"
           "new release fails its checks, up restores that backup onto the previous release and exits 1."),
    "down": ("delete every resource this stack created",
             "Deletes every cloud resource this stack created (what the state file records, and what\n"
             "carries the stack's tag), or a lab stack's hosts, after asking (--yes: without asking;\n"
             "required when not on a terminal). Static hosts are left as they are. The stack file,\n"
             "ssl/ and the admin password stay."),
    "doctor": ("check every host end to end and say how to fix what fails; changes nothing",
               "Checks every host over SSH: services active, who holds ports 80, 443 and Ollama's and\n"
               "Open WebUI's, Ollama's API and the configured models, nginx -t, Open WebUI /health,\n"
               "known error lines in the journal since the last start, free disk under the models\n"
               "directory, the GPU (driver, a loaded model's VRAM), the certificate's days left, and\n"
               "Ollama's settings against the stack (drift). Each failure comes with its cause and fix.\n"
               "Changes nothing. Warnings alone exit 0 unless --strict."),
    "logs": ("the services' journal on every host, lines prefixed with the host's name",
             "Prints the journal of ollama, openwebui, nginx, firewall or certbot (default: all that\n"
             "the stack installs) from every host over SSH, each line prefixed with the host's name;\n"
             "--follow keeps printing new lines until Ctrl-C. Reads only."),
    "status": ("hosts of the stack and whether HTTPS answers",
               "Lists the stack's hosts and, for each, whether HTTPS answers verified, /health is up\n"
               "and the admin signs in. Reads the state file and the hosts; changes nothing."),
    "admin-password": ("print the Open WebUI admin password (the only command that shows it)",
                       "Prints the Open WebUI admin password kept (mode 0600) beside the stack file. No other\n"
                       "command, log or JSON output ever shows it."),
    "backup": ("snapshot Open WebUI's data of every host onto this machine; `backup list` shows what exists",
               "Takes a consistent snapshot of each host's Open WebUI data while it runs: webui.db through\n"
               "SQLite's online backup, uploads/, the vector store, the secret key, the exported config and\n"
               "a manifest (time, versions, sha256 of every file), into <state dir>/backups/<host>/<ID>/\n"
               "(0700/0600, ignored by git), keeping the newest backup.keep. --fetch copies the newest\n"
               "backup the host's own timer (backup.schedule) made instead. `backup list` reads only."),
    "restore": ("put a backup (default: the newest) back onto every host of the stack",
                "Checks the backup's files against its manifest and refuses, before touching anything, when\n"
                "the host's Open WebUI is older than the backup's. Then stops Open WebUI, puts back the\n"
                "database, uploads, vector store and secret key, starts it and waits for /health. Works on a\n"
                "brand-new host of the same stack (disaster recovery: down, up, restore)."),
    "lab": ("local Debian hosts (systemd-nspawn) to try the stack",
            "Local Debian 12/13 hosts booted with systemd-nspawn on a private bridge, as root on this\n"
            "machine: to try a stack, and for the tests. Images are cached in /var/lib/ollastack/lab."),
    "pin": ("pin an Ollama release: write its version and published sha256 into the stack file",
            "`pin ollama VERSION` reads that release's sha256sum.txt (GitHub, or\n"
            "$OLLASTACK_OLLAMA_RELEASES_URL), takes the line of the archive the hosts install\n"
            "(ollama-linux-amd64: .tgz before 0.14.0, .tar.zst from then on) and writes ollama.version\n"
            "and ollama.sha256 into the stack file; comments, order and every other setting stay as\n"
            "they are. Touches no host: the next `up` installs the release. Exit 2 when there is no such\n"
            "release, 1 when it cannot be read or does not list the archive; then nothing is written."),
    "password": ("print the password of an account of the stack (accounts.users.NAME)",
                 "Prints the password the Open WebUI account accounts.users.NAME was created with, generated\n"
                 "once and kept (mode 0600) beside the stack file. No other command shows it."),
    "api-key": ("print an Open WebUI API key (the admin's, or --user NAME's); it shows a secret",
                "Prints the Open WebUI API key of the admin, or of accounts.users.NAME with --user,\n"
                "creating it when the account has none. This is the one output meant to show a secret:\n"
                "keep it out of logs. The stack turns API keys on (ENABLE_API_KEYS) and allows them:\n"
                "accounts.api_keys = true for the admin; for anyone else the permission features.api_keys\n"
                "from one of its groups or accounts.permissions; `up` applies that. Otherwise it refuses\n"
                "(exit 2) naming the setting. Use the key as `Authorization: Bearer KEY` on\n"
                "https://HOST/api/chat/completions or https://HOST/ollama/api/chat; port 11434 stays closed.\n"
                "--host picks the host (each host has its own accounts); default: the first."),
}
LAB_COMMANDS = {
    "up": ("start the stack's lab hosts", "Boots lab.hosts hosts (--hosts overrides it), reusing running ones, waits for SSH\n"
                                          "and issues their stack-CA certificates into ssl/ (so that a plain pyinfra run\n"
                                          "of inventories/lab.py finds them)."),
    "down": ("remove the stack's lab hosts", "Stops and deletes the stack's lab hosts (--all: every lab host on this machine)."),
    "list": ("list the stack's lab hosts", "Lists the stack's lab hosts and their addresses (--all: of every stack)."),
}


def _subcommand(sub: Any, name: str, help_and_description: tuple[str, str], parents: list) -> argparse.ArgumentParser:
    summary, description = help_and_description
    return sub.add_parser(name, help=summary, description=description, epilog=EXIT_CODES, parents=parents,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollastack", parents=[_global_options(None)], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A private, HTTPS-secured Ollama + Open WebUI service on your own cloud VM or Debian hosts,\n"
                    "from one stack description (stack.toml). Progress goes to stderr; --json output to stdout.",
        epilog=f"{EXIT_CODES}\n\n`ollastack COMMAND --help` says what a command does and what it touches.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = [_global_options(argparse.SUPPRESS)]
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {name: _subcommand(sub, name, text, common) for name, text in COMMANDS.items()}
    commands["settings"].add_argument("--example", action="store_true", help="print a stack.example.toml instead")
    commands["down"].add_argument("--yes", action="store_true", help="do not ask for confirmation")
    commands["doctor"].add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    commands["logs"].add_argument("service", nargs="?", default="all", choices=[*logs.SERVICES, "all"],
                                  help="whose journal (default: all the stack installs)")
    commands["logs"].add_argument("--since", type=_argument(logs.valid_since), help='from when: "2026-12-01 14:00", "2h ago", today, ...')
    commands["logs"].add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    commands["password"].add_argument("user", metavar="USER", help="an account of the stack (accounts.users.NAME)")
    commands["api-key"].add_argument("--user", metavar="NAME", help="an account of the stack (default: the admin)")
    commands["api-key"].add_argument("--host", metavar="HOST", help="which host's Open WebUI (default: the first)")
    commands["backup"].add_argument("action", nargs="?", choices=["list"], help="list: show the backups on this machine")
    commands["backup"].add_argument("--fetch", action="store_true", help="copy each host's newest scheduled backup")
    commands["restore"].add_argument("id", nargs="?", help="backup ID (default: each host's newest)")
    lab_sub = commands["lab"].add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    lab_commands = {name: _subcommand(lab_sub, name, text, common) for name, text in LAB_COMMANDS.items()}
    lab_commands["up"].add_argument("--hosts", type=int, help="how many (overrides lab.hosts)")
    for name in ("down", "list"):
        lab_commands[name].add_argument("--all", action="store_true", help="every lab host on this machine, of any stack")
    commands["pin"].add_argument("component", choices=["ollama"], help="what to pin")
    commands["pin"].add_argument("version", type=_argument(pin.release_version), help="the release, e.g. 0.14.0 (or v0.14.0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "settings":
        return cmd_settings(args)
    args.config_path = config_path(args.config)
    hosts_flag = getattr(args, "hosts", None)
    try:
        stack = load_stack(args.config_path, {"lab": {"hosts": hosts_flag}} if hosts_flag is not None else None)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command in ("validate", "plan", "up"):
        for line in stack.warnings():
            print(line, file=sys.stderr)
    handlers = {"validate": cmd_validate, "plan": cmd_plan, "up": cmd_up, "down": cmd_down, "status": cmd_status,
                "lab": cmd_lab, "admin-password": cmd_admin_password, "doctor": cmd_doctor, "logs": cmd_logs,
                "pin": cmd_pin, "password": cmd_password, "api-key": cmd_api_key,
                "backup": cmd_backup, "restore": cmd_restore}
    # Two commands changing one stack at once would race (two VPCs, two converges): one at a time.
    changes = args.command in ("up", "down", "restore") or (
        args.command == "lab" and args.lab_command in ("up", "down") and not getattr(args, "all", False))
    locked = stack_lock(stack.stack.name) if changes else contextlib.nullcontext()
    try:
        with _stack_file(args.config_path), locked:
            return handlers[args.command](args, stack)
    except (lab.LabError, CloudError, orchestrate.ConvergeError, orchestrate.PreflightError, StackBusy,
            backup.BackupError, upgrade.UpgradeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        # A full disk or an unwritable state directory (state file, admin password file).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; nothing more was done", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume, or `ollastack down` to remove what was created",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
