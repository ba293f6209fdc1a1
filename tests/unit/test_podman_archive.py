"""The image id a local archive will load as, read from its manifest (deploy/podman.py), so that a converge
compares image ids instead of checksumming the archive on both machines."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

from ollastack.deploy.podman import archive_image_id, image_reads
from ollastack.deploy.webui_image import docker_archive

TAG = "localhost/ollastack/open-webui:abc"


def config_sha256(archive) -> str:
    """The sha256 of the config blob, computed from the archive's bytes (what Podman names the image)."""
    with tarfile.open(archive) as tar:
        config = json.load(tar.extractfile("manifest.json"))[0]["Config"]
        return hashlib.sha256(tar.extractfile(config).read()).hexdigest()


def write_tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_a_docker_archive_names_the_id_podman_gives_it(tmp_path):
    archive = tmp_path / "image.tar"
    docker_archive(archive, TAG, [b"layer one", b"layer two"], {"Cmd": ["/bin/true"]})
    assert archive_image_id(str(archive), TAG) == config_sha256(archive)
    # Another build under the same tag is another id.
    other = tmp_path / "other.tar"
    docker_archive(other, TAG, [b"layer one", b"layer two"], {"Cmd": ["/bin/false"]})
    assert archive_image_id(str(other), TAG) not in (None, archive_image_id(str(archive), TAG))


def test_the_entry_of_the_tag_among_several(tmp_path):
    first, second = "a" * 64, "b" * 64
    manifest = [{"Config": f"{first}.json", "RepoTags": ["x:1"]}, {"Config": f"blobs/sha256/{second}", "RepoTags": [TAG]}]
    archive = tmp_path / "two.tar"
    write_tar(archive, {"manifest.json": json.dumps(manifest).encode()})
    assert archive_image_id(str(archive), TAG) == second
    assert archive_image_id(str(archive), "x:1") == first
    # Several images, none of them the tag: no id to trust (the load then says which tag it lacks).
    assert archive_image_id(str(archive), "y:1") is None


def test_a_single_image_under_another_tag_still_has_its_id(tmp_path):
    archive = tmp_path / "one.tar"
    write_tar(archive, {"manifest.json": json.dumps([{"Config": f"{'c' * 64}.json", "RepoTags": ["x:1"]}]).encode()})
    assert archive_image_id(str(archive), TAG) == "c" * 64


def test_no_id_for_what_is_not_a_plain_docker_archive(tmp_path):
    docker = tmp_path / "image.tar"
    docker_archive(docker, TAG, [b"layer"], {})
    compressed = tmp_path / "image.tar.gz"
    compressed.write_bytes(gzip.compress(docker.read_bytes()))
    oci = tmp_path / "oci.tar"
    write_tar(oci, {"index.json": b"{}", "oci-layout": b'{"imageLayoutVersion": "1.0.0"}'})
    broken = tmp_path / "broken.tar"
    write_tar(broken, {"manifest.json": b"not json"})
    odd = tmp_path / "odd.tar"
    write_tar(odd, {"manifest.json": json.dumps([{"Config": "../etc/passwd", "RepoTags": [TAG]}]).encode()})
    text = tmp_path / "text.tar"
    text.write_text("hello")
    for path in (compressed, oci, broken, odd, text, tmp_path / "missing.tar"):
        assert archive_image_id(str(path), TAG) is None, path


def test_the_host_copy_is_checksummed_only_without_an_id(tmp_path):
    docker = tmp_path / "image.tar"
    docker_archive(docker, TAG, [b"layer"], {})
    assert image_reads(TAG, str(docker)) == {"paths": ["/var/cache/ollastack/images"], "images": [TAG]}
    compressed = tmp_path / "image.tar.gz"
    compressed.write_bytes(gzip.compress(docker.read_bytes()))
    assert image_reads(TAG, str(compressed))["paths"] == ["/var/cache/ollastack/images",
                                                          "/var/cache/ollastack/images/image.tar.gz"]
    assert image_reads(TAG, "") == {"paths": [], "images": [TAG]}
