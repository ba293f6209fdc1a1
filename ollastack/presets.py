"""Generation presets: the five built in, a Modelfile's part of them, and what Ollama's ``/api/create`` gets.

A preset is an Ollama model made ``from`` a pulled one with a system prompt and parameters, named as
the preset. Plain data and functions, shared by the stack schema (``ollastack/config.py``) and the
deploy (``deploy/presets.py``).

Example::

    parse_modelfile('FROM llama3.2:1b\\nPARAMETER temperature 0.7\\nSYSTEM "Be brief."')
    == {"base": "llama3.2:1b", "system": "Be brief.", "parameters": {"temperature": 0.7}}
"""

from __future__ import annotations

import re
from typing import Any

# The parameters a preset may set, with Ollama's types.
PARAMETERS: dict[str, type] = {"temperature": float, "top_p": float, "top_k": int, "repeat_penalty": float,
                               "num_predict": int, "num_ctx": int}
BUILTINS: dict[str, dict[str, float | int]] = {
    "balanced": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1, "num_predict": 512},
    "creative": {"temperature": 0.9, "top_p": 0.95, "top_k": 60, "repeat_penalty": 1.05, "num_predict": 512},
    "factual": {"temperature": 0.3, "top_p": 0.85, "top_k": 40, "repeat_penalty": 1.15, "num_predict": 512},
    "concise": {"temperature": 0.4, "top_p": 0.8, "top_k": 30, "repeat_penalty": 1.2, "num_predict": 256},
    "long-form": {"temperature": 0.7, "top_p": 0.95, "top_k": 60, "repeat_penalty": 1.05, "num_predict": 1024},
}
SUPPORTED = ("FROM", "PARAMETER", "SYSTEM")


class ModelfileError(ValueError):
    """A Modelfile line ollastack does not turn into a preset; the message names the line."""


def _number(key: str, text: str, line: int) -> float | int:
    kind = PARAMETERS[key]
    try:
        return kind(text)
    except ValueError:
        shown = "an integer" if kind is int else "a number"
        raise ModelfileError(f"line {line}: PARAMETER {key} needs {shown}, not {text!r}") from None


def _system(rest: str, lines: list[str], index: int) -> tuple[str, int]:
    """The SYSTEM text starting on ``rest`` (line ``index``), and the index of its last line.

    Ollama's three forms: a bare rest of line, one "quoted" line, or a \"\"\"block\"\"\" over several lines.
    """
    if rest.startswith('"""'):
        body = rest[3:]
        end = index
        while '"""' not in body:
            end += 1
            if end >= len(lines):
                raise ModelfileError(f"line {index + 1}: SYSTEM \"\"\" is never closed")
            body += "\n" + lines[end]
        text, _, after = body.partition('"""')
        if after.strip():
            raise ModelfileError(f"line {end + 1}: text after the closing \"\"\" of SYSTEM")
        return text, end
    if rest.startswith('"'):
        if len(rest) < 2 or not rest.endswith('"'):
            raise ModelfileError(f"line {index + 1}: SYSTEM \" is never closed on its line (use \"\"\" for several lines)")
        return rest[1:-1].replace('\\"', '"'), index
    return rest, index


def parse_modelfile(text: str) -> dict[str, Any]:
    """FROM, PARAMETER and SYSTEM of a Modelfile as ``{"base", "system", "parameters"}``.

    Anything else (TEMPLATE, ADAPTER, MESSAGE, LICENSE, an unknown parameter) raises ModelfileError naming
    the line: a preset that silently lost part of its Modelfile would answer differently from the file.
    """
    lines = text.splitlines()
    found: dict[str, Any] = {"base": "", "system": "", "parameters": {}}
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        number = index + 1
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            instruction, rest = word.upper(), rest.strip()
            if instruction not in SUPPORTED:
                raise ModelfileError(f"line {number}: {word} is not supported in a preset "
                                     f"(supported: {', '.join(SUPPORTED)})")
            if not rest:
                raise ModelfileError(f"line {number}: {instruction} needs a value")
            if instruction == "FROM":
                if found["base"]:
                    raise ModelfileError(f"line {number}: a second FROM")
                found["base"] = rest
            elif instruction == "SYSTEM":
                found["system"], index = _system(rest, lines, index)
            else:
                key, _, value = rest.partition(" ")
                if key not in PARAMETERS:
                    raise ModelfileError(f"line {number}: PARAMETER {key} is not supported "
                                         f"(supported: {', '.join(PARAMETERS)})")
                if key in found["parameters"]:
                    raise ModelfileError(f"line {number}: PARAMETER {key} is set twice")
                found["parameters"][key] = _number(key, value.strip(), number)
        index += 1
    if not found["base"]:
        raise ModelfileError("no FROM line: a preset needs the model it is made from")
    return found


def wanted(use: list[str], base: str, custom: list[dict], models: list[str]) -> list[dict]:
    """The presets a host should have, as ``{"name", "base", "system", "parameters"}``, from host data.

    Built-ins are made from ``base``, or else the first pulled model; parameters left unset (None) are
    not sent, so Ollama keeps the base model's.

    Example: ``wanted(["factual"], "", [], ["llama3.2:1b"])[0]["base"] == "llama3.2:1b"``
    """
    presets = [{"name": name, "base": base or models[0], "system": "", "parameters": dict(BUILTINS[name])}
               for name in use]
    for preset in custom:
        parameters = {k: v for k, v in preset["parameters"].items() if v is not None}
        presets.append({"name": preset["name"], "base": preset["base"], "system": preset["system"],
                        "parameters": parameters})
    return presets


def create_request(preset: dict) -> dict:
    """The ``/api/create`` body of a preset; not streamed, so a failure is the HTTP status.

    Example: ``create_request({"name": "f", "base": "m", "system": "", "parameters": {"top_k": 40}})
    == {"model": "f", "from": "m", "parameters": {"top_k": 40}, "stream": False}``
    """
    body: dict[str, Any] = {"model": preset["name"], "from": preset["base"]}
    if preset["system"]:
        body["system"] = preset["system"]
    body["parameters"] = preset["parameters"]
    body["stream"] = False
    return body


def shown_parameters(text: str) -> dict[str, list[str]]:
    """``/api/show``'s ``parameters`` text (Go's ``%-30s %#v`` per value) as key -> values as written.

    Example: ``shown_parameters('temperature                    0.3\\nstop "<|eot_id|>"')
    == {"temperature": ["0.3"], "stop": ['"<|eot_id|>"']}``
    """
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key:
            found.setdefault(key, []).append(value.strip())
    return found


def _from_line(modelfile: str) -> str:
    """The FROM line of ``/api/show``'s ``modelfile``: the model blob, the same for a preset and its base."""
    return next((line for line in modelfile.splitlines() if re.match(r"FROM\s", line)), "")


def _same_number(shown: list[str], value: float | int) -> bool:
    try:
        # Ollama keeps floats as float32: 0.85 comes back as 0.85 or 0.8500000238418579.
        return len(shown) == 1 and abs(float(shown[0]) - value) <= 1e-6 * max(1.0, abs(value))
    except ValueError:
        return False


def differences(preset: dict, shown: dict | None, base_shown: dict | None) -> list[str]:
    """What Ollama's copy of a preset (``/api/show`` of it and of its base) lacks; empty: up to date.

    Ollama merges the request's parameters over the base model's (its stop words, say), and keeps the
    base's system prompt when the request has none: the expectation is built the same way.

    Example: ``differences(preset, None, base) == ["missing"]``
    """
    if shown is None or base_shown is None:
        return ["missing" if shown is None else "base model not listed yet"]
    problems = []
    if _from_line(shown.get("modelfile", "")) != _from_line(base_shown.get("modelfile", "")):
        problems.append("made from another model")
    if shown.get("system", "") != (preset["system"] or base_shown.get("system", "")):
        problems.append("system prompt")
    have = shown_parameters(shown.get("parameters", ""))
    expected = shown_parameters(base_shown.get("parameters", ""))
    for key in sorted(set(have) | set(expected) | set(preset["parameters"])):
        if key in preset["parameters"]:
            if not _same_number(have.get(key, []), preset["parameters"][key]):
                problems.append(key)
        elif have.get(key) != expected.get(key):
            problems.append(key)
    return problems
