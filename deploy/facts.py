"""Facts ollastack's deploys read from a host."""

from __future__ import annotations

import json

from pyinfra.api import FactBase


class FileText(FactBase[str | None]):
    """Content of a small text file, or None when it does not exist.

    Example: ``host.get_fact(FileText, path="/var/lib/ollastack/ollama.sha256")``
    """

    def command(self, path: str) -> str:
        return f"cat {path} 2>/dev/null || true"

    def process(self, output):
        text = "\n".join(output).strip()
        return text or None


class OllamaModels(FactBase[list[str] | None]):
    """Model names Ollama has locally (``/api/tags``), or None when Ollama does not answer.

    Example: ``host.get_fact(OllamaModels, address="127.0.0.1:11434")``
    """

    def command(self, address: str) -> str:
        return f"curl -fsS --max-time 5 http://{address}/api/tags 2>/dev/null || true"

    def process(self, output):
        text = "".join(output).strip()
        if not text:
            return None
        try:
            return [m["name"] for m in json.loads(text).get("models", [])]
        except ValueError:
            return None


class SshClientAddress(FactBase[str | None]):
    """The address this SSH session comes from, as the host sees it (to avoid firewalling it out).

    Example: ``host.get_fact(SshClientAddress, _sudo=False)``
    """

    def command(self) -> str:
        return 'echo "${SSH_CONNECTION%% *}"'

    def process(self, output):
        text = "".join(output).strip()
        return text or None
