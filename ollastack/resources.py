"""Where the files that ship with the package are: the deploys, their templates, the inventories.

In a checkout they are the top-level ``deploy/``, ``templates/`` and ``inventories/`` folders (an
editable install maps them into the package); in a wheel they sit inside ``ollastack/``. Either way
they are found through the import system, never relative to the working directory.

Example: ``template("nginx-site.conf.j2")`` is the path pyinfra's ``files.template`` reads.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _folder(package: str) -> Path:
    return Path(str(files(package)))


def template(name: str) -> Path:
    """A file of ``templates/``: ``template("firewall.nft.j2")``."""
    return _folder("ollastack.templates") / name


def deploy_file(name: str) -> Path:
    """A file of ``deploy/``: ``deploy_file("site.py")``, ``deploy_file("files/ollama-pull.py")``."""
    return _folder("ollastack.deploy") / name


def inventory_file(provider: str) -> Path:
    """The pyinfra inventory of a provider: ``inventory_file("lab")`` is ``inventories/lab.py``."""
    return _folder("ollastack.inventories") / f"{provider}.py"
