"""The Open WebUI container image built from the pinned PyPI release, on the control machine (``openwebui.build_image``).

For hosts that cannot reach ghcr.io (air-gapped sites, mainland-China regions): a Debian 12 root
filesystem made with debootstrap from ``openwebui.build_mirror`` (Python 3.11, which the release
needs), the release installed into ``/opt/open-webui`` by the pip route's own install script
(``templates/openwebui-install.sh.j2``: CPU torch from ``find_links`` or ``torch_index_url``, then
``open-webui==version`` from ``index_url``), packed as a docker-archive that ``podman load`` reads.
The deploy then pushes and loads it exactly like ``openwebui.image_archive``, and runs it from the
same unit as a pulled image.

The tag names the inputs (version, indexes, wheel names and sizes, mirror, this recipe), so a
converge with nothing changed finds the archive in ``openwebui.build_dir`` and builds nothing; a
lock keeps two converges from building the same image at once. Needs root and debootstrap on
the control machine.

Example::

    tag, archive = ensure_built(host.data)   # ("localhost/ollastack/open-webui:0.12.4-1a2b3c4d5e6f", Path(...))
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Sequence
from pathlib import Path

from pyinfra.api.exceptions import DeployError
from pyinfra.api.util import get_template

from ollastack.deploy.openwebui import UV_VERSION, VENV, WHEELS, install_arguments, local_wheels
from ollastack.lab import LabError, debian_mirror
from ollastack.resources import template

REPOSITORY = "localhost/ollastack/open-webui"
#: Raise when ``build`` changes what the image holds in a way its inputs below do not show.
RECIPE = 1
SUITE = "bookworm"
PYTHON = "/usr/bin/python3.11"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
SCRIPT = "/var/cache/ollastack/install-open-webui.sh"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
DATA = "/app/backend/data"
# Only what runs: the wheelhouse, uv's cache and uv itself were for the install.
BUILD_ONLY = ("var/cache/ollastack", "opt/ollastack", "var/cache/apt/archives", "var/lib/apt/lists")
# The image starts like the upstream one: HOST and PORT come from the unit (127.0.0.1, openwebui.port).
CMD = ["/bin/sh", "-c", f'exec {VENV}/bin/open-webui serve --host "${{HOST:-127.0.0.1}}" --port "${{PORT:-8080}}"']
ENV = [f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", f"DATA_DIR={DATA}",
       "HOME=/root", "LANG=C.UTF-8"]
# One build at a time in this process too: pyinfra's greenlets share it, and flock is per open file.
_BUILDING = threading.Lock()


def mirror(data) -> str:
    """``openwebui.build_mirror``, or the control machine's own Debian mirror when it is empty."""
    try:
        return data.ollastack_openwebui_build_mirror or debian_mirror()
    except LabError as error:
        raise DeployError(f"openwebui.build_mirror is empty and {error}") from None


def image_key(data, wheels: list[Path]) -> str:
    """SHA-256 of everything the image is made from; the tag carries its first 12 digits.

    Example: ``image_key(host.data, [Path("/opt/wheels/torch-2.13.0+cpu-cp311-....whl")])``
    """
    script = Path(template("openwebui-install.sh.j2")).read_bytes()
    inputs = {
        "version": data.ollastack_openwebui_version, "index_url": data.ollastack_openwebui_index_url,
        "torch_index_url": data.ollastack_openwebui_torch_index_url, "mirror": mirror(data),
        "wheels": [[w.name, w.stat().st_size] for w in wheels], "uv": UV_VERSION,
        "recipe": [RECIPE, SUITE, PYTHON, PACKAGES, BUILD_ONLY, CMD, ENV, hashlib.sha256(script).hexdigest()],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def debootstrap_command(rootfs: Path, mirror: str) -> list[str]:
    """The root filesystem: Debian 12 minbase with Python 3.11 (an argument list, never a shell line).

    Example: ``debootstrap_command(Path("/b/rootfs"), "http://mirror.example.com/debian")``
    """
    return ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), mirror]


def chroot_command(rootfs: Path, *command: str) -> list[str]:
    """``command`` inside ``rootfs`` with a clean environment and its own /proc, gone when it ends.

    Example: ``chroot_command(Path("/b/rootfs"), "/var/cache/ollastack/install-open-webui.sh")``
    """
    return ["unshare", "--mount", "--fork", f"--mount-proc={rootfs}/proc", "chroot", str(rootfs), "/usr/bin/env", "-i",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
            f"PIP_CERT=/{CA_BUNDLE}", *command]


def layer_command(rootfs: Path, layer: Path) -> list[str]:
    """The root filesystem as one tar layer; /dev and /proc stay empty (the runtime mounts its own)."""
    return ["tar", "--numeric-owner", "-C", str(rootfs), "--exclude=./dev/*", "--exclude=./proc/*", "-cf", str(layer), "."]


def _run(command: list[str]) -> None:
    env = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise DeployError(f"building the Open WebUI image: {command[0]} failed ({result.returncode}):\n"
                          f"{(result.stdout + result.stderr)[-3000:]}")


def _digest(layer: Path | bytes) -> str:
    if isinstance(layer, bytes):
        return hashlib.sha256(layer).hexdigest()
    with layer.open("rb") as stream:  # a root filesystem layer is gigabytes: hashed as it is read
        return hashlib.file_digest(stream, "sha256").hexdigest()


def docker_archive(dest: Path, tag: str, layers: Sequence[Path | bytes], config: dict) -> None:
    """Write a docker-archive (what ``podman save`` writes and ``podman load`` reads) of ``layers``
    (tar files, or tar data in memory).

    Example: ``docker_archive(Path("img.tar"), "localhost/x:1", [Path("layer.tar")], {"Cmd": ["/bin/true"]})``
    """
    digests = [_digest(layer) for layer in layers]
    image = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in digests]}},
                       sort_keys=True).encode()
    config_name = hashlib.sha256(image).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{d}/layer.tar" for d in digests]}]).encode()
    with tarfile.open(dest, "w") as archive:
        for digest, layer in zip(digests, layers):
            if isinstance(layer, bytes):
                _add_blob(archive, f"{digest}/layer.tar", layer)
            else:
                archive.add(layer, arcname=f"{digest}/layer.tar")
        _add_blob(archive, config_name, image)
        _add_blob(archive, "manifest.json", manifest)


def _add_blob(archive: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(blob), 0o644
    archive.addfile(info, io.BytesIO(blob))


def _install_script(data, wheels: list[Path], version: str) -> str:
    arguments = install_arguments(data, [w.name for w in wheels], f"open-webui=={version}")
    return get_template(str(template("openwebui-install.sh.j2"))).render(python=PYTHON, **arguments)


def build(data, wheels: list[Path], tag: str, key: str, archive: Path, work: Path) -> None:
    """Make ``archive`` (the image ``tag``) in the scratch directory ``work``, which it removes."""
    version = data.ollastack_openwebui_version
    rootfs, layer = work / "rootfs", work / "layer.tar"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(mode=0o700)
    try:
        _run(debootstrap_command(rootfs, mirror(data)))
        (rootfs / WHEELS.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            shutil.copy(wheel, rootfs / WHEELS.lstrip("/") / wheel.name)
        script = rootfs / SCRIPT.lstrip("/")
        script.write_text(_install_script(data, wheels, version))
        script.chmod(0o755)
        # The mirrors may sit behind this machine's own CAs: trusted for the install only.
        shutil.copy(f"/{CA_BUNDLE}", rootfs / CA_BUNDLE)
        _run(chroot_command(rootfs, SCRIPT))
        _run(chroot_command(rootfs, "update-ca-certificates", "--fresh"))
        for path in BUILD_ONLY:
            shutil.rmtree(rootfs / path, ignore_errors=True)
        for name in ("etc/resolv.conf", "etc/hostname"):
            (rootfs / name).write_text("")
        (rootfs / DATA.lstrip("/")).mkdir(parents=True, exist_ok=True)
        _run(layer_command(rootfs, layer))
        shutil.rmtree(rootfs)
        config = {"Cmd": CMD, "Env": ENV, "WorkingDir": "/app/backend",
                  "Labels": {"org.opencontainers.image.title": "Open WebUI", "org.opencontainers.image.version": version,
                             "org.opencontainers.image.source": f"open-webui=={version} from the package index",
                             "ollastack.inputs": key}}
        partial = archive.with_name(archive.name + ".partial")
        docker_archive(partial, tag, [layer], config)
        partial.chmod(0o600)
        os.replace(partial, archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ensure_built(data) -> tuple[str, Path]:
    """The image's tag and archive, built first unless ``openwebui.build_dir`` holds one for these inputs."""
    wheels = local_wheels(data)
    version = data.ollastack_openwebui_version
    key = image_key(data, wheels)[:12]
    tag = f"{REPOSITORY}:{version}-{key}"
    build_dir = Path(os.path.expanduser(data.ollastack_openwebui_build_dir))
    archive = build_dir / f"open-webui-{version}-{key}.tar"
    if archive.is_file():
        return tag, archive
    for tool in ("debootstrap", "unshare", "chroot", "tar"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise DeployError(f"openwebui.build_image needs {tool} on the control machine (apt install debootstrap)")
    if os.geteuid() != 0:
        raise DeployError("openwebui.build_image needs root on the control machine (debootstrap and chroot)")
    build_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _BUILDING, (build_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.is_file():
            build(data, wheels, tag, key, archive, build_dir / f".build-{key}")
    return tag, archive
