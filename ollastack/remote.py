"""Commands run on a stack's host from the control machine, as its provider says to reach it.

Every remote word is shell-quoted by ``ssh_command``; commands that read what only root may read
(the journal, other users' sockets) run under ``sudo -n`` when the login user is not root.

Example::

    argv = host_command(stack, Host("demo-1", "10.213.0.10"), "journalctl", "-u", "ollama", "-n", "20")
    subprocess.run(argv, capture_output=True, text=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ollastack import providers
from ollastack.host import Host
from ollastack.ssh import ssh_command

if TYPE_CHECKING:
    from ollastack.config import Stack


def host_command(stack: Stack, host: Host, *words: str, known_only: bool = False) -> list[str]:
    """The ssh argv running ``words`` as root on ``host`` (``sudo -n`` first for another login user).

    ``known_only``: only a host whose key is known already answers, and ssh records no new key (for
    commands that must write nothing on this machine, such as ``plan``'s).
    """
    provider = providers.get(stack.stack.provider)
    _, private_key = stack.key_paths()
    as_root = ("sudo", "-n") if host.user != "root" else ()
    return ssh_command(host.address, host.user, private_key, provider.known_hosts(stack), *as_root, *words,
                       port=host.port, strict="yes" if known_only else provider.strict_host_keys, jump=host.jump)
