"""Base packages and apt behaviour every ollastack host needs."""

import weakref
from collections.abc import Sequence
from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt

from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.present import Present, host_state, put

PACKAGES = ["curl", "ca-certificates", "htop", "nftables", "python3", "tar"]
APT_CONF_PATH = "/etc/apt/apt.conf.d/90ollastack"
APT_CONF = """// Managed by ollastack: wait for a running dpkg (cloud-init, unattended-upgrades) instead of failing.
DPkg::Lock::Timeout "300";
Acquire::Retries "3";
"""
#: What ``base`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"paths": [APT_CONF_PATH], "packages": PACKAGES}


# Per host of this run: the packages an operation planned earlier in it installs.
_PLANNED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def ensure_packages(packages: list[str], name: str, present: Present | None = None) -> None:
    """Install ``packages``; refresh the apt index only when one is missing, so re-runs change nothing.
    ``present`` (``deploy.present.host_state(packages=...)``) saves reading every installed package. Packages an
    earlier ``ensure_packages`` of this run installs (``base``'s, for the whole site) are not asked for again.

    Example: ``ensure_packages(["nginx"], "Install nginx")``
    """
    planned = _PLANNED.setdefault(host._get_module(), set())  # type: ignore[attr-defined]
    if all(p in planned for p in packages):
        return
    if present is not None:
        missing = not present.installed(packages)
    else:
        installed = host.get_fact(DebPackages)
        missing = any(p not in installed for p in packages)
    if missing:
        apt.packages(name=name, packages=packages, update=True, cache_time=3600, no_recommends=True,
                     _retries=2, _retry_delay=5)
        planned.update(packages)


@deploy("Base", data_defaults=DEFAULTS)
def base(packages: Sequence[str] = ()):
    """The apt settings and the base packages, with ``packages`` (the site's others: deploy/site.py passes what
    ``read_host`` returns) in the same apt run: one dpkg run costs seconds, so not one per component.

    Example: ``base(["nginx"])``
    """
    wanted = [*PACKAGES, *(p for p in packages if p not in PACKAGES)]
    present = host_state(paths=READS["paths"], packages=wanted)
    put(present, name="apt waits for the dpkg lock", src=StringIO(APT_CONF), dest=APT_CONF_PATH)
    ensure_packages(wanted, "Install packages", present)
