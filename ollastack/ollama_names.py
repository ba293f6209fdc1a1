"""How Ollama names things, shared by the deploys (on the host) and ``ollastack status`` (from here)."""

DEFAULT_REGISTRY, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
# Where a client on the host itself reaches a server listening on every address.
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def client_address(listen: str) -> str:
    """Where to reach Ollama on the host itself: ``client_address("0.0.0.0:11434") == "127.0.0.1:11434"``,
    ``client_address("[::]:11434") == "[::1]:11434"``."""
    # Imported here: config uses ``tagged`` while it builds its own defaults, so this module must
    # import without it (``import ollastack.ollama_names`` first, as the Ollama stand-in does).
    from ollastack.config import split_host_port

    address, port = split_host_port(listen)
    address = LOOPBACK.get(address, address)
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def tagged(model: str) -> str:
    """The name ``/api/tags`` lists a model under, by Ollama's own rules (``Name.DisplayShortest``).

    The default registry is dropped, and with it the namespace ``library``; another registry keeps its
    namespace; a missing tag is ``latest``::

        tagged("tinyllama") == tagged("registry.ollama.ai/library/tinyllama") == "tinyllama:latest"
        tagged("user/m") == "user/m:latest"; tagged("host:5000/library/m:q4") == "host:5000/library/m:q4"
    """
    rest = model.split("://", 1)[-1]
    tag = DEFAULT_TAG
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = rest.rsplit(":", 1)
    *prefix, name = rest.split("/")
    namespace = prefix.pop() if prefix else DEFAULT_NAMESPACE
    registry = "/".join(prefix) or DEFAULT_REGISTRY
    if registry.lower() != DEFAULT_REGISTRY:
        return f"{registry}/{namespace}/{name}:{tag}"
    if namespace.lower() != DEFAULT_NAMESPACE:
        return f"{namespace}/{name}:{tag}"
    return f"{name}:{tag}"
