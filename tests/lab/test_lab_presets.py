"""Presets reach Ollama: each built-in, a custom preset and a Modelfile preset, on one Debian 12 lab host.

After the converge, a chat straight to the host's Ollama on loopback (over SSH, as nothing else may reach
11434) runs with exactly the preset's options and system prompt: the Ollama stand-in writes what each
``/api/chat`` runs with, the model's parameters merged under the request's, to a log read here. Open WebUI
is left out (``install = "none"``): a preset is an Ollama model, and Open WebUI lists it like any other.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from ollastack.presets import BUILTINS
from tests.support.labkit import LabStack, changed_ops, lab_stack_fixture, ssh

pytestmark = pytest.mark.lab

CHAT_LOG = "/usr/share/ollama/.ollama/models/standin-chats.jsonl"
MODEL = "llama3.2:1b"
# Quotes, a command substitution and a newline: text that must reach Ollama as it is, never run.
SYSTEM = "You help with the lab's printers.\nNever run '$(touch /tmp/preset-pwned)' or `id`; say \"no\"."
CUSTOM = {"temperature": 0.2, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.3, "num_predict": 300, "num_ctx": 8192}
ISSUE_MODELFILE = '''FROM llama3:8b-instruct-q4_K_M
PARAMETER temperature 0.7
PARAMETER top_p 0.9
PARAMETER num_ctx 4096
SYSTEM "You are a technical assistant who answers briefly and precisely."
'''


class PresetStack(LabStack):
    name = "presettest"

    def write_presets(self, custom: dict = CUSTOM) -> None:
        modelfile = self.dir / "Modelfile"
        modelfile.write_text(ISSUE_MODELFILE.replace("llama3:8b-instruct-q4_K_M", MODEL))
        parameters = ", ".join(f"{k} = {json.dumps(v)}" for k, v in custom.items())
        self.write(extra=f"[presets]\nuse = {json.dumps(list(BUILTINS))}\n\n"
                         f'[[presets.custom]]\nname = "printers"\nbase = "{MODEL}"\nsystem = {json.dumps(SYSTEM)}\n'
                         f"parameters = {{ {parameters} }}\n\n"
                         f'[[presets.custom]]\nname = "techie"\nmodelfile = {json.dumps(str(modelfile))}\n')


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives) -> Iterator[PresetStack]:
    def make() -> PresetStack:
        made = PresetStack(tmp_path_factory.mktemp("presets"), keypair, archives)
        made.write_presets()
        return made
    yield from lab_stack_fixture(make)


@pytest.fixture(scope="module")
def host(stack) -> dict:
    found = stack.up_one()
    _, report = stack.pyinfra()
    assert report["results"]["totals"]["error"] == 0
    return found


def on_host(host: dict, stack: PresetStack, command: str) -> str:
    return ssh(host["address"], command, stack.keypair).stdout


def chat(host: dict, stack: PresetStack, model: str) -> dict:
    """Chat with ``model`` on the host's loopback; what the stand-in says that chat ran with."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": False})
    reply = json.loads(on_host(host, stack, f"curl -fsS 127.0.0.1:11434/api/chat -d {shlex.quote(body)}"))
    assert reply["done"] is True
    ran = json.loads(on_host(host, stack, f"tail -n 1 {CHAT_LOG}"))
    assert ran["model"] == f"{model}:latest"
    return ran


def converge(stack: PresetStack) -> list[str]:
    _, report = stack.pyinfra()
    return changed_ops(report)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_each_builtin_preset_chats_with_its_options(stack, host, name):
    ran = chat(host, stack, name)
    assert ran["options"] == BUILTINS[name]
    assert ran["system"] == ""


def test_custom_preset_chats_with_its_options_and_system_prompt(stack, host):
    ran = chat(host, stack, "printers")
    assert ran["options"] == CUSTOM
    assert ran["system"] == SYSTEM
    assert ssh(host["address"], "test -e /tmp/preset-pwned", stack.keypair, check=False).returncode == 1


def test_the_issues_modelfile_preset_chats_with_its_options(stack, host):
    ran = chat(host, stack, "techie")
    assert ran["options"] == {"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096}
    assert ran["system"] == "You are a technical assistant who answers briefly and precisely."


def test_presets_are_listed_as_models_next_to_their_base(stack, host):
    listed = {m["name"] for m in json.loads(on_host(host, stack, "curl -fsS 127.0.0.1:11434/api/tags"))["models"]}
    assert listed == {MODEL, *(f"{n}:latest" for n in [*BUILTINS, "printers", "techie"])}


def test_a_second_converge_changes_nothing(stack, host):
    assert converge(stack) == []


def test_changing_one_parameter_recreates_that_preset_only(stack, host):
    before = on_host(host, stack, "curl -fsS 127.0.0.1:11434/api/tags")
    stack.write_presets(dict(CUSTOM, top_k=25))
    try:
        assert converge(stack) == ["Ollama | Preset printers request", "Ollama | Create preset printers"]
        assert chat(host, stack, "printers")["options"] == dict(CUSTOM, top_k=25)
        assert chat(host, stack, "factual")["options"] == BUILTINS["factual"]
        digests = {m["name"]: m["digest"] for m in json.loads(before)["models"]}
        after = {m["name"]: m["digest"] for m in json.loads(on_host(host, stack, "curl -fsS 127.0.0.1:11434/api/tags"))["models"]}
        assert [n for n in after if after[n] != digests.get(n)] == ["printers:latest"]
        assert converge(stack) == []
    finally:
        stack.write_presets()
