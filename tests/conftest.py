"""Shared fixtures: an SSH key pair, Ollama stand-in archives, lab stacks and a converged lab host.

Lab tests (marker ``lab``) boot real Debian 12 hosts with systemd-nspawn; they need root and the
tools `make install` puts on the machine. They share one stack (``citest``) whose hosts are
removed at the end of the session.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.labkit import STACK, LabStack, lab_stack_fixture
from tests.support.standin.build_archive import build_archive, unpack
from tests.support.webui_standin.build_image import build_image

# Under CI=true a skipped lab test fails the run (tests/support/lab_required.py); under pytest-xdist each
# lab module runs whole on one worker (tests/support/lab_groups.py).
pytest_plugins = ["tests.support.lab_required", "tests.support.lab_groups"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ollastack")


@pytest.fixture(scope="session")
def keypair(workdir) -> tuple[Path, Path]:
    private = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ollastack-tests", "-f", str(private)],
                   check=True)
    return private.with_suffix(".pub"), private


@pytest.fixture(scope="session")
def archives(workdir) -> dict[str, tuple[Path, str]]:
    """Stand-in release archives: {"0.13.3": (path, sha256) of a .tgz, "0.13.4": ... of a .tar.zst}."""
    out = {}
    for version, fmt in (("0.13.3", "tgz"), ("0.13.4", "tar.zst")):
        dest = workdir / f"archive-{version}"
        dest.mkdir()
        out[version] = build_archive(dest, version, fmt)
    return out


@pytest.fixture(scope="session")
def standin_image(tmp_path_factory) -> Path:
    """The Open WebUI stand-in image as a ``podman save`` archive, built once per test run (lab tests)."""
    return build_image(tmp_path_factory.mktemp("webui-image"))


@pytest.fixture(scope="session")
def binary(tmp_path_factory, archives) -> Path:
    """The stand-in ``ollama`` 0.13.3 unpacked from its release archive, as a deploy would install it."""
    archive, _ = archives["0.13.3"]
    return unpack(archive, tmp_path_factory.mktemp("release") / "usr")


@pytest.fixture(scope="session", params=["bookworm", "trixie"])
def lab_stack(request, tmp_path_factory, keypair, archives):
    """The spine's test stack, once per supported Debian release (12 and 13)."""
    class SpineStack(LabStack):
        name, release = f"{STACK}-{request.param[:3]}", request.param

    yield from lab_stack_fixture(lambda: SpineStack(tmp_path_factory.mktemp(request.param), keypair, archives))


@pytest.fixture(scope="session")
def lab_host(lab_stack) -> dict:
    """One running lab host of the test stack (image built on first use)."""
    return lab_stack.up_one()


@pytest.fixture(scope="session")
def converged(lab_stack, lab_host) -> dict:
    """The lab host after a first converge with the default test stack; returns pyinfra's report."""
    lab_stack.write()
    _, report = lab_stack.pyinfra()
    return report
