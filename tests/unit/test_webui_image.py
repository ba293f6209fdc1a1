"""``openwebui.build_image``: its settings, the build's command lines and script, the tag's inputs, the
archive format, and that a build happens only when no archive exists for these inputs."""

from __future__ import annotations

import hashlib
import json
import shlex
import tarfile
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from ollastack.config import OpenWebUISection
from ollastack.deploy import webui_image
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.webui_image import (
    chroot_command, debootstrap_command, docker_archive, ensure_built, image_key, layer_command)


def data(**settings) -> types.SimpleNamespace:
    values = dict(DEFAULTS)
    values.update({f"ollastack_openwebui_{k}": v for k, v in settings.items()})
    return types.SimpleNamespace(**values)


def test_defaults_pull_the_upstream_image():
    section = OpenWebUISection()
    assert section.build_image is False and section.build_mirror == ""
    assert section.build_dir == "~/.cache/ollastack/images"


@pytest.mark.parametrize("settings, message", [
    ({"build_image": True, "install": "pip"}, "set install = \"container\""),
    ({"build_image": True, "image_archive": __file__}, "keep one"),
    ({"build_image": True, "build_dir": ""}, "needs build_dir"),
    ({"build_mirror": "http://mirror.example.com/debian;reboot"}, "build_mirror"),
    ({"build_mirror": "ftp://mirror.example.com/debian"}, "build_mirror"),
    ({"build_dir": "/srv/images\nExecStart=/bin/sh"}, "build_dir"),
])
def test_refused_settings(settings, message):
    with pytest.raises(ValidationError, match=message):
        OpenWebUISection(**settings)


def test_mirror_trailing_slash_is_dropped():
    assert OpenWebUISection(build_image=True, build_mirror="http://mirror.example.com/debian/").build_mirror \
        == "http://mirror.example.com/debian"


def test_command_lines_are_argument_lists_with_paths_whole():
    rootfs = Path("/srv/my images/.build-x/rootfs")
    assert debootstrap_command(rootfs, "http://mirror.example.com/debian") == [
        "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm",
        str(rootfs), "http://mirror.example.com/debian"]
    command = chroot_command(rootfs, "/var/cache/ollastack/install-open-webui.sh")
    assert command[:6] == ["unshare", "--mount", "--fork", f"--mount-proc={rootfs}/proc", "chroot", str(rootfs)]
    # Nothing of this machine's environment (PIP_FIND_LINKS, proxies, tokens) reaches the build.
    assert command[6:8] == ["/usr/bin/env", "-i"] and command[-1] == "/var/cache/ollastack/install-open-webui.sh"
    assert layer_command(rootfs, Path("/srv/my images/layer.tar")) == [
        "tar", "--numeric-owner", "-C", str(rootfs), "--exclude=./dev/*", "--exclude=./proc/*", "-cf",
        "/srv/my images/layer.tar", "."]


def test_install_script_is_the_pip_routes_with_quoted_values(tmp_path):
    script = webui_image._install_script(data(index_url="https://pypi.example.com/simple"),
                                         [Path("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")], "0.12.4")
    assert "/usr/bin/python3.11" in script and "/opt/open-webui" in script
    # torch only from the wheelhouse; open-webui from the mirror with the wheelhouse searched too.
    assert "--no-index --find-links /var/cache/ollastack/wheels torch" in script
    assert ("--index-url https://pypi.example.com/simple --find-links /var/cache/ollastack/wheels "
            "open-webui==0.12.4") in script
    assert "echo open-webui==0.12.4 > /opt/open-webui/.ollastack-installed" in script
    for line in script.splitlines():
        if line.startswith("$uv pip install"):
            shlex.split(line)


def test_tag_inputs(tmp_path):
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"x" * 10)
    base = image_key(data(), [wheel])
    assert image_key(data(), [wheel]) == base
    assert image_key(data(version="0.12.5"), [wheel]) != base
    assert image_key(data(index_url="https://pypi.example.com/simple"), [wheel]) != base
    assert image_key(data(build_mirror="http://mirror.example.com/debian"), [wheel]) != base
    assert image_key(data(), []) != base
    wheel.write_bytes(b"x" * 11)
    assert image_key(data(), [wheel]) != base


def test_docker_archive_layout(tmp_path):
    layer = tmp_path / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        tar.add(__file__, arcname="app/test.py")
    digest = hashlib.sha256(layer.read_bytes()).hexdigest()
    archive = tmp_path / "image.tar"
    docker_archive(archive, "localhost/ollastack/open-webui:0.12.4-abc", [layer], {"Cmd": ["/bin/true"]})
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        assert manifest == [{"Config": manifest[0]["Config"], "RepoTags": ["localhost/ollastack/open-webui:0.12.4-abc"],
                             "Layers": [f"{digest}/layer.tar"]}]
        config = json.load(tar.extractfile(manifest[0]["Config"]))
        assert tar.extractfile(f"{digest}/layer.tar").read() == layer.read_bytes()
    assert config["rootfs"] == {"type": "layers", "diff_ids": [f"sha256:{digest}"]}
    assert config["config"] == {"Cmd": ["/bin/true"]} and config["os"] == "linux"


def test_builds_once_then_reuses_the_archive(tmp_path, monkeypatch):
    builds = []

    def fake_build(data, wheels, tag, key, archive, work):
        builds.append((tag, archive, work))
        archive.write_bytes(b"image")

    monkeypatch.setattr(webui_image, "build", fake_build)
    monkeypatch.setattr(webui_image.os, "geteuid", lambda: 0)
    settings = data(build_image=True, build_dir=str(tmp_path / "images"))
    tag, archive = ensure_built(settings)
    assert ensure_built(settings) == (tag, archive) and len(builds) == 1
    key = image_key(settings, [])[:12]
    assert tag == f"localhost/ollastack/open-webui:0.12.4-{key}"
    assert archive == tmp_path / "images" / f"open-webui-0.12.4-{key}.tar"
    assert builds[0][2] == tmp_path / "images" / f".build-{key}"
    ensure_built(data(build_image=True, build_dir=str(tmp_path / "images"), version="0.12.5"))
    assert len(builds) == 2


def test_refuses_without_root(tmp_path, monkeypatch):
    monkeypatch.setattr(webui_image.os, "geteuid", lambda: 1000)
    with pytest.raises(Exception, match="needs root"):
        ensure_built(data(build_image=True, build_dir=str(tmp_path)))
