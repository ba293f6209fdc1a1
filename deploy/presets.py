"""Generation presets as Ollama models (``[presets]``), made with ``/api/create`` when missing or different.

A preset is an Ollama model, so it answers through Ollama's API as through Open WebUI, which lists it
like any model. What the host has is read with ``/api/show`` (``OllamaShown``); a preset that matches is
not touched. The request body goes to the host as a file and to Ollama with ``curl --data-binary @file``:
the system prompt, any text, never passes through a shell.
"""

from __future__ import annotations

import json
import posixpath
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.operations import files, server

from ollastack.deploy.facts import OllamaShown
from ollastack.ollama_names import client_address
from ollastack.presets import create_request, differences, wanted

REQUESTS_DIR = "/var/lib/ollastack/presets"


def create_presets(data, recheck: bool = False) -> None:
    """Create every preset of the stack that Ollama lacks or holds with other settings; after the pulls.

    ``recheck``: Ollama moves (models directory or address) in this converge, so what it shows now says
    nothing and every preset is created.

    Example: ``create_presets(host.data)``
    """
    presets = wanted(data.ollastack_presets_use, data.ollastack_presets_base, data.ollastack_presets_custom,
                     data.ollastack_ollama_models)
    if not presets:
        return
    address = client_address(data.ollastack_ollama_host)
    shown = host.get_fact(OllamaShown, address=address, names=[n for p in presets for n in (p["name"], p["base"])])
    stale = [p for i, p in enumerate(presets) if recheck or differences(p, shown.get(2 * i), shown.get(2 * i + 1))]
    if stale:
        files.directory(name="Preset requests directory", path=REQUESTS_DIR, mode="0700")
    for preset in stale:
        request = posixpath.join(REQUESTS_DIR, f"{preset['name']}.json")
        files.put(name=f"Preset {preset['name']} request", src=StringIO(json.dumps(create_request(preset))),
                  dest=request, mode="0600")
        command = shlex.join(["curl", "-sS", "--fail-with-body", "--max-time", "600", "-H", "Content-Type: application/json",
                              "--data-binary", f"@{request}", f"http://{address}/api/create"])
        server.shell(name=f"Create preset {preset['name']}", commands=[command])
