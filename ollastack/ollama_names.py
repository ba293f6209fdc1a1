"""How Ollama names things, shared by the deploys (on the host) and ``ollastack status`` (from here)."""


def client_address(listen: str) -> str:
    """Where to reach Ollama on the host itself: ``client_address("0.0.0.0:11434") == "127.0.0.1:11434"``."""
    address, _, port = listen.rpartition(":")
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    elif address in ("[::]", "::"):
        address = "[::1]"
    return f"{address}:{port}"


def tagged(model: str) -> str:
    """The name ``/api/tags`` lists a model under: ``tagged("tinyllama") == "tinyllama:latest"``."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"
