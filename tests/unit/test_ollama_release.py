"""Which Ollama archive a version ships, and the deploy's download of it (pyinfra's fake connector)."""

from __future__ import annotations

import pytest

from ollastack.ollama_release import RELEASES, archive_name, archive_url, listed_files, published_sha256, release_url
from tests.unit.test_gpu_fake import LINUX, converge, site_gpu_and_ollama
from tests.unit.test_ollama_env import stack_data

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64
# What the release workflow writes (`find . -type f | xargs sha256sum` in dist/): paths start with ./
SUMS = (f"{SHA_A}  ./ollama-linux-amd64-rocm.tar.zst\n{SHA_B}  ./ollama-linux-amd64.tar.zst\n"
        f"{SHA_C}  ./ollama-linux-arm64.tar.zst\n{SHA_A}  ./OllamaSetup.exe\n")


@pytest.mark.parametrize("version, name", [
    ("0.1.32", "ollama-linux-amd64.tgz"),
    ("0.9.6", "ollama-linux-amd64.tgz"),       # 9 < 14 as numbers, not as text
    ("0.13.3", "ollama-linux-amd64.tgz"),
    ("0.13.99", "ollama-linux-amd64.tgz"),
    ("0.14.0", "ollama-linux-amd64.tar.zst"),
    ("0.34.2", "ollama-linux-amd64.tar.zst"),
    ("1.0.0", "ollama-linux-amd64.tar.zst"),
])
def test_archive_name_follows_the_version(version, name):
    assert archive_name(version) == name


def test_urls_follow_githubs_release_layout():
    assert archive_url("0.13.3") == "https://github.com/ollama/ollama/releases/download/v0.13.3/ollama-linux-amd64.tgz"
    assert archive_url("0.14.0") == f"{RELEASES}/v0.14.0/ollama-linux-amd64.tar.zst"
    assert release_url("0.14.0", "sha256sum.txt", base="http://127.0.0.1:8000/dl/") == \
        "http://127.0.0.1:8000/dl/v0.14.0/sha256sum.txt"


@pytest.mark.parametrize("version", ["0.14", "v0.14.0", "0.14.0-rc1", "0.14.0\n", "../0.14.0", ""])
def test_a_version_that_is_not_a_release_number_is_refused(version):
    with pytest.raises(ValueError, match="expected a release number"):
        release_url(version, "sha256sum.txt")


def test_published_sha256_picks_the_exact_file():
    assert published_sha256(SUMS, "ollama-linux-amd64.tar.zst") == SHA_B
    assert published_sha256(SUMS, "ollama-linux-arm64.tar.zst") == SHA_C
    assert published_sha256(SUMS, "ollama-linux-amd64.tgz") is None
    # sha256sum's plain and binary-mode lines, without the ./ too.
    assert published_sha256(f"{SHA_C}  ollama-linux-amd64.tgz\n", "ollama-linux-amd64.tgz") == SHA_C
    assert published_sha256(f"{SHA_C} *ollama-linux-amd64.tgz\r\n", "ollama-linux-amd64.tgz") == SHA_C
    # Not a checksum line: a short or upper-case digest, or a name that only ends like the archive.
    assert published_sha256(f"{SHA_C[:40]}  ollama-linux-amd64.tgz\n", "ollama-linux-amd64.tgz") is None
    assert published_sha256(f"{SHA_C.upper()}  ollama-linux-amd64.tgz\n", "ollama-linux-amd64.tgz") is None
    assert published_sha256(f"{SHA_C}  ./x/ollama-linux-amd64.tgz\n", "ollama-linux-amd64.tgz") is None
    assert listed_files(SUMS) == ["ollama-linux-amd64-rocm.tar.zst", "ollama-linux-amd64.tar.zst",
                                  "ollama-linux-arm64.tar.zst", "OllamaSetup.exe"]


def deploy(tmp_path, ollama: dict, host: dict | None = None) -> tuple[list[str], list[str]]:
    return converge({"/sys/bus/pci/devices": [], **LINUX, **(host or {})}, deploy=site_gpu_and_ollama,
                    **stack_data(tmp_path, ollama))


def downloads(commands: list[str]) -> list[str]:
    return [c.split()[3] for c in commands if c.startswith("( curl -sSLf ")]


def test_default_download_is_the_archive_the_version_ships(tmp_path):
    changed, commands = deploy(tmp_path, {"version": "0.13.3"})
    assert downloads(commands) == [archive_url("0.13.3")]
    # A .tgz needs no zstd: the host is not even asked about it.
    assert not [c for c in commands if "zstd" in c]
    changed, commands = deploy(tmp_path, {"version": "0.14.0", "sha256": SHA_B})
    assert downloads(commands) == [f"{RELEASES}/v0.14.0/ollama-linux-amd64.tar.zst"]
    assert "Ollama | Install zstd to unpack the Ollama archive" in changed
    assert changed.index("Ollama | Install zstd to unpack the Ollama archive") < changed.index("Ollama | Verify and install Ollama 0.14.0")
    assert any(c.endswith("install --no-install-recommends zstd") for c in commands)


def test_zstd_already_there_is_not_installed_again(tmp_path):
    installed = {"-- zstd 2>/dev/null": ["package\tii \tzstd"]}
    changed, commands = deploy(tmp_path, {"version": "0.14.0", "sha256": SHA_B}, installed)
    assert "Ollama | Install zstd to unpack the Ollama archive" not in changed
    assert not [c for c in commands if "apt-get" in c]
    assert "Ollama | Verify and install Ollama 0.14.0" in changed


def test_an_explicit_url_decides_the_format(tmp_path):
    mirror = "https://mirror.example.com/ollama/v0.14.0/ollama-linux-amd64.tgz"
    changed, commands = deploy(tmp_path, {"version": "0.14.0", "url": mirror})
    assert downloads(commands) == [mirror]
    assert "Ollama | Install zstd to unpack the Ollama archive" not in changed
