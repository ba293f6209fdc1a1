"""Base packages and apt behaviour every ollastack host needs."""

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from ollastack.deploy.defaults import DEFAULTS

PACKAGES = ["curl", "ca-certificates", "zstd", "htop", "nftables", "python3", "tar"]
APT_CONF = """// Managed by ollastack: wait for a running dpkg (cloud-init, unattended-upgrades) instead of failing.
DPkg::Lock::Timeout "300";
Acquire::Retries "3";
"""


def ensure_packages(packages: list[str], name: str) -> None:
    """Install ``packages``; refresh the apt index only when one is missing, so re-runs change nothing.

    Example: ``ensure_packages(["nginx"], "Install nginx")``
    """
    installed = host.get_fact(DebPackages)
    if any(p not in installed for p in packages):
        apt.packages(name=name, packages=packages, update=True, cache_time=3600, no_recommends=True,
                     _retries=2, _retry_delay=5)


@deploy("Base", data_defaults=DEFAULTS)
def base():
    files.put(name="apt waits for the dpkg lock", src=StringIO(APT_CONF), dest="/etc/apt/apt.conf.d/90ollastack")
    ensure_packages(PACKAGES, "Install base packages")

