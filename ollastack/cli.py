"""The ``ollastack`` command: validate, up, down, status, doctor, logs, lab up/down/list, settings.

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
from typing import Any, Iterator

from ollastack import PROJECT_ROOT, doctor, lab, logs, orchestrate
from ollastack.cloud import CloudError
from ollastack.config import CONFIG_ENV, ConfigError, Stack, config_path, iter_settings, load_stack
from ollastack.progress import Progress
from ollastack.state import StackBusy, stack_lock

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


def write_docs(root=None) -> None:
    """Regenerate the README settings table and stack.example.toml from the model (``make docs``)."""
    root = root or PROJECT_ROOT
    readme = (root / "README.md").read_text()
    head, rest = readme.split("<!-- settings:start -->\n", 1)
    _, tail = rest.split("<!-- settings:end -->", 1)
    (root / "README.md").write_text(f"{head}<!-- settings:start -->\n{settings_markdown()}\n<!-- settings:end -->{tail}")
    (root / "stack.example.toml").write_text(example_toml())


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
    password = stack.openwebui.admin_password_file(stack.stack.name).read_text().strip()
    _emit(args, {"email": stack.openwebui.admin_email, "password": password}, password)
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
    _emit(args, report, "\n".join(lines))
    return EXIT_OK if all(h["ok"] for h in report["hosts"]) else EXIT_FAILED


def cmd_doctor(args: argparse.Namespace, stack: Stack) -> int:
    report = doctor.run(stack)
    _emit(args, report, doctor.render(report))
    if not report["ok"] or (args.strict and report["warnings"]):
        return EXIT_FAILED
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, stack: Stack) -> int:
    return EXIT_OK if logs.show(stack, args.service, since=args.since, follow=args.follow) == 0 else EXIT_FAILED


def _since(value: str) -> str:
    try:
        return logs.valid_since(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ollastack", description=__doc__.splitlines()[0],
                                     parents=[_global_options(None)])
    common = [_global_options(argparse.SUPPRESS)]
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("validate", help="check the stack description; touches nothing", parents=common)
    settings = sub.add_parser("settings", help="every setting with its default (markdown table)", parents=common)
    settings.add_argument("--example", action="store_true", help="print a stack.example.toml instead")
    sub.add_parser("up", help="create hosts (lab or cloud), converge them, verify HTTPS, print the URL", parents=common)
    down = sub.add_parser("down", help="delete every resource this stack created", parents=common)
    down.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_parser("status", help="hosts of the stack and whether HTTPS answers", parents=common)
    doctor_parser = sub.add_parser(
        "doctor", parents=common,
        help="check every host end to end (services, ports, Ollama, models, nginx, certificate, journal, disk, "
             "GPU, settings drift) and say how to fix what fails; changes nothing; exit 0 all ok, 1 a failure")
    doctor_parser.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    logs_parser = sub.add_parser("logs", parents=common,
                                 help="the services' journal on every host, lines prefixed with the host's name")
    logs_parser.add_argument("service", nargs="?", default="all", choices=[*logs.SERVICES, "all"],
                             help="whose journal (default: all the stack installs)")
    logs_parser.add_argument("--since", type=_since, help='from when: "2026-12-01 14:00", "2h ago", today, ...')
    logs_parser.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    sub.add_parser("admin-password", help="print the Open WebUI admin password (the only command that shows it)",
                   parents=common)
    lab_parser = sub.add_parser("lab", help="local Debian hosts (systemd-nspawn) to try the stack", parents=common)
    lab_sub = lab_parser.add_subparsers(dest="lab_command", required=True)
    lab_up = lab_sub.add_parser("up", help="start the stack's lab hosts", parents=common)
    lab_up.add_argument("--hosts", type=int, help="how many (overrides lab.hosts)")
    for name in ("down", "list"):
        p = lab_sub.add_parser(name, help=f"{name} the stack's lab hosts", parents=common)
        p.add_argument("--all", action="store_true", help="every lab host on this machine, of any stack")
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
    if args.command in ("validate", "up"):
        for line in stack.warnings():
            print(line, file=sys.stderr)
    handlers = {"validate": cmd_validate, "up": cmd_up, "down": cmd_down, "status": cmd_status, "lab": cmd_lab,
                "admin-password": cmd_admin_password, "doctor": cmd_doctor, "logs": cmd_logs}
    # Two commands changing one stack at once would race (two VPCs, two converges): one at a time.
    changes = args.command in ("up", "down") or (
        args.command == "lab" and args.lab_command in ("up", "down") and not getattr(args, "all", False))
    locked = stack_lock(stack.stack.name) if changes else contextlib.nullcontext()
    try:
        with _stack_file(args.config_path), locked:
            return handlers[args.command](args, stack)
    except (lab.LabError, CloudError, orchestrate.ConvergeError, orchestrate.PreflightError, StackBusy) as exc:
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
