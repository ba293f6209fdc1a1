"""Build the Open WebUI stand-in image as a ``podman load``-able archive (docker-archive format).

Registries are out of reach here, so the container route is tested with this image, loaded through
``openwebui.image_archive`` exactly like a ``podman save`` of the real image. Layer 1 is Python 3.11
taken from the lab's Debian image (the packages ``python3.11-minimal`` and ``libpython3.11-stdlib``
need, by their dpkg file lists); layer 2 is ``app.py`` at ``/app``.

Example::

    archive = build_image(Path("/tmp/img"))   # -> /tmp/img/open-webui-standin.tar
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from ollastack import lab
from ollastack.deploy.webui_image import docker_archive

STANDIN_IMAGE = "localhost/open-webui-standin:0.1"
ROOTS = ("python3.11-minimal", "libpython3.11-stdlib")
MERGED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _packages(status: str) -> dict[str, list[str]]:
    """Package -> names it depends on, from a dpkg status file (alternatives: all of them)."""
    deps = {}
    for stanza in status.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, re.M))
        if "Package" in fields:
            text = ",".join(fields.get(k, "") for k in ("Depends", "Pre-Depends"))
            deps[fields["Package"]] = [re.split(r"[ :(]", d.strip())[0] for d in re.split(r"[,|]", text) if d.strip()]
    return deps


def _closure(deps: dict[str, list[str]]) -> set[str]:
    todo, seen = list(ROOTS), set()
    while todo:
        name = todo.pop()
        if name in deps and name not in seen:
            seen.add(name)
            todo += deps[name]
    return seen


def _normalize(path: str) -> str:
    path = path.lstrip("/")
    first, _, rest = path.partition("/")
    return f"usr/{first}/{rest}" if first in MERGED and rest else path


def _python_layer(image: Path) -> bytes:
    with tarfile.open(image) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        status = tar.extractfile(members["var/lib/dpkg/status"]).read().decode()
        wanted = set()
        for package in _closure(_packages(status)):
            for suffix in (".list", ":amd64.list"):
                info = members.get(f"var/lib/dpkg/info/{package}{suffix}")
                if info:
                    wanted |= {_normalize(p) for p in tar.extractfile(info).read().decode().split() if p != "/."}
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as layer:
            for name in dict.fromkeys([*MERGED, *sorted(wanted)]):
                member = members.get(name)
                # The merged-/usr links (bin -> usr/bin, ...) are needed; a real directory would be empty.
                if member is None or (name in MERGED and not member.issym()):
                    continue
                member.name = name
                layer.addfile(member, tar.extractfile(member) if member.isfile() else None)
    return out.getvalue()


def _app_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        for name in ("app", "app/backend", "app/backend/data", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            layer.addfile(info)
        source = (Path(__file__).parent / "app.py").read_bytes()
        info = tarfile.TarInfo("app/app.py")
        info.size, info.mode = len(source), 0o755
        layer.addfile(info, io.BytesIO(source))
    return out.getvalue()


def build_image(dest: Path, release: str = "bookworm") -> Path:
    """Write ``dest/open-webui-standin.tar`` and return its path."""
    path = dest / "open-webui-standin.tar"
    docker_archive(path, STANDIN_IMAGE, [_python_layer(lab.ensure_image(release, lambda _: None)), _app_layer()], {
        "Cmd": ["/usr/bin/python3.11", "/app/app.py"], "WorkingDir": "/app",
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Labels": {"org.opencontainers.image.title": "Open WebUI stand-in (tests only)"}})
    return path
