"""Base packages and apt behaviour every ollastack host needs."""

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


def ensure_packages(packages: list[str], name: str, present: Present | None = None) -> None:
    """Install ``packages``; refresh the apt index only when one is missing, so re-runs change nothing.
    ``present`` (``deploy.present.host_state(packages=...)``) saves reading every installed package.

    Example: ``ensure_packages(["nginx"], "Install nginx")``
    """
    if present is not None:
        missing = not present.installed(packages)
    else:
        installed = host.get_fact(DebPackages)
        missing = any(p not in installed for p in packages)
    if missing:
        apt.packages(name=name, packages=packages, update=True, cache_time=3600, no_recommends=True,
                     _retries=2, _retry_delay=5)


@deploy("Base", data_defaults=DEFAULTS)
def base():
    present = host_state(paths=[APT_CONF_PATH], packages=PACKAGES)
    put(present, name="apt waits for the dpkg lock", src=StringIO(APT_CONF), dest=APT_CONF_PATH)
    ensure_packages(PACKAGES, "Install base packages", present)

