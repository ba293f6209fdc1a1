"""Every Ollama setting that reaches ``override.conf``, set to a value other than its default, arrives
there exactly: stack description -> validated model -> host data -> the Ollama deploy (pyinfra, fake
connector) -> the drop-in file the deploy uploads."""

from __future__ import annotations

import io
import json

import pytest
from pyinfra.connectors.fake import FakeConnector

from ollastack.config import iter_settings, parse_stack
from ollastack.hostdata import host_data
from tests.unit.test_gpu_fake import LINUX, converge, present_file, site_gpu_and_ollama

OVERRIDE = "/etc/systemd/system/ollama.service.d/override.conf"
# Each setting that becomes an environment value, a non-default value for it, and the line expected.
NON_DEFAULT = {
    "host": ("127.0.0.1:11500", "OLLAMA_HOST=127.0.0.1:11500"),
    "models_dir": ("/srv/ollama/models", "OLLAMA_MODELS=/srv/ollama/models"),
    "keep_alive": ("1h30m", "OLLAMA_KEEP_ALIVE=1h30m"),
    "num_parallel": (3, "OLLAMA_NUM_PARALLEL=3"),
    "max_loaded_models": (2, "OLLAMA_MAX_LOADED_MODELS=2"),
    "max_queue": (64, "OLLAMA_MAX_QUEUE=64"),
    "context_length": (8192, "OLLAMA_CONTEXT_LENGTH=8192"),
    "flash_attention": (True, "OLLAMA_FLASH_ATTENTION=1"),
    "kv_cache_type": ("q8_0", "OLLAMA_KV_CACHE_TYPE=q8_0"),
    "https_proxy": ("http://proxy.invalid:3128", "HTTPS_PROXY=http://proxy.invalid:3128"),
}
# Ollama settings that are not environment values (release pinning, what to pull and how, the loopback opt-in).
NOT_ENVIRONMENT = {"version", "sha256", "url", "archive", "models", "pull_retries", "pull_idle_timeout",
                   "pull_deadline", "listen_beyond_loopback"}


@pytest.fixture
def uploads(monkeypatch) -> dict[str, str]:
    """What the deploy uploads, by remote path (the fake connector otherwise drops the content)."""
    seen: dict[str, str] = {}

    def put_file(self, filename_or_io, remote_filename, *args, **kwargs):
        if isinstance(filename_or_io, io.IOBase):
            filename_or_io.seek(0)
            data = filename_or_io.read()
        else:
            with open(filename_or_io, "rb") as source:
                data = source.read()
        seen[remote_filename] = data.decode() if isinstance(data, bytes) else data
        return True

    monkeypatch.setattr(FakeConnector, "put_file", put_file)
    return seen


def stack_data(tmp_path, ollama: dict) -> dict:
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("key\n")
    stack = parse_stack({"stack": {"name": "envtest", "provider": "static"},
                         "static": {"hosts": ["192.0.2.10"]},
                         "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                         "openwebui": {"install": "none"}, "ollama": ollama})
    return host_data(stack)


def test_the_table_covers_every_ollama_setting():
    ollama = {name.split(".", 1)[1] for name, _, _ in iter_settings() if name.startswith("ollama.")}
    assert ollama == set(NON_DEFAULT) | NOT_ENVIRONMENT
    defaults = {name.split(".", 1)[1]: default for name, default, _ in iter_settings() if name.startswith("ollama.")}
    assert all(value != defaults[key] for key, (value, _) in NON_DEFAULT.items())


def test_every_environment_value_reaches_override_conf(tmp_path, uploads):
    data = stack_data(tmp_path, {key: value for key, (value, _) in NON_DEFAULT.items()})
    changed, commands = converge({"/sys/bus/pci/devices": [], **LINUX}, deploy=site_gpu_and_ollama, **data)
    assert "Ollama | Ollama settings (override.conf)" in changed
    lines = uploads[OVERRIDE].splitlines()
    assert [line for line in lines if line.startswith("Environment=")] == [
        f'Environment="{line}"' for _, line in NON_DEFAULT.values()]
    assert "[Service]" in lines
    # The client side follows the moved address: health wait and pulls go to 127.0.0.1:11500.
    assert any("http://127.0.0.1:11500/api/version" in c for c in commands)
    assert any(c.startswith("python3 /usr/local/lib/ollastack/ollama-pull.py ")
               and c.endswith(" 127.0.0.1:11500 llama3.2:1b") for c in commands)
    assert any("/srv/ollama/models" in c for c in commands if "mkdir" in c or "chown" in c)


def test_defaults_write_no_proxy_line(tmp_path, uploads):
    converge({"/sys/bus/pci/devices": [], **LINUX}, deploy=site_gpu_and_ollama, **stack_data(tmp_path, {}))
    text = uploads[OVERRIDE]
    assert "HTTPS_PROXY" not in text
    assert 'Environment="OLLAMA_HOST=127.0.0.1:11434"' in text and 'Environment="OLLAMA_FLASH_ATTENTION=0"' in text


def test_models_are_asked_for_again_when_the_settings_change(tmp_path, uploads):
    """A listed model is not pulled again; when the converge moves Ollama to another models_dir, what it
    listed before its restart cannot be trusted, so the helper asks again afterwards (``--if-missing``).
    Other setting changes leave the models alone."""
    listed = {"http://127.0.0.1:11434/api/tags": [json.dumps({"models": [{"name": "llama3.2:1b"}]})]}
    host = {"/sys/bus/pci/devices": [], **LINUX, **listed}
    converge(host, deploy=site_gpu_and_ollama, **stack_data(tmp_path, {}))
    # The override's text, as deploy.present.HostState reads it (``texts``).
    settled = {**present_file(OVERRIDE, uploads[OVERRIDE]),
               f'for p in {OVERRIDE}; do [ -f "$p" ]': [f"text\t{OVERRIDE}\t{line}" for line in uploads[OVERRIDE].splitlines()]}

    def pulls(**ollama) -> list[str]:
        _, commands = converge({**host, **settled}, deploy=site_gpu_and_ollama, **stack_data(tmp_path, ollama))
        return [c for c in commands if c.startswith("python3 /usr/local/lib/ollastack/ollama-pull.py ")]

    assert pulls() == []
    assert pulls(keep_alive="10m") == []
    [command] = pulls(models_dir="/srv/ollama/models")
    assert "--if-missing" in command and command.endswith(" 127.0.0.1:11434 llama3.2:1b")
    [command] = pulls(models=["llama3.2:1b", "qwen2.5:0.5b"])
    assert "--if-missing" not in command and command.endswith(" qwen2.5:0.5b")
