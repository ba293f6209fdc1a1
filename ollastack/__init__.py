"""ollastack: a private, HTTPS-secured Ollama + Open WebUI service on your own Debian hosts."""

from pathlib import Path

__version__ = "0.1.0"

# deploy/, inventories/ and templates/ sit beside the package in a checkout (pip install -e .).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
