"""Operations for a difference ``deploy.present`` has just read: only the remote commands that difference needs.

pyinfra's own operations read the host again before they act, one remote command per fact: ``files.put``
its destination as a file, as a directory, and its parent directory; ``files.directory`` the path;
``systemd.service`` the unit's state, then its unit file state. Where ``HostState`` has already shown what
is at the path, ``deploy.present`` calls these instead. Where the read cannot tell (``NOTHING``) or found
something pyinfra has its own rules for (a directory where a file goes, a link), it calls pyinfra's.

Example (what ``deploy.present.put`` runs for a missing file)::

    write_file(name="Firewall rules", src=StringIO(text), dest=RULES, mode="0600", upload=True, parent=True)
"""

from __future__ import annotations

import posixpath

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.operations.util import files as file_utils


def _both(commands: list[StringCommand]) -> StringCommand:
    """One remote command running ``commands`` in order, stopping at the first that fails."""
    return StringCommand(*[bit for command in commands for bit in ("&&", command)][1:])


def _owner_and_mode(path: str, mode, user, group) -> list[StringCommand]:
    """The chown and chmod pyinfra's operations would run (``"0600"`` as ``chmod 600``)."""
    return [*([file_utils.chown(path, user, group)] if user or group else []),
            *([file_utils.chmod(path, str(file_utils.ensure_mode_int(mode)))] if mode else [])]


@operation()
def write_file(src, dest: str, mode=None, user=None, group=None, upload: bool = True, parent: bool = False,
               new: bool = False, fix: bool = True):
    """Upload ``src`` to ``dest`` when ``upload`` (its content differs or it is missing), then, with ``fix`` (the
    read showed another owner or mode), set its owner and mode. ``parent``: first create ``dest``'s directory if
    missing, owned by ``user``/``group`` as ``files.put`` creates it. ``new``: ``dest`` is missing; with a
    ``mode`` it is created empty with its mode and owner before the upload, which writes into it and keeps
    both: its content is never readable by others, not even for a moment, and nothing is left to set after.

    Example: ``write_file(name="Ollama unit", src="ollama.service", dest=UNIT, mode="0644", new=True)``
    """
    first = []
    if parent:
        directory = posixpath.dirname(dest)
        create = _both([StringCommand("mkdir", "-p", "--", QuoteString(directory)), *_owner_and_mode(directory, None, user, group)])
        first.append(StringCommand("{ [ -d", QuoteString(directory), "] || {", create, "; } ; }"))
    created = bool(upload and new and mode)
    if created:
        owner = [*(["-o", QuoteString(user)] if user else []), *(["-g", QuoteString(group)] if group else [])]
        first.append(StringCommand("install", "-m", str(file_utils.ensure_mode_int(mode)), *owner, "--", "/dev/null",
                                   QuoteString(dest)))
    if first:
        yield _both(first)
    if upload:
        yield FileUploadCommand(src, dest, remote_temp_filename=host.get_temp_filename(dest))
    if fix and not created and (fixes := _owner_and_mode(dest, mode, user, group)):
        yield _both(fixes)


@operation()
def make_directory(path: str, mode=None, user=None, group=None, exists: bool = False):
    """Create ``path`` (unless it ``exists`` as a directory already) and set its mode and owner, in one command.

    Example: ``make_directory(name="TLS directory", path="/etc/ollastack/tls", mode="0755")``
    """
    commands = [] if exists else [StringCommand("mkdir", "-p", "--", QuoteString(path))]
    if commands := [*commands, *_owner_and_mode(path, mode, user, group)]:
        yield _both(commands)


@operation()
def make_link(path: str, target: str):
    """Make ``path`` a symbolic link to ``target`` where nothing is (creating its directory if missing), in one command.

    Example: ``make_link(name="nginx site enabled", path="/etc/nginx/sites-enabled/x.conf", target="/etc/nginx/sites-available/x.conf")``
    """
    yield _both([StringCommand("mkdir", "-p", "--", QuoteString(posixpath.dirname(path))),
                 StringCommand("ln", "-s", "--", QuoteString(target), QuoteString(path))])


@operation()
def start_service(service: str, start: bool, enable: bool):
    """``systemctl start`` and/or ``enable`` ``service``, in one command.

    Example: ``start_service(name="nginx running and enabled", service="nginx.service", start=True, enable=True)``
    """
    if start and enable:
        yield StringCommand("systemctl", "enable", "--now", QuoteString(service))
    elif start or enable:
        yield StringCommand("systemctl", "start" if start else "enable", QuoteString(service))


@operation()
def add_user(user: str, home: str, shell: str, system: bool = False):
    """Create ``user`` with ``home`` (made from the skeleton) and ``shell``, in one command; in the group of its
    name where one exists already, as ``server.user`` does (useradd would refuse to create that group).

    Example: ``add_user(name="ollama system user", user="ollama", home="/usr/share/ollama", shell="/bin/false", system=True)``
    """
    options = ["-d", QuoteString(home), "-s", QuoteString(shell), *(["-r"] if system else []), "-m"]
    yield StringCommand("if getent group", QuoteString(user), ">/dev/null; then useradd", *options, "-g",
                        QuoteString(user), QuoteString(user), "; else useradd", *options, QuoteString(user), "; fi")


@operation()
def restart_service(service: str, enable: bool):
    """Restart ``service`` (``systemctl restart`` starts a stopped one), after enabling it when ``enable``: an
    enable reloads systemd's units itself, so a new or changed unit file needs no ``daemon-reload`` before it.

    Example: ``restart_service(name="Restart Ollama", service="ollama.service", enable=True)``
    """
    restart = StringCommand("systemctl", "restart", QuoteString(service))
    yield _both([StringCommand("systemctl", "enable", QuoteString(service)), restart]) if enable else restart
