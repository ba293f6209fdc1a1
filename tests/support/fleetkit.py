"""Lab helpers of the fleet modules: a fleet's first ``lab up`` and converge, chats sent on its gateway, and
the chats each backend's Ollama stand-in served (it logs each one).

Example::

    fleet = up_and_converge(stack, 2)
    assert chat(fleet["gateway"], keypair, "llama3.2:1b")[0] == "200"
    assert served(fleet["backends"][0], keypair)[-1:] == ["llama3.2:1b"]   # if that chat went to the first backend
"""

from __future__ import annotations

import json

from tests.support.labkit import LabStack, ssh

CHAT_LOG = "/usr/share/ollama/.ollama/models/standin-chats.jsonl"
# The gateway's balanced Ollama on its loopback (ollama.host), where Open WebUI sends chats.
BALANCED = "http://127.0.0.1:11434"


def up_and_converge(stack: LabStack, backends: int) -> dict:
    """``lab up`` of the stack's gateway and ``backends`` backends, then one converge without an error:
    ``{"gateway": host, "backends": [host, ...]}``."""
    result = stack.ollastack("--json", "lab", "up")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert len(hosts) == 1 + backends, hosts
    _, report = stack.pyinfra()
    assert report is not None and report["results"]["totals"]["error"] == 0
    return {"gateway": hosts[0], "backends": hosts[1:]}


def chat(gateway: dict, keypair, model: str, url: str = BALANCED) -> tuple[str, str]:
    """(HTTP status, body) of one chat sent on the gateway to ``url``, as Open WebUI sends it."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": False})
    result = ssh(gateway["address"], "curl -sS --max-time 30 -w '\\n%{http_code}' "
                 f"-H 'Content-Type: application/json' -d '{body}' {url}/api/chat", keypair)
    text, _, code = result.stdout.rpartition("\n")
    return code, text


def served(backend: dict, keypair) -> list[str]:
    """The model of every chat the backend's stand-in served, oldest first."""
    result = ssh(backend["address"], f"cat {CHAT_LOG} 2>/dev/null || true", keypair)
    return [json.loads(line)["model"] for line in result.stdout.splitlines() if line.strip()]
