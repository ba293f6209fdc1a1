"""Where a stack's hosts come from: one ``Provider`` per ``stack.provider`` value, in ``REGISTRY``.

Everything that differs between the lab, a static host list and the clouds is a method of its
provider; the orchestrator, the inventory builder and the stack validation ask the provider and never
test a provider's name.

Example::

    provider = providers.get(stack.stack.provider)
    hosts = provider.create(stack, Progress())     # [Host("demo-1", "10.213.0.10")], each accepting SSH
    provider.hosts(stack)                          # the same hosts, without changing anything
    provider.destroy(stack, Progress())            # ["host demo-1 (10.213.0.10)"]
"""

from __future__ import annotations

import importlib
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ollastack import cloud, lab
from ollastack.cloud import CloudError
from ollastack.host import Host
from ollastack.progress import Progress
from ollastack.ssh import SshTimeout, wait_for_ssh
from ollastack.state import StackState, known_hosts_file

if TYPE_CHECKING:
    from ollastack.config import Stack
    from ollastack.planning import Plan

# Key types Alibaba's ImportKeyPair accepts (its API reference: rsa, dsa and ecdsa, with their OpenSSH
# certificate forms); ed25519 is refused, and no conversion from it to another type exists.
ALIBABA_KEY_TYPES = ("ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                     "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
                     "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
                     "ecdsa-sha2-nistp521-cert-v01@openssh.com")


@runtime_checkable
class Provider(Protocol):
    """What ollastack asks of a host source. ``strict_host_keys`` is ssh's StrictHostKeyChecking for its hosts."""

    name: str
    strict_host_keys: str
    # Whether ``create`` makes a gateway and ``fleet.backends`` Ollama hosts (``ollastack.fleet``).
    makes_fleets: bool

    def check(self, stack: Stack) -> None:
        """Raise ValueError naming the setting when the stack lacks what this provider needs."""

    def release(self, stack: Stack) -> tuple[str | None, str]:
        """The Debian release the hosts will run (None: unknown) and the setting that decides it."""

    def names_hosts(self, stack: Stack) -> bool:
        """Whether the provider gives each host a DNS name (``Host.tls_names``) a certificate can be issued for."""

    def warnings(self, stack: Stack) -> list[str]:
        """Lines to show before anything is created."""

    def create(self, stack: Stack, progress: Progress) -> list[Host]:
        """Make the hosts exist and accept SSH (idempotent); return them."""

    def destroy(self, stack: Stack, progress: Progress) -> list[str]:
        """Remove what the provider created for the stack; return what was removed."""

    def hosts(self, stack: Stack) -> list[Host]:
        """The stack's hosts as they are now, changing nothing."""

    def known_hosts(self, stack: Stack) -> Path:
        """The known_hosts file ssh and pyinfra check the hosts' keys against."""

    def host_settings(self, stack: Stack) -> Stack:
        """The stack as its hosts get it in their host data (the lab adds its control machine to admin_cidrs)."""

    def fleet_names(self, stack: Stack) -> list[str]:
        """The names ``create`` gives a fleet's gateway and then each backend (``ollastack.fleet`` names missing ones)."""

    def remove(self, stack: Stack, hosts: list[Host], progress: Progress) -> list[str]:
        """Remove these hosts of the stack (a shrunk fleet's backends) and nothing else; return what was removed."""


def wait_until_reachable(stack: Stack, hosts: list[Host], known_hosts: Path, progress: Progress) -> None:
    """Wait for each host to accept SSH as pyinfra will log in, trusting its key on first use.

    Example: ``wait_until_reachable(stack, [Host("h", "192.0.2.7", user="debian")], known_hosts_file("demo"), print)``
    """
    _, private_key = stack.key_paths()
    for host in hosts:
        progress(f"{host.name}: waiting for SSH on {host.address}")
        try:
            took = wait_for_ssh(host.address, host.user, private_key, known_hosts, strict="accept-new", port=host.port,
                                jump=host.jump)
        except SshTimeout as exc:
            raise CloudError(str(exc)) from None
        progress(f"{host.name}: SSH ready ({took:.1f}s)")


def debian_release(image: str) -> str | None:
    """The Debian codename an image name or pattern says: ``debian_12*x64*`` -> ``bookworm``."""
    for version, codename in (("13", "trixie"), ("12", "bookworm")):
        if re.search(rf"debian[-_]{version}(?!\d)", image):
            return codename
    return None


class LabProvider:
    """Local Debian hosts under systemd-nspawn (``ollastack.lab``)."""

    name = "lab"
    # The lab writes each host's key into its known_hosts when it builds the host.
    strict_host_keys = "yes"
    # All on the bridge: the first host is the gateway, the others the backends.
    makes_fleets = True

    def check(self, stack: Stack) -> None:
        return None

    def release(self, stack: Stack) -> tuple[str | None, str]:
        return stack.lab.release, "lab.release"

    def names_hosts(self, stack: Stack) -> bool:
        return False

    def warnings(self, stack: Stack) -> list[str]:
        return []

    def create(self, stack: Stack, progress: Progress) -> list[Host]:
        return self._reached(stack, [Host.from_record(h) for h in lab.up(stack, progress)])

    def destroy(self, stack: Stack, progress: Progress) -> list[str]:
        return lab.down(stack.stack.name, progress)

    def hosts(self, stack: Stack) -> list[Host]:
        return self._reached(stack, [Host.from_record(h) for h in lab.list_hosts(stack.stack.name) if h["running"]])

    def known_hosts(self, stack: Stack) -> Path:
        return lab.known_hosts_path()

    def host_settings(self, stack: Stack) -> Stack:
        # The control machine (the bridge's address) converges and tests the hosts: it may always reach SSH.
        gateway = f"{lab.gateway(stack.lab.subnet)}/32"
        if gateway in stack.access.admin_cidrs:
            return stack
        access = stack.access.model_copy(update={"admin_cidrs": [*stack.access.admin_cidrs, gateway]})
        return stack.model_copy(update={"access": access})

    def fleet_names(self, stack: Stack) -> list[str]:
        return lab.host_names(stack)

    def remove(self, stack: Stack, hosts: list[Host], progress: Progress) -> list[str]:
        return lab.remove(stack.stack.name, [h.name for h in hosts], progress)

    def _reached(self, stack: Stack, hosts: list[Host]) -> list[Host]:
        """The hosts as SSH reaches them: with ``lab.jump_backends``, a fleet's backends through its running
        gateway (``Host.jump``), as a cloud's are; otherwise each directly on the bridge."""
        gateway = next((h for h in hosts if h.name == self.fleet_names(stack)[0]), None)
        if not (stack.lab.jump_backends and stack.fleet.backends and gateway):
            return hosts
        return [h if h is gateway else replace(h, jump=gateway) for h in hosts]


class StaticProvider:
    """Existing hosts listed in ``static.hosts``: nothing is created or deleted."""

    name = "static"
    strict_host_keys = "accept-new"
    makes_fleets = False

    def check(self, stack: Stack) -> None:
        if not stack.static.hosts:
            raise ValueError("static.hosts: provider = \"static\" needs at least one host")

    def release(self, stack: Stack) -> tuple[str | None, str]:
        return None, ""

    def names_hosts(self, stack: Stack) -> bool:
        return False

    def warnings(self, stack: Stack) -> list[str]:
        return []

    def create(self, stack: Stack, progress: Progress) -> list[Host]:
        hosts = self.hosts(stack)
        wait_until_reachable(stack, hosts, self.known_hosts(stack), progress)
        return hosts

    def destroy(self, stack: Stack, progress: Progress) -> list[str]:
        progress("static hosts are not created by ollastack: nothing to delete")
        return []

    def hosts(self, stack: Stack) -> list[Host]:
        return [Host(name, name, user=stack.static.user) for name in stack.static.hosts]

    def known_hosts(self, stack: Stack) -> Path:
        return known_hosts_file(stack.stack.name)

    def host_settings(self, stack: Stack) -> Stack:
        return stack

    def fleet_names(self, stack: Stack) -> list[str]:
        return []

    def remove(self, stack: Stack, hosts: list[Host], progress: Progress) -> list[str]:
        progress("static hosts are not created by ollastack: nothing to delete")
        return []


class CloudProvider:
    """A cloud module of ``ollastack.cloud`` (its ``create``/``destroy``/``warnings``), hosts kept in the state file."""

    name = ""
    strict_host_keys = "accept-new"
    # The gateway with a public address, the backends without one in its network, reached through it.
    makes_fleets = True

    def check(self, stack: Stack) -> None:
        return None

    def release(self, stack: Stack) -> tuple[str | None, str]:
        return None, ""

    def names_hosts(self, stack: Stack) -> bool:
        return False

    def warnings(self, stack: Stack) -> list[str]:
        warn = getattr(cloud.provider(self.name), "warnings", None)
        return list(warn(stack)) if warn else []

    def create(self, stack: Stack, progress: Progress) -> list[Host]:
        state = StackState.load(stack.stack.name, self.name)
        hosts = [Host.from_record(h) for h in cloud.provider(self.name).create(stack, state, progress)]
        wait_until_reachable(stack, hosts, self.known_hosts(stack), progress)
        return hosts

    def destroy(self, stack: Stack, progress: Progress) -> list[str]:
        state = StackState.load(stack.stack.name, self.name)
        removed = cloud.provider(self.name).destroy(stack, state, progress)
        # A resource still recorded keeps the state file, so that the next `down` can finish the job.
        state.remove_if_empty()
        self.known_hosts(stack).unlink(missing_ok=True)
        return removed

    def hosts(self, stack: Stack) -> list[Host]:
        return StackState.load(stack.stack.name, self.name).saved_hosts()

    def preview(self, stack: Stack) -> Plan:
        """What ``create`` would do, cost and be refused for (``ollastack.cloud.<name>_preview``), reading only."""
        module = importlib.import_module(f"ollastack.cloud.{self.name}_preview")
        return module.preview(stack, StackState.load(stack.stack.name, self.name))

    def known_hosts(self, stack: Stack) -> Path:
        return known_hosts_file(stack.stack.name)

    def host_settings(self, stack: Stack) -> Stack:
        return stack

    def fleet_names(self, stack: Stack) -> list[str]:
        return list(cloud.provider(self.name).fleet_names(stack))

    def remove(self, stack: Stack, hosts: list[Host], progress: Progress) -> list[str]:
        state = StackState.load(stack.stack.name, self.name)
        names = [h.name for h in hosts]
        removed = list(cloud.provider(self.name).remove_hosts(stack, state, names, progress))
        # Only once their resources are gone: an interrupted removal still lists them for the next `up`.
        state.set_hosts([h for h in state.hosts if h["name"] not in names])
        return removed


class AzureProvider(CloudProvider):
    name = "azure"

    def check(self, stack: Stack) -> None:
        if not stack.azure.subscription():
            raise ValueError("azure.subscription_id: provider = \"azure\" needs a subscription; "
                             "set azure.subscription_id or AZURE_SUBSCRIPTION_ID")

    def release(self, stack: Stack) -> tuple[str | None, str]:
        return debian_release(stack.azure.image), "azure.image"

    def names_hosts(self, stack: Stack) -> bool:
        return bool(stack.azure.dns_label)


class AlibabaProvider(CloudProvider):
    name = "alibaba"

    def check(self, stack: Stack) -> None:
        public, _ = stack.key_paths()
        try:
            kind = (public.read_text(errors="replace").split() or ["(empty file)"])[0]
        except OSError as exc:
            raise ValueError(f"access.ssh_public_key: cannot read {public}: {exc.strerror}") from None
        if kind not in ALIBABA_KEY_TYPES:
            raise ValueError(
                f"access.ssh_public_key: Alibaba Cloud imports RSA, DSA or ECDSA keys only, and {public} is "
                f"{kind[:40]!r}; make one with `ssh-keygen -t rsa -b 4096 -f ~/.ssh/ollastack_rsa` and set "
                "access.ssh_public_key = \"~/.ssh/ollastack_rsa.pub\", "
                "access.ssh_private_key = \"~/.ssh/ollastack_rsa\"")

    def release(self, stack: Stack) -> tuple[str | None, str]:
        return debian_release(stack.alibaba.image_pattern), "alibaba.image_pattern"


REGISTRY: dict[str, Provider] = {p.name: p for p in (LabProvider(), StaticProvider(), AzureProvider(), AlibabaProvider())}


class UnknownProvider(ValueError):
    """A provider name no provider is registered for."""


def get(name: str) -> Provider:
    """The provider registered as ``name``; UnknownProvider (a ValueError) naming the known ones otherwise.

    Example: ``providers.get("static").hosts(stack)`` -> ``[Host("192.0.2.10", "192.0.2.10", user="debian")]``
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownProvider(f"unknown provider {name!r}: expected one of {', '.join(REGISTRY)}") from None
