"""``ollastack pin ollama VERSION`` against a stand-in of Ollama's release downloads over HTTPS on loopback
(tests/support/ollama_releases.py: GitHub's layout and redirect, the release workflow's sha256sum.txt)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat

import pytest
import trustme

from ollastack import cli
from ollastack.config import load_stack
from ollastack.pin import RELEASES_ENV
from tests.support.ollama_releases import Releases

STACK = """\
# The team's stack: kept in git, reviewed like code.
[stack]
name = "pintest"     # also the lab hosts' prefix
provider = "static"

[static]
hosts = ["192.0.2.10"]

[access]
admin_cidrs = ["198.51.100.7/32"]
ssh_public_key = "{public}"
ssh_private_key = "{private}"

[ollama]
# Raised with `ollastack pin ollama`, never by hand.
version = "0.13.3"
sha256 = "{sha256}"
models = ["llama3.2:1b", "qwen2.5:0.5b"]   # pulled when missing

[openwebui]
install = "none"
"""


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Releases 0.13.3 (.tgz) and 0.14.0 (.tar.zst), and 0.15.0 whose sha256sum.txt lacks the amd64 archive."""
    published = Releases(tmp_path_factory.mktemp("releases"))
    published.archives = {v: published.publish(v) for v in ("0.13.3", "0.14.0")}
    published.publish("0.15.0", sums=f"{'c' * 64}  ./ollama-linux-arm64.tar.zst\n{'d' * 64}  ./ollama-linux-amd64-rocm.tar.zst\n")
    return published


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def server(releases, ca, tmp_path, monkeypatch):
    """The stand-in served over HTTPS, trusted through SSL_CERT_FILE as a system CA would be; its base URL."""
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    releases.requests.clear()
    with releases.serve_tls(ca) as url:
        monkeypatch.setenv(RELEASES_ENV, url)
        yield url


@pytest.fixture
def stack_file(tmp_path, releases, monkeypatch):
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("key\n")
    path = tmp_path / "stack.toml"
    path.write_text(STACK.format(public=public, private=private, sha256=releases.archives["0.13.3"][1]))
    path.chmod(0o640)
    monkeypatch.setenv("OLLASTACK_CONFIG", str(path))
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    return path


def pin(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["pin", "ollama", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_pin_writes_the_published_sha256_and_keeps_the_rest(server, releases, stack_file, capsys):
    before = stack_file.read_text()
    path, sha256 = releases.archives["0.14.0"]
    assert sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    code, out, err = pin(capsys, "0.14.0", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report == {"config": str(stack_file), "version": "0.14.0", "sha256": sha256,
                      "archive": "ollama-linux-amd64.tar.zst", "sums_url": f"{server}/v0.14.0/sha256sum.txt"}
    old_sha = releases.archives["0.13.3"][1]
    assert stack_file.read_text() == before.replace('version = "0.13.3"', 'version = "0.14.0"').replace(old_sha, sha256)
    stack = load_stack(stack_file)
    assert (stack.ollama.version, stack.ollama.sha256) == ("0.14.0", sha256)
    assert stat.S_IMODE(stack_file.stat().st_mode) == 0o640
    # GitHub answers a download with a redirect to its asset host: followed, like a browser would.
    assert releases.requests == ["/v0.14.0/sha256sum.txt", "/assets/v0.14.0/sha256sum.txt"]
    assert not [p for p in stack_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_an_older_release_pins_its_tgz(server, releases, stack_file, capsys):
    pin(capsys, "0.14.0")
    code, out, _ = pin(capsys, "v0.13.3")
    assert code == 0
    assert out.strip() == (f"{stack_file}: ollama.version = 0.13.3, ollama.sha256 = {releases.archives['0.13.3'][1]} "
                           f"(ollama-linux-amd64.tgz, from {server}/v0.13.3/sha256sum.txt)")
    assert load_stack(stack_file).ollama.sha256 == releases.archives["0.13.3"][1]


@pytest.mark.parametrize("version", ["0.14", "latest", "0.14.0; rm -rf /", "../0.14.0", "0.14.0\n", "v", "0.14.0-rc1"])
def test_a_bad_version_is_refused_before_any_request(server, releases, stack_file, capsys, version):
    before = stack_file.read_text()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pin", "ollama", version])
    assert exit_.value.code == 2
    assert "not an Ollama release number like 0.14.0" in capsys.readouterr().err
    assert releases.requests == []
    assert stack_file.read_text() == before


def test_a_missing_release_is_bad_input(server, releases, stack_file, capsys):
    before = stack_file.read_text()
    code, _, err = pin(capsys, "0.99.0")
    assert code == 2
    assert err.strip() == f"error: there is no Ollama release v0.99.0 ({server}/v0.99.0/sha256sum.txt answered 404)"
    assert stack_file.read_text() == before


def test_sums_without_the_archive_pin_nothing(server, stack_file, capsys):
    before = stack_file.read_text()
    code, _, err = pin(capsys, "0.15.0")
    assert code == 1
    assert (f"{server}/v0.15.0/sha256sum.txt lists no ollama-linux-amd64.tar.zst, the archive v0.15.0 is installed "
            "from (it lists ollama-linux-arm64.tar.zst, ollama-linux-amd64-rocm.tar.zst); nothing was pinned") in err
    assert stack_file.read_text() == before


def test_network_errors_pin_nothing(server, stack_file, capsys, monkeypatch):
    before = stack_file.read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv(RELEASES_ENV, f"https://127.0.0.1:{closed}")
    code, _, err = pin(capsys, "0.14.0")
    assert code == 1
    assert err.startswith(f"error: cannot read https://127.0.0.1:{closed}/v0.14.0/sha256sum.txt: ")
    assert "Connection refused" in err and err.rstrip().endswith("nothing was pinned")
    # A server the system does not trust is a network error too, never read anyway.
    monkeypatch.setenv(RELEASES_ENV, server)
    monkeypatch.setenv("SSL_CERT_FILE", os.devnull)
    code, _, err = pin(capsys, "0.14.0")
    assert code == 1 and "CERTIFICATE_VERIFY_FAILED" in err
    assert stack_file.read_text() == before


def test_a_redirect_off_https_is_not_followed(server, releases, stack_file, capsys):
    """The checksums are what every later download is trusted by: they never come over plain HTTP."""
    before = stack_file.read_text()
    with releases.serve("127.0.0.1") as plain:
        releases.asset_host = plain
        try:
            code, _, err = pin(capsys, "0.14.0")
        finally:
            releases.asset_host = None
    assert code == 1
    assert err.strip() == (f"error: {server}/v0.14.0/sha256sum.txt redirects off HTTPS (to {plain}/assets/v0.14.0/"
                           "sha256sum.txt); nothing was pinned")
    assert releases.requests == ["/v0.14.0/sha256sum.txt"]
    assert stack_file.read_text() == before


def test_a_stack_without_an_ollama_table_gets_one(server, releases, stack_file, capsys):
    text = stack_file.read_text()
    start = text.index("[ollama]")
    stack_file.write_text(text[:start] + text[text.index("[openwebui]"):])
    code, _, err = pin(capsys, "0.14.0")
    assert code == 0, err
    assert stack_file.read_text().endswith(f'[ollama]\nversion = "0.14.0"\nsha256 = "{releases.archives["0.14.0"][1]}"\n')
    assert load_stack(stack_file).ollama.models == ["llama3.2:1b"]


def test_an_explicit_source_is_kept_with_a_warning(server, releases, stack_file, capsys):
    mirror = "https://mirror.example.com/ollama/v0.13.3/ollama-linux-amd64.tgz"
    stack_file.write_text(stack_file.read_text().replace("models = [", f'url = "{mirror}"\nmodels = ['))
    code, _, err = pin(capsys, "0.14.0")
    assert code == 0
    assert (f"warning: ollama.url is set and is installed instead of the release: make sure {mirror} is "
            "ollama-linux-amd64.tar.zst of v0.14.0") in err
    assert load_stack(stack_file).ollama.url == mirror
