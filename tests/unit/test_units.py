"""Small pieces checked without a host: apt source parsing, the firewall lock-out guard, Ollama settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.firewall import lockout_problem
from ollastack.deploy.ollama import environment
from ollastack.ollama_names import client_address, tagged
from ollastack import lab


def test_lab_needs_root(monkeypatch):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 1000)
    with pytest.raises(lab.LabError, match="need root"):
        lab.check_prerequisites()


def test_lab_names_missing_packages(monkeypatch):
    monkeypatch.setattr(lab.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lab.shutil, "which", lambda tool: None if tool == "debootstrap" else "/usr/bin/" + tool)
    with pytest.raises(lab.LabError, match="apt-get install debootstrap"):
        lab.check_prerequisites()


def test_apt_sources_reads_deb822_and_one_line_forms(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.invalid/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nEnabled: no\n")
    (tmp_path / "sources.list").write_text(
        "deb [signed-by=/k.gpg] http://security.invalid/debian-security bookworm-security main\n# deb http://x.invalid/ y\n")
    assert lab.apt_sources(tmp_path) == [
        ("http://mirror.invalid/debian", ["bookworm", "bookworm-updates"], ["main"]),
        ("http://security.invalid/debian-security", ["bookworm-security"], ["main"]),
    ]


@pytest.mark.parametrize("cidrs,client,locked_out", [
    (["10.0.0.0/8"], "10.1.2.3", False),
    (["10.0.0.0/8"], "192.0.2.1", True),
    (["2001:db8::/32", "10.0.0.0/8"], "2001:db8::1", False),
    (["10.0.0.0/8"], None, False),
])
def test_firewall_refuses_to_lock_out_its_own_ssh_client(cidrs, client, locked_out):
    problem = lockout_problem(cidrs, client)
    assert (problem is not None) == locked_out
    if locked_out:
        assert f"{client}/32" in problem and "access.admin_cidrs" in problem


@pytest.mark.parametrize("listen,client", [("127.0.0.1:11434", "127.0.0.1:11434"), ("0.0.0.0:8000", "127.0.0.1:8000"),
                                           ("[::]:11434", "[::1]:11434"), ("10.88.0.1:11434", "10.88.0.1:11434"),
                                           ("[fd00::5]:11434", "[fd00::5]:11434")])
def test_ollama_client_address(listen, client):
    assert client_address(listen) == client


@pytest.mark.parametrize("model,listed", [
    ("tinyllama", "tinyllama:latest"), ("llama3.2:1b", "llama3.2:1b"),
    ("library/qwen2.5", "qwen2.5:latest"), ("library/qwen2.5:0.5b", "qwen2.5:0.5b"),
    ("registry.ollama.ai/library/tinyllama", "tinyllama:latest"), ("Registry.Ollama.AI/LIBRARY/m:q4", "m:q4"),
    ("https://registry.ollama.ai/library/m", "m:latest"), ("registry.ollama.ai/user/m", "user/m:latest"),
    ("user/m", "user/m:latest"), ("user/m:7b", "user/m:7b"),
    ("registry.example.com:5000/team/m", "registry.example.com:5000/team/m:latest"),
    ("registry.example.com:5000/library/m:q4", "registry.example.com:5000/library/m:q4"),
])
def test_model_names_as_api_tags_lists_them(model, listed):
    assert tagged(model) == listed


def test_ollama_environment_carries_every_setting():
    data = SimpleNamespace(**DEFAULTS)
    env = environment(data)
    assert env["OLLAMA_HOST"] == "127.0.0.1:11434"
    assert set(env) == {"OLLAMA_HOST", "OLLAMA_MODELS", "OLLAMA_KEEP_ALIVE", "OLLAMA_NUM_PARALLEL",
                        "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_QUEUE", "OLLAMA_CONTEXT_LENGTH",
                        "OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE"}
    data.ollastack_ollama_https_proxy = "http://proxy.invalid:3128"
    assert environment(data)["HTTPS_PROXY"] == "http://proxy.invalid:3128"


def test_defaults_cover_every_host_setting():
    assert DEFAULTS["ollastack_ollama_host"] == "127.0.0.1:11434"
    assert DEFAULTS["ollastack_tls_mode"] == "self-signed"
    assert all(key.startswith("ollastack_") for key in DEFAULTS)
    assert all(not key.startswith(("ollastack_azure_", "ollastack_alibaba_", "ollastack_lab_")) for key in DEFAULTS)
