"""Podman from Debian, for the container route of Open WebUI (host network, systemd units).

Podman itself runs as root, the containers do not: ``--userns=auto`` maps each container's root
to a free uid/gid range of the ``containers`` entries in /etc/subuid and /etc/subgid (``SUBID_RANGE``).

Debian 13's Podman 5.4 runs containers from Quadlet files (``templates/openwebui-container.container.j2``);
Debian 12's Podman 4.3 has no Quadlet, so containers run there from plain systemd units that call
``podman run`` (``templates/openwebui-container.service.j2``). ``deploy.release`` says which.
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.present import (NOTHING, Present, directory, host_state, line, put, service_running,
                                      service_stopped)

PACKAGES = ["podman", "crun", "conmon", "catatonit"]
IMAGE_CACHE = "/var/cache/ollastack/images"
#: Where ``--userns=auto`` takes container ranges from: the upper half of the uid space, clear of
#: the ranges useradd gives to users (from 100000). Podman's documented example.
SUBID_RANGE = "containers:2147483647:2147483648"
TIMER = "podman-auto-update.timer"
#: What ``podman`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"texts": ["/etc/subuid", "/etc/subgid"], "services": [TIMER], "packages": PACKAGES}


def archive_copy(archive: str) -> str:
    """Where the host keeps its copy of a local image archive.

    Example: ``archive_copy("/srv/open webui.tar") == "/var/cache/ollastack/images/open_webui.tar"``
    """
    # The local name may hold anything printable (spaces, ";"); the host's copy gets a plain one.
    return f"{IMAGE_CACHE}/{re.sub(r'[^A-Za-z0-9._-]', '_', archive.rsplit('/', 1)[-1])}"


def image_reads(image: str, archive: str) -> dict[str, list[str]]:
    """What ``ensure_image`` reads of the host, as ``host_state`` arguments.

    Example: ``host_state(**image_reads("localhost/x:1", "")) `` reads the image's id alone.
    """
    return {"paths": [IMAGE_CACHE, archive_copy(archive)] if archive else [], "images": [image]}


def ensure_image(image: str, archive: str, present: Present | None = None):
    """Make ``image`` present: ``podman load`` from a local archive when given, else ``podman pull``.
    ``present``: ``host_state`` read with ``image_reads(image, archive)`` (and the caller's own paths).

    Returns the operation that brought a new image (or None when nothing was needed), so the caller
    restarts its container only then.

    Example: ``loaded = ensure_image("ghcr.io/open-webui/open-webui:v0.12.4", "/srv/openwebui.tar")``
    """
    present = present or host_state(**image_reads(image, archive))
    if archive:
        remote = archive_copy(archive)
        directory(present, name="Image archive cache", path=IMAGE_CACHE, mode="0700")
        pushed = put(present, name="Push image archive", src=archive, dest=remote, mode="0600")
        missing = present.image(image) is None
        # A re-pushed archive may carry a new build under the same tag: load it again.
        if missing or pushed.will_change:
            q = shlex.quote
            wrong = q(f"{remote} does not contain {image}: set openwebui.image to the tag inside the archive")
            return server.shell(name=f"Load {image} from the archive",
                                commands=[f"podman load -q -i {q(remote)}",
                                          f"podman image exists -- {q(image)} || {{ echo {wrong} >&2; exit 1; }}"])
        return None
    if present.image(image) is None:
        unreachable = shlex.quote(f"cannot pull {image}: check the registry is reachable, or set "
                                  "openwebui.image_archive to a podman save archive")
        return server.shell(name=f"Pull {image}", _retries=2, _retry_delay=10,
                            commands=[f"podman pull -q -- {shlex.quote(image)} || {{ echo {unreachable} >&2; exit 1; }}"])
    return None


@deploy("Podman", data_defaults=DEFAULTS)
def podman():
    """Podman and its auto-update timer (``openwebui.autoupdate``)."""
    present = host_state(**READS)
    ensure_packages(PACKAGES, "Install Podman", present)
    if not present.installed(PACKAGES):
        present = NOTHING
    for path in READS["texts"]:
        line(present, name=f"Container id ranges in {path}", path=path, pattern=r"^containers:.*$", replace=SUBID_RANGE)
    if host.data.ollastack_openwebui_autoupdate:
        service_running(present, name=f"{TIMER} enabled", service=TIMER)
    else:
        service_stopped(present, name=f"{TIMER} disabled", service=TIMER)
