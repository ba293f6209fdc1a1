"""``ollastack logs``: the journal of the stack's services on every host, each line prefixed ``<host>: ``.

One ``ssh … journalctl`` per host runs at once; their lines are printed as they arrive. With
``follow`` it runs until Ctrl-C (SIGINT) or SIGTERM, which end every ssh and return normally (no
traceback): following is stopped that way on purpose. Both are caught even where the caller started it
with SIGINT ignored (a job a script started in the background, a supervisor), since each ssh runs in a
session of its own, where no signal of the caller's reaches it.

Example::

    logs.show(stack, "ollama", since="1h ago", follow=False)     # prints "demo-1: Dec 01 ... ollama[412]: ..."
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, TextIO

from ollastack import providers
from ollastack.remote import host_command

if TYPE_CHECKING:
    from ollastack.config import Stack

# What `ollastack logs NAME` shows: the systemd units of each service.
SERVICES: dict[str, tuple[str, ...]] = {"ollama": ("ollama",), "openwebui": ("open-webui",), "nginx": ("nginx",),
                                        "firewall": ("ollastack-firewall",), "certbot": ("certbot",)}
# What journalctl's --since accepts, kept to forms with no shell or option meaning: a date and time
# ("2026-12-01 14:00", "14:00:05"), a relative time ("-2h", "30 min ago", "1d ago"), or a keyword.
SINCE_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?|\d{2}:\d{2}(:\d{2})?"
    r"|-?\d{1,6} ?(s|sec|m|min|h|hour|hours|d|day|days|w|week|weeks)( ago)?|today|yesterday|now)")
TAIL_LINES = "100"


def valid_since(value: str) -> str:
    """``value`` when journalctl's ``--since`` may get it; ValueError otherwise (argparse: exit 2).

    Example: ``valid_since("1h ago") == "1h ago"``; ``valid_since("1h; rm -rf /")`` raises
    """
    if not SINCE_RE.fullmatch(value):
        raise ValueError(f"--since {value!r}: expected e.g. \"2026-12-01 14:00\", \"14:00\", \"2h ago\", \"-30min\", "
                         "today or yesterday")
    return value


def installed(stack: Stack) -> list[str]:
    """The SERVICES the stack runs on its hosts: ``["firewall", "ollama", "nginx"]`` and what it adds."""
    names = ["firewall", "ollama", "nginx"]
    if stack.openwebui.install != "none":
        names.append("openwebui")
    if stack.tls.mode == "letsencrypt":
        names.append("certbot")
    return names


def stack_units(stack: Stack, service: str) -> list[str]:
    """The units ``service`` (a SERVICES key, or ``all``: every installed one) means for this stack."""
    return [unit for name in (installed(stack) if service == "all" else [service]) for unit in SERVICES[name]]


def journal_words(units: list[str], since: str | None, follow: bool) -> list[str]:
    """journalctl's arguments: ``["journalctl", "--no-pager", "-u", "ollama", "-n", "100"]``."""
    words = ["journalctl", "--no-pager"]
    for unit in units:
        words += ["-u", unit]
    if since:
        words += ["--since", valid_since(since)]
    elif not follow:
        words += ["-n", TAIL_LINES]
    if follow:
        words.append("--follow")
    return words


def _pump(name: str, stream, out: TextIO, lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            out.write(f"{name}: {line}" if line.endswith("\n") else f"{name}: {line}\n")
            out.flush()


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt


def show(stack: Stack, service: str, since: str | None = None, follow: bool = False,
         out: TextIO | None = None) -> int:
    """Print the journal of ``service`` on every host; the worst ssh exit status (0 when stopped by Ctrl-C
    or SIGTERM)."""
    stops = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, _stop) for signum in stops}
    try:
        return _show(stack, service, since, follow, out or sys.stdout)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _show(stack: Stack, service: str, since: str | None, follow: bool, out: TextIO) -> int:
    words = journal_words(stack_units(stack, service), since, follow)
    hosts = providers.get(stack.stack.provider).hosts(stack)
    lock = threading.Lock()
    children: list[subprocess.Popen] = []
    pumps = []
    try:
        for host in hosts:
            # Its own session: Ctrl-C reaches this process only, which then ends each ssh itself.
            child = subprocess.Popen(host_command(stack, host, *words), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace", start_new_session=True)
            children.append(child)
            for stream, target in ((child.stdout, out), (child.stderr, sys.stderr)):
                pump = threading.Thread(target=_pump, args=(host.name, stream, target, lock), daemon=True)
                pump.start()
                pumps.append(pump)
        codes = [child.wait() for child in children]
    except KeyboardInterrupt:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()
        return 0
    for pump in pumps:
        pump.join()
    return max(codes, default=0)
