"""ollastack as others get it: a wheel installed into a fresh venv, used from a directory holding only a
stack file, and its deploys imported by a pyinfra project of someone else's (its own inventory and deploy
file, run with the plain ``pyinfra`` command).

Nothing here runs from the checkout: the venv has no access to it (no PYTHONPATH, no editable install),
so a file the wheel forgot fails these tests.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ollastack import lab
from tests.support.labkit import changed_ops, ssh, without_leftovers
from tests.support.repo import REPO

pytestmark = pytest.mark.lab

STACK = "wheeltest"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user who only installed the wheel: nothing points at the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLASTACK_") and k != "PYTHONPATH"}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    return next(out.glob("ollastack-*.whl"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv (no system site-packages) with the wheel and its dependencies installed."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root")
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    subprocess.run([str(root / "bin/pip"), "install", "-q", str(wheel)], check=True, env=clean_env(), timeout=900)
    return root


def test_wheel_ships_the_deploys_templates_and_inventories_and_nothing_top_level(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("ollastack/deploy/site.py", "ollastack/deploy/files/ollama-pull.py",
                    "ollastack/templates/nginx-site.conf.j2", "ollastack/inventories/lab.py",
                    "ollastack/inventories/azure.py"):
        assert shipped in names
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"ollastack", "-".join(wheel.name.split("-")[:2]) + ".dist-info"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, keypair, archives, venv):
    """An empty directory holding only a stack file; its lab host is removed afterwards."""
    where = tmp_path_factory.mktemp("user")
    archive, sha = archives["0.13.3"]
    public, private = keypair
    (where / "stack.toml").write_text(
        f'[stack]\nname = "{STACK}"\nprovider = "lab"\n\n[lab]\nrelease = "bookworm"\n\n'
        f'[access]\nadmin_cidrs = ["198.51.100.0/24"]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n\n'
        f'[ollama]\narchive = "{archive}"\nsha256 = "{sha}"\nmodels = []\n\n[openwebui]\ninstall = "none"\n')

    def down() -> None:
        subprocess.run([str(venv / "bin/ollastack"), "lab", "down"], cwd=where, env=clean_env(), timeout=300)
    without_leftovers(STACK, down)
    yield where
    down()


def installed(venv: Path, *args: str, cwd: Path, timeout: int = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin/ollastack"), *args], cwd=cwd, env=clean_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_installed_ollastack_is_the_wheel_not_the_checkout(venv, project):
    found = subprocess.run([str(venv / "bin/python"), "-c", "import importlib.util as u; "
                            "print(u.find_spec('ollastack.deploy.site').origin)"],
                           cwd=project, env=clean_env(), capture_output=True, text=True, check=True)
    assert found.stdout.strip().startswith(str(venv))


def test_up_status_down_from_a_directory_with_only_a_stack_file(venv, project):
    up = installed(venv, "--json", "up", cwd=project)
    assert up.returncode == 0, up.stderr[-4000:]
    report = json.loads(up.stdout)
    url = report["hosts"][0]["url"]
    context = ssl.create_default_context(cafile=report["ca"])
    # Verified against the stack CA; Open WebUI is left out, so nginx answers its 503 page.
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(url, context=context, timeout=30)
    assert answer.value.code == 503
    assert Path(report["ca"]).is_relative_to(project)
    # Everything the run kept sits beside the stack file, in the folders ollastack documents.
    assert {p.name for p in project.iterdir()} <= {"stack.toml", ".ollastack", "ssl"}

    status = installed(venv, "--json", "status", cwd=project, timeout=300)
    assert status.returncode == 0, status.stderr
    [host] = json.loads(status.stdout)["hosts"]
    assert host["ok"] and host["address"] == report["hosts"][0]["address"]

    down = installed(venv, "down", "--yes", cwd=project, timeout=300)
    assert down.returncode == 0, down.stderr
    assert [h for h in lab.list_hosts() if h["stack"] == STACK] == []


REUSE = "reusetest"

INVENTORY = '''"""Someone else's inventory: one host, their own data beside ollastack's namespaced keys."""
hosts = [({address!r}, {{
    "ssh_user": "root", "ssh_key": {key!r}, "ssh_known_hosts_file": {known!r},
    "ssh_strict_host_key_checking": "yes",
    "ollastack_ollama_archive": {archive!r}, "ollastack_ollama_sha256": {sha!r}, "ollastack_ollama_models": [],
    "role": "chat",
}})]
'''

DEPLOY = '''"""Someone else's deploy: two ollastack components, then an operation of their own."""
from io import StringIO

from pyinfra import host
from pyinfra.operations import files

from ollastack.deploy.base import base
from ollastack.deploy.ollama import ollama

base()
ollama()
files.put(name="Our role file", src=StringIO(host.data.role + "\\n"), dest="/etc/our-role")
'''


@pytest.fixture(scope="module")
def reuse_host(tmp_path_factory, keypair, venv) -> dict:
    """A lab host booted by the installed CLI, to be converged by a project that is not ollastack."""
    where = tmp_path_factory.mktemp("reuse-stack")
    public, private = keypair
    (where / "stack.toml").write_text(
        f'[stack]\nname = "{REUSE}"\nprovider = "lab"\n\n[lab]\nrelease = "trixie"\n\n'
        f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n')
    without_leftovers(REUSE, lambda: installed(venv, "lab", "down", cwd=where, timeout=300))
    up = installed(venv, "--json", "lab", "up", cwd=where, timeout=600)
    assert up.returncode == 0, up.stderr
    yield json.loads(up.stdout)[0]
    installed(venv, "lab", "down", cwd=where, timeout=300)


def converge_project(venv: Path, project: Path) -> dict:
    result = subprocess.run([str(venv / "bin/pyinfra"), "-y", "--json", "inventory.py", "deploy.py"], cwd=project,
                            env=clean_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads([line for line in result.stdout.splitlines() if line.startswith('{"plan"')][-1])


def test_a_plain_pyinfra_project_imports_and_converges_two_components(tmp_path, venv, reuse_host, keypair,
                                                                      archives):
    archive, sha = archives["0.13.3"]
    (tmp_path / "inventory.py").write_text(INVENTORY.format(
        address=reuse_host["address"], key=str(keypair[1]), known=str(lab.known_hosts_path()),
        archive=str(archive), sha=sha))
    (tmp_path / "deploy.py").write_text(DEPLOY)

    first = changed_ops(converge_project(venv, tmp_path))
    assert {"Ollama | Ollama unit", "Ollama | Ollama settings (override.conf)", "Our role file"} <= set(first)
    assert ssh(reuse_host["address"], "cat /etc/our-role", keypair).stdout == "chat\n"
    version = ssh(reuse_host["address"], "ollama --version", keypair).stdout
    assert "0.13.3" in version
    assert ssh(reuse_host["address"], "systemctl is-active ollama", keypair).stdout.strip() == "active"

    assert changed_ops(converge_project(venv, tmp_path)) == []
