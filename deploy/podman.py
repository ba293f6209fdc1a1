"""Podman from Debian, for the container route of Open WebUI (host network, systemd units).

Podman itself runs as root, the containers do not: ``--userns=auto`` maps each container's root
to a free uid/gid range of the ``containers`` entries in /etc/subuid and /etc/subgid (``SUBID_RANGE``).

Debian 13's Podman 5.4 runs containers from Quadlet files (``templates/openwebui-container.container.j2``);
Debian 12's Podman 4.3 has no Quadlet, so containers run there from plain systemd units that call
``podman run`` (``templates/openwebui-container.service.j2``). ``deploy.release`` says which.
"""

from __future__ import annotations

import json
import re
import shlex
import tarfile

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


def archive_image_id(archive: str, image: str) -> str | None:
    """The id ``podman load`` gives ``image`` from a docker-archive (``podman save``'s default format): the
    sha256 of its config blob, named in the archive's manifest.json. None for another format, or when the
    manifest names no such image (or several without its tag).

    Example: ``archive_image_id("/srv/openwebui.tar", "ghcr.io/open-webui/open-webui:v0.12.4") == "3f1c…"``
    """
    try:
        # "r:": an uncompressed tar, whose members' headers are read by seeking past the layers; a compressed one
        # would be decompressed whole, so it is compared by checksum instead.
        with tarfile.open(archive, "r:") as tar:
            stream = tar.extractfile("manifest.json")
            manifest = json.load(stream) if stream else None
    except (OSError, KeyError, tarfile.TarError, ValueError):
        return None
    if not isinstance(manifest, list):
        return None
    entries = [e for e in manifest if isinstance(e, dict)]
    tagged = [e for e in entries if image in (e.get("RepoTags") or ())]
    entry = tagged[0] if len(tagged) == 1 else entries[0] if len(entries) == 1 and not tagged else None
    config = entry.get("Config") if entry else None
    found = re.fullmatch(r"(?:blobs/sha256/)?([0-9a-f]{64})(?:\.json)?", config) if isinstance(config, str) else None
    return found.group(1) if found else None


def image_reads(image: str, archive: str) -> dict[str, list[str]]:
    """What ``ensure_image`` reads of the host, as ``host_state`` arguments: the image's id, and for an archive
    whose image id cannot be read beforehand (``archive_image_id``) the checksum of the host's copy.

    Example: ``host_state(**image_reads("localhost/x:1", "")) `` reads the image's id alone.
    """
    if not archive:
        return {"paths": [], "images": [image]}
    copy = [archive_copy(archive)] if archive_image_id(archive, image) is None else []
    return {"paths": [IMAGE_CACHE, *copy], "images": [image]}


def ensure_image(image: str, archive: str, present: Present | None = None):
    """Make ``image`` present: ``podman load`` from a local archive when given, else ``podman pull``.
    ``present``: ``host_state`` read with ``image_reads(image, archive)`` (and the caller's own paths).

    Returns the operation that brought a new image (or None when nothing was needed), so the caller
    restarts its container only then.

    Example: ``loaded = ensure_image("ghcr.io/open-webui/open-webui:v0.12.4", "/srv/openwebui.tar")``
    """
    present = present or host_state(**image_reads(image, archive))
    if archive:
        return _load(image, archive, present)
    if present.image(image) is None:
        unreachable = shlex.quote(f"cannot pull {image}: check the registry is reachable, or set "
                                  "openwebui.image_archive to a podman save archive")
        return server.shell(name=f"Pull {image}", _retries=2, _retry_delay=10,
                            commands=[f"podman pull -q -- {shlex.quote(image)} || {{ echo {unreachable} >&2; exit 1; }}"])
    return None


def _load(image: str, archive: str, present: Present):
    """``ensure_image`` from a local archive: compared by image id when the archive's can be read (no checksum of
    a gigabyte archive on either machine per converge), else by the checksum of the host's copy."""
    expected = archive_image_id(archive, image)
    have = present.image(image)
    if expected is not None and have is not None and have.removeprefix("sha256:") == expected:
        return None
    remote = archive_copy(archive)
    directory(present, name="Image archive cache", path=IMAGE_CACHE, mode="0700")
    pushed = put(present, name="Push image archive", src=archive, dest=remote, mode="0600")
    # A re-pushed archive may carry a new build under the same tag: load it again.
    if expected is None and have is not None and not pushed.will_change:
        return None
    q = shlex.quote
    wrong = q(f"{remote} does not contain {image}: set openwebui.image to the tag inside the archive")
    loaded = (f"[ \"$(podman image inspect --format '{{{{.Id}}}}' -- {q(image)})\" = {expected} ]" if expected
              else f"podman image exists -- {q(image)}")
    return server.shell(name=f"Load {image} from the archive",
                        commands=[f"podman load -q -i {q(remote)}", f"{loaded} || {{ echo {wrong} >&2; exit 1; }}"])


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
