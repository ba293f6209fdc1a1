"""What differs between the Debian releases ollastack supports — the one place to look.

Components ask ``host_release()`` instead of testing release names themselves::

    if host_release().quadlet: ...      # Podman >= 4.4 reads .container units
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from ollastack.deploy.facts import DebianRelease
from ollastack.deploy.present import fact
from ollastack.deploy.guards import plan_check


@dataclass(frozen=True)
class Release:
    codename: str
    version: str
    #: nginx 1.22 enables HTTP/2 on the listen line; 1.25+ wants ``http2 on;`` instead.
    nginx_http2_directive: bool
    #: Podman >= 4.4 runs containers from Quadlet ``.container`` files.
    quadlet: bool
    #: Interpreter for Open WebUI's pip route (it needs Python 3.11 or 3.12); None: not offered.
    webui_python: str | None


RELEASES = {
    "debian12": Release("bookworm", "12", nginx_http2_directive=False, quadlet=False, webui_python="python3.11"),
    "debian13": Release("trixie", "13", nginx_http2_directive=True, quadlet=True, webui_python=None),
}
#: What ``host_release`` asks ``deploy.present.fact`` (for ``prefetch``).
FACTS: list[tuple[type, dict]] = [(DebianRelease, {})]
SUPPORTED = ", ".join(f"Debian {r.version} ({r.codename})" for r in RELEASES.values())


@plan_check
def host_release() -> Release:
    """The current host's release (read once per run), or a DeployError naming the supported ones."""
    found = fact(DebianRelease)
    if found not in RELEASES:
        raise DeployError(f"{host.name}: {found or 'not Debian'} is not supported; ollastack supports {SUPPORTED}")
    return RELEASES[found]
