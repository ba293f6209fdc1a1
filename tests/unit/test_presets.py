"""Presets in the stack: built-ins by name, custom ones, Modelfiles; what goes to /api/create; when it is due."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ollastack.config import ConfigError, load_stack
from ollastack.deploy.facts import OllamaShown
from ollastack.presets import BUILTINS, ModelfileError, create_request, differences, parse_modelfile, wanted

ISSUE_MODELFILE = '''FROM llama3:8b-instruct-q4_K_M
PARAMETER temperature 0.7
PARAMETER top_p 0.9
PARAMETER num_ctx 4096
SYSTEM "You are a technical assistant who answers briefly and precisely."
'''


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = tmp_path / "id", tmp_path / "id.pub"
    private.write_text("not used by validation\n")
    public.write_text("ssh-rsa AAAA test\n")
    return public, private


def stack(tmp_path: Path, keys, presets: str, models: str = '["llama3.2:1b", "qwen2.5:0.5b"]'):
    public, private = keys
    path = tmp_path / "stack.toml"
    path.write_text(f'[access]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n\n'
                    f"[ollama]\nmodels = {models}\n\n{presets}")
    return load_stack(path)


def problems(tmp_path: Path, keys, presets: str, models: str = '["llama3.2:1b"]') -> str:
    with pytest.raises(ConfigError) as caught:
        stack(tmp_path, keys, presets, models)
    return caught.value.render()


def test_builtins_are_the_cheat_sheets_table():
    assert BUILTINS["factual"] == {"temperature": 0.3, "top_p": 0.85, "top_k": 40, "repeat_penalty": 1.15,
                                   "num_predict": 512}
    assert BUILTINS["concise"]["num_predict"] == 256 and BUILTINS["long-form"]["num_predict"] == 1024
    assert list(BUILTINS) == ["balanced", "creative", "factual", "concise", "long-form"]


def test_builtins_by_name_are_made_from_the_first_pulled_model_or_presets_base(tmp_path, keys):
    found = stack(tmp_path, keys, '[presets]\nuse = ["factual", "long-form"]\n')
    presets = wanted(found.presets.use, found.presets.base, [], found.ollama.models)
    assert [(p["name"], p["base"]) for p in presets] == [("factual", "llama3.2:1b"), ("long-form", "llama3.2:1b")]
    assert presets[0]["parameters"] == BUILTINS["factual"] and presets[0]["system"] == ""
    found = stack(tmp_path, keys, '[presets]\nuse = ["concise"]\nbase = "qwen2.5:0.5b"\n')
    assert wanted(found.presets.use, found.presets.base, [], found.ollama.models)[0]["base"] == "qwen2.5:0.5b"


def test_custom_preset_with_a_multi_line_system_prompt_reaches_the_request_as_json(tmp_path, keys):
    found = stack(tmp_path, keys, '[[presets.custom]]\nname = "support"\nbase = "qwen2.5:0.5b"\n'
                                  "system = \"\"\"Be kind.\n'$(reboot)' \"quoted\" `x`\"\"\"\n"
                                  "parameters = { temperature = 0.2, num_ctx = 8192 }\n")
    custom = [p.model_dump() for p in found.presets.custom]
    [preset] = wanted([], "", custom, found.ollama.models)
    body = create_request(preset)
    assert body == {"model": "support", "from": "qwen2.5:0.5b", "system": "Be kind.\n'$(reboot)' \"quoted\" `x`",
                    "parameters": {"temperature": 0.2, "num_ctx": 8192}, "stream": False}
    assert json.loads(json.dumps(body)) == body


def test_the_issues_modelfile_becomes_the_same_request(tmp_path, keys):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(ISSUE_MODELFILE.replace("llama3:8b-instruct-q4_K_M", "llama3.2:1b"))
    found = stack(tmp_path, keys, f'[[presets.custom]]\nname = "techie"\nmodelfile = "{modelfile}"\n')
    preset = found.presets.custom[0]
    assert (preset.base, preset.system) == ("llama3.2:1b", "You are a technical assistant who answers briefly and precisely.")
    assert preset.parameters.model_dump(exclude_none=True) == {"temperature": 0.7, "top_p": 0.9, "num_ctx": 4096}


def test_modelfile_forms_of_system_and_comments():
    text = '# a comment\nfrom m:1\nparameter top_k 20\nSYSTEM """one\n  two\n"""\n'
    assert parse_modelfile(text) == {"base": "m:1", "system": "one\n  two\n", "parameters": {"top_k": 20}}
    assert parse_modelfile("FROM m\nSYSTEM Be brief.")["system"] == "Be brief."


@pytest.mark.parametrize("text, message", [
    ("FROM m\nTEMPLATE {{ .Prompt }}\n", "line 2: TEMPLATE is not supported"),
    ("FROM m\nADAPTER ./lora.gguf\n", "line 2: ADAPTER is not supported"),
    ("FROM m\nMESSAGE user hi\n", "line 2: MESSAGE is not supported"),
    ("FROM m\nPARAMETER mirostat 1\n", "line 2: PARAMETER mirostat is not supported"),
    ("FROM m\nPARAMETER top_k many\n", "line 2: PARAMETER top_k needs an integer"),
    ("FROM m\nPARAMETER temperature 0.1\nPARAMETER temperature 0.2\n", "line 3: PARAMETER temperature is set twice"),
    ("PARAMETER top_k 3\n", "no FROM line"),
    ("FROM a\nFROM b\n", "line 2: a second FROM"),
    ('FROM m\nSYSTEM """never closed\n', "SYSTEM \"\"\" is never closed"),
    ('FROM m\nSYSTEM "half\n', "never closed on its line"),
    ("FROM\n", "line 1: FROM needs a value"),
])
def test_modelfile_parts_a_preset_cannot_keep_are_refused(text, message):
    with pytest.raises(ModelfileError, match=message.replace("(", r"\(")):
        parse_modelfile(text)


@pytest.mark.parametrize("presets, field", [
    ('[presets]\nuse = ["precise"]\n', "presets.use.0"),
    ('[presets]\nuse = ["factual"]\nbase = "Not A Model"\n', "presets.base"),
    ('[presets]\nuse = ["factual"]\nbase = "qwen2.5:0.5b"\n', "presets.base: qwen2.5:0.5b is not in ollama.models"),
    ('[[presets.custom]]\nname = "Bad Name"\nbase = "llama3.2:1b"\n', "presets.custom.0.name"),
    ('[[presets.custom]]\nname = "x"\nbase = "mistral"\n', "presets.custom.0.base: mistral is not in ollama.models"),
    ('[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\nparameters = { temperature = 3.0 }\n',
     "presets.custom.0.parameters.temperature"),
    ('[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\nparameters = { top_k = 0 }\n', "presets.custom.0.parameters.top_k"),
    ('[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\nparameters = { num_ctx = 10 }\n', "presets.custom.0.parameters.num_ctx"),
    ('[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\nparameters = { seed = 1 }\n', "presets.custom.0.parameters.seed"),
    ('[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\nsystem = "a\\u001bb"\n', "presets.custom.0.system"),
    ('[[presets.custom]]\nname = "x\\n"\nbase = "llama3.2:1b"\n', "presets.custom.0.name"),
    ('[[presets.custom]]\nname = "x"\n', "presets.custom.0 = {'name': 'x'}: base: a preset needs the model it is made from"),
    ('[[presets.custom]]\nname = "x"\nmodelfile = "/nonexistent/Modelfile"\n', "presets.custom.0.modelfile"),
    ('[presets]\nuse = ["factual"]\n[[presets.custom]]\nname = "factual"\nbase = "llama3.2:1b"\n', "factual is named twice"),
    ('[[presets.custom]]\nname = "llama3.2"\nbase = "llama3.2:1b"\n', "llama3.2 is a model in ollama.models"),
])
def test_bad_presets_are_refused_naming_the_setting(tmp_path, keys, presets, field):
    models = '["llama3.2:1b", "llama3.2"]' if "llama3.2 is a model" in field else '["llama3.2:1b"]'
    assert field in problems(tmp_path, keys, presets, models)


def test_builtins_without_any_model_are_refused(tmp_path, keys):
    assert "presets.base" in problems(tmp_path, keys, '[presets]\nuse = ["factual"]\n', models="[]")


def test_bad_modelfile_is_refused_before_anything_is_touched(tmp_path, keys):
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM llama3.2:1b\nPARAMETER temperature 9\n")
    found = problems(tmp_path, keys, f'[[presets.custom]]\nname = "x"\nmodelfile = "{modelfile}"\n')
    assert "nothing was touched" in found and "temperature" in found and str(modelfile) in found
    modelfile.write_text("FROM llama3.2:1b\nLICENSE MIT\n")
    assert "line 2: LICENSE is not supported" in problems(tmp_path, keys, f'[[presets.custom]]\nname = "x"\nmodelfile = "{modelfile}"\n')
    modelfile.write_text("FROM qwen2.5:0.5b\n")
    assert "qwen2.5:0.5b is not in ollama.models" in problems(
        tmp_path, keys, f'[[presets.custom]]\nname = "x"\nmodelfile = "{modelfile}"\n')
    assert "not both" in problems(tmp_path, keys, f'[[presets.custom]]\nname = "x"\nbase = "llama3.2:1b"\n'
                                                  f'modelfile = "{modelfile}"\n')


BASE_SHOWN = {"modelfile": "# FROM llama3.2:1b\n\nFROM /m/blobs/sha256-aa\nTEMPLATE x\n",
              "parameters": 'stop                           "<|start_header_id|>"\nstop                           "<|eot_id|>"'}
PRESET = {"name": "factual", "base": "llama3.2:1b", "system": "Be exact.", "parameters": dict(BUILTINS["factual"])}


def shown_as_ollama(preset: dict, base: dict = BASE_SHOWN, **change) -> dict:
    """``/api/show`` of a preset the way Ollama gives it: the base's parameters under the preset's."""
    params = "\n".join(f"{k:<30} {v}" for k, v in preset["parameters"].items())
    reply = {"modelfile": base["modelfile"].replace("# FROM llama3.2:1b", "# FROM factual:latest"),
             "parameters": base["parameters"] + "\n" + params, "system": preset["system"]}
    reply.update(change)
    return reply


def test_a_preset_ollama_holds_as_asked_is_up_to_date():
    assert differences(PRESET, shown_as_ollama(PRESET), BASE_SHOWN) == []
    # float32 round trip: Ollama may show 0.8500000238418579 for 0.85.
    rounded = shown_as_ollama(PRESET, parameters=BASE_SHOWN["parameters"] + "\n" + "\n".join(
        f"{k} {float(v) + 2e-8 if isinstance(v, float) else v}" for k, v in PRESET["parameters"].items()))
    assert differences(PRESET, rounded, BASE_SHOWN) == []


def test_what_makes_a_preset_due():
    assert differences(PRESET, None, BASE_SHOWN) == ["missing"]
    assert differences(PRESET, shown_as_ollama(PRESET), None) == ["base model not listed yet"]
    changed = dict(PRESET, parameters=dict(PRESET["parameters"], top_k=41))
    assert differences(changed, shown_as_ollama(PRESET), BASE_SHOWN) == ["top_k"]
    assert differences(dict(PRESET, system="Other."), shown_as_ollama(PRESET), BASE_SHOWN) == ["system prompt"]
    other_base = dict(BASE_SHOWN, modelfile="FROM /m/blobs/sha256-bb\n")
    assert differences(PRESET, shown_as_ollama(PRESET), other_base) == ["made from another model"]
    fewer = dict(PRESET, parameters={k: v for k, v in PRESET["parameters"].items() if k != "num_predict"})
    assert differences(fewer, shown_as_ollama(PRESET), BASE_SHOWN) == ["num_predict"]
    lost_stop = shown_as_ollama(PRESET, parameters="\n".join(f"{k} {v}" for k, v in PRESET["parameters"].items()))
    assert differences(PRESET, lost_stop, BASE_SHOWN) == ["stop"]


def test_no_system_prompt_keeps_the_bases():
    preset = dict(PRESET, system="")
    base = dict(BASE_SHOWN, system="You are Llama.")
    assert differences(preset, shown_as_ollama(preset, base, system="You are Llama."), base) == []
    assert differences(preset, shown_as_ollama(preset, base, system=""), base) == ["system prompt"]


def test_show_fact_reads_each_reply_by_index():
    fact = OllamaShown()
    command = fact.command(address="127.0.0.1:11434", names=["factual", "x'; reboot; '"])
    assert "'{\"model\": \"factual\"}'" in command and "reboot; '\"}'" in command.replace("'\"'\"'", "'")
    assert fact.process(['0 {"parameters": "top_k 40"}', '1 {"error": "model \'x\' not found"}']) == \
        {0: {"parameters": "top_k 40"}}
    assert fact.process(["0 ", "1 "]) == {}
