"""ollastack: a private, HTTPS-secured Ollama + Open WebUI service on your own Debian hosts."""

__version__ = "0.1.0"
