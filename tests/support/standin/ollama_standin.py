#!/usr/bin/env python3
"""A stand-in for the ``ollama`` binary, for tests only: no real Ollama can be downloaded here.

It speaks the subset of the Ollama HTTP API that ollastack and Open WebUI use, with the same
paths, JSON shapes, status codes and NDJSON streaming, and it keeps pulled models under
``OLLAMA_MODELS`` in the real on-disk layout (``manifests/registry.ollama.ai/library/<name>/<tag>``
plus the config blob), so models survive restarts. It runs no model: replies are canned text.
Python 3.11 standard library only, so a bare Debian 12 host with ``python3`` can run it.

Commands: ``serve``, ``--version``/``-v``, and thin API clients ``pull``, ``list``, ``ps``, ``rm``.

Environment:
  OLLAMA_HOST                  listen address (serve) or server address (clients), 127.0.0.1:11434
  OLLAMA_MODELS                models directory, default ~/.ollama/models
  OLLAMA_KEEP_ALIVE            how long a model stays loaded after use, default 5m (negative: forever)
  OLLAMA_CONTEXT_LENGTH        reported context length of loaded models, default 4096
  OLLAMA_STANDIN_VRAM_BYTES    memory of the pretend GPU; 0 (default) means CPU only
  OLLAMA_STANDIN_PULL_SECONDS  how long one pull takes, default 0 (tests of interrupted pulls)

Catalogue: llama3.2:1b, llama3.2 (3B), qwen2.5:0.5b, tinyllama:latest, llama3.1:70b (real sizes), served
under every registry and namespace (``user/tinyllama``, ``host:5000/team/tinyllama``); ``flaky*`` fails its
first pull in a process and succeeds after; ``broken*`` and anything else is unknown.
Faults of a pull, by name (tests of the pull helper): ``busy*`` answers its first pull in a process with
HTTP 503 (Ollama's queue full) and succeeds after; ``cut*`` drops the connection mid-stream; ``ended*``
ends the stream cleanly before ``success``; ``stall*`` repeats one progress line (as Ollama does while a
download stalls) and ``hang*`` goes silent, both for OLLAMA_STANDIN_STALL_SECONDS (default 3600).
``/api/create`` makes a model ``from`` a local one with a system prompt and parameters (kept in real
params/system blobs, shown by ``/api/show``); each ``/api/chat`` appends the options and system prompt it
runs with to ``<OLLAMA_MODELS>/standin-chats.jsonl``, for tests to read on the host.

Example::

    OLLAMA_HOST=127.0.0.1:11500 OLLAMA_MODELS=/tmp/models ollama serve &
    curl -s 127.0.0.1:11500/api/pull -d '{"model": "llama3.2:1b"}'
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = "0.0.0"
REGISTRY = "registry.ollama.ai"
DEFAULT_PORT = 11434
NOT_FOUND_ERROR = "pull model manifest: file does not exist"

# name:tag -> (family, parameter size, quantization, bytes on disk as the real registry reports)
CATALOGUE = {
    "llama3.2:1b": ("llama", "1.2B", "Q8_0", 1_321_098_329),
    "llama3.2:latest": ("llama", "3.2B", "Q4_K_M", 2_019_393_189),
    "qwen2.5:0.5b": ("qwen2", "494.03M", "Q4_K_M", 397_821_319),
    "tinyllama:latest": ("llama", "1B", "Q4_0", 637_700_138),
    "llama3.1:70b": ("llama", "70.6B", "Q4_K_M", 42_520_413_916),
}
FLAKY_MODEL = ("llama", "15M", "Q8_0", 52_428_800)
FAULTY = ("flaky", "busy", "cut", "ended", "stall", "hang")
WEIGHTS, PARAMS, SYSTEM = ("application/vnd.ollama.image.model", "application/vnd.ollama.image.params",
                           "application/vnd.ollama.image.system")
# The options a chat uses, written one JSON line per /api/chat to <OLLAMA_MODELS>/standin-chats.jsonl.
CHAT_LOG = "standin-chats.jsonl"
SMALL_LAYERS = (
    ("application/vnd.ollama.image.template", 1_429),
    ("application/vnd.ollama.image.license", 7_711),
    ("application/vnd.ollama.image.params", 96),
)


def dumps(obj: object) -> str:
    """Compact JSON, byte for byte what Go's encoder writes (scripts grep for ``"status":"success"``)."""
    return json.dumps(obj, separators=(",", ":"))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_host(value: str) -> tuple[str, int]:
    """``OLLAMA_HOST`` the way Ollama reads it: ``0.0.0.0`` -> port 11434, ``:8080`` -> every address.

    >>> parse_host("[::]:11500")
    ('::', 11500)
    """
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    default_port = {"http": 80, "https": 443}.get(scheme, DEFAULT_PORT) if sep else DEFAULT_PORT
    hostport = (rest if sep else value).split("/", 1)[0]
    match = re.fullmatch(r"\[([^\]]*)\]:(\d*)|([^:\[\]]*):(\d*)", hostport)
    if match:
        host = match.group(1) if match.group(1) is not None else match.group(3)
        port_text = match.group(2) if match.group(1) is not None else match.group(4)
    else:
        host, port_text = hostport.strip("[]") or "127.0.0.1", ""
    port = int(port_text) if port_text.isdigit() and int(port_text) <= 65535 else default_port
    return host, port


def parse_duration(value: object, default: float | None) -> float | None:
    """Seconds from a keep_alive value (``"5m"``, ``"1h30m"``, ``300``); None means forever."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)) or re.fullmatch(r"-?\d+(\.\d+)?", str(value)):
        seconds = float(value)
    else:
        units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", str(value))
        seconds = sum(float(n) * units[u] for n, u in parts)
        if str(value).startswith("-"):
            seconds = -seconds
    return None if seconds < 0 else seconds


_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
# [[scheme://]host[:port]/namespace/]model[:tag], or namespace/model[:tag]
NAME_RE = re.compile(rf"^(?:(?:https?://)?{_PART}(?::\d+)?/{_PART}/|{_PART}/)?{_PART}(?::[A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})?$")


def split_name(name: str) -> tuple[str, str, str, str]:
    """(registry, namespace, model, tag) as Ollama's ``ParseName`` fills them: defaults
    registry.ollama.ai, library and latest; a tag only after the last ``/``.

    >>> split_name("10.0.0.5:5000/team/m")
    ('10.0.0.5:5000', 'team', 'm', 'latest')
    """
    rest = name.split("://", 1)[-1]
    tag = ""
    if rest.rfind(":") > rest.rfind("/"):
        rest, tag = rest.rsplit(":", 1)
    parts = rest.split("/")
    model = parts.pop()
    namespace = parts.pop() if parts else "library"
    return "/".join(parts) or REGISTRY, namespace, model, tag or "latest"


def display_name(name: str) -> str:
    """The name /api/tags lists, as Ollama's ``Name.DisplayShortest``: the default registry is left out,
    and with it the namespace ``library`` (case-insensitively); model and tag always shown."""
    registry, namespace, model, tag = split_name(name)
    if registry.lower() != REGISTRY:
        return f"{registry}/{namespace}/{model}:{tag}"
    if namespace.lower() != "library":
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def catalogue_entry(name: str) -> tuple[str, str, str, int] | None:
    _, _, model, tag = split_name(name)
    if model.startswith("broken"):
        return None
    if model.startswith(FAULTY):
        return FLAKY_MODEL
    return CATALOGUE.get(f"{model}:{tag}")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).astimezone().isoformat()


def human_size(size: float) -> str:
    """Decimal units as ``ollama list`` prints them: ``human_size(1_321_098_329) == "1.3 GB"``."""
    units = ["B", "KB", "MB", "GB", "TB"]
    while size >= 1000 and len(units) > 1:
        size /= 1000
        units.pop(0)
    return f"{size:.1f} {units[0]}" if len(units) <= 3 else f"{size:.0f} {units[0]}"


class ModelStore:
    """Models on disk (the real manifest layout) and models loaded in memory."""

    def __init__(self, root: Path):
        self.root = root
        self.lock = threading.Lock()
        self.loaded: dict[str, dict] = {}
        self.pulled_once: set[str] = set()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "manifests").mkdir(parents=True, exist_ok=True)

    def manifest_path(self, name: str) -> Path:
        return self.root.joinpath("manifests", *split_name(name))

    def layers(self, name: str) -> tuple[bytes, list[dict]]:
        """The config blob and the layers a pull of ``name`` downloads (digests derived from the name)."""
        family, params, quant, size = catalogue_entry(name)
        config = dumps({"model_format": "gguf", "model_family": family, "model_families": [family],
                             "model_type": params, "file_type": quant, "architecture": "amd64",
                             "os": "linux"}).encode()
        small = sum(s for _, s in SMALL_LAYERS)
        layers = [(WEIGHTS, size - small - len(config)), *SMALL_LAYERS]
        return config, [{"mediaType": kind, "size": n,
                         "digest": "sha256:" + hashlib.sha256(f"{display_name(name)} {kind}".encode()).hexdigest()}
                        for kind, n in layers]

    def save(self, name: str, config: bytes, layers: list[dict]) -> None:
        config_digest = hashlib.sha256(config).hexdigest()
        (self.root / "blobs" / f"sha256-{config_digest}").write_bytes(config)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": f"sha256:{config_digest}", "size": len(config)},
                    "layers": layers}
        path = self.manifest_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(dumps(manifest))
        tmp.replace(path)

    def describe(self, name: str) -> dict | None:
        """The /api/tags entry of a local model, or None when it is not present."""
        path = self.manifest_path(name)
        try:
            raw = path.read_bytes()
            manifest = json.loads(raw)
            config_hex = manifest["config"]["digest"].split(":", 1)[1]
            config = json.loads((self.root / "blobs" / f"sha256-{config_hex}").read_bytes())
        except (OSError, ValueError, KeyError):
            return None
        shown = display_name(name)
        return {"name": shown, "model": shown, "modified_at": iso_time(path.stat().st_mtime),
                "size": sum(layer["size"] for layer in manifest["layers"]) + manifest["config"]["size"],
                "digest": hashlib.sha256(raw).hexdigest(),
                "details": {"parent_model": "", "format": config["model_format"],
                            "family": config["model_family"], "families": config["model_families"],
                            "parameter_size": config["model_type"], "quantization_level": config["file_type"]}}

    def manifest(self, name: str) -> dict | None:
        try:
            return json.loads(self.manifest_path(name).read_bytes())
        except (OSError, ValueError):
            return None

    def blob(self, digest: str) -> bytes | None:
        try:
            return (self.root / "blobs" / f"sha256-{digest.split(':', 1)[1]}").read_bytes()
        except OSError:
            return None

    def put_blob(self, data: bytes, kind: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / f"sha256-{digest}").write_bytes(data)
        return {"mediaType": kind, "digest": f"sha256:{digest}", "size": len(data)}

    def settings(self, name: str) -> tuple[dict, str, str]:
        """A local model's parameters, system prompt and model blob path, from its layers as Ollama keeps them.

        A pulled model's small layers have no content here: no parameters, no system prompt.
        """
        params, system, weights = {}, "", ""
        for layer in (self.manifest(name) or {}).get("layers", []):
            data = self.blob(layer["digest"])
            if layer["mediaType"] == PARAMS and data:
                params = json.loads(data)
            elif layer["mediaType"] == SYSTEM and data is not None:
                system = data.decode()
            elif layer["mediaType"] == WEIGHTS:
                weights = str(self.root / "blobs" / layer["digest"].replace(":", "-"))
        return params, system, weights

    def create(self, name: str, base: str, system: str | None, parameters: dict):
        """Yield the NDJSON objects of ``/api/create`` from a local model: its layers are reused, the request's
        parameters merged over the base's and its system prompt (if any) replacing the base's, as in Ollama."""
        manifest = self.manifest(base)
        if manifest is None:
            yield {"error": f"model '{base}' not found"}
            return
        base_params, _, _ = self.settings(base)
        replaced = {PARAMS} | ({SYSTEM} if system else set())
        layers = [layer for layer in manifest["layers"] if layer["mediaType"] not in replaced]
        for layer in layers:
            yield {"status": f"using existing layer {layer['digest']}"}
        new = []
        if system:
            new.append(self.put_blob(system.encode(), SYSTEM))
        merged = dict(base_params, **parameters)
        if merged:
            new.append(self.put_blob(dumps(merged).encode(), PARAMS))
        for layer in new:
            yield {"status": f"creating new layer {layer['digest']}"}
        yield {"status": "writing manifest"}
        self.save(name, self.blob(manifest["config"]["digest"]) or b"{}", layers + new)
        yield {"status": "success"}

    def local_models(self) -> list[dict]:
        manifests = self.root / "manifests"
        names = ["/".join(p.relative_to(manifests).parts[:-1]) + ":" + p.name
                 for p in manifests.glob("*/*/*/*") if p.is_file() and not p.name.startswith(".")]
        found = [m for m in map(self.describe, names) if m]
        return sorted(found, key=lambda m: m["modified_at"], reverse=True)

    def delete(self, name: str) -> bool:
        with self.lock:
            self.loaded.pop(display_name(name), None)
        try:
            self.manifest_path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def load(self, model: dict, keep_alive: float | None) -> None:
        with self.lock:
            expires = None if keep_alive is None else time.time() + keep_alive
            if keep_alive == 0:
                self.loaded.pop(model["name"], None)
            else:
                self.loaded[model["name"]] = dict(model, expires=expires)

    def running(self) -> list[dict]:
        vram = int(os.environ.get("OLLAMA_STANDIN_VRAM_BYTES") or 0)
        context = int(os.environ.get("OLLAMA_CONTEXT_LENGTH") or 4096)
        now = time.time()
        with self.lock:
            for name in [n for n, m in self.loaded.items() if m["expires"] is not None and m["expires"] <= now]:
                del self.loaded[name]
            models = list(self.loaded.values())
        forever = datetime(2318, 1, 1, tzinfo=timezone.utc).timestamp()
        return [{"name": m["name"], "model": m["model"], "size": m["size"], "digest": m["digest"],
                 "details": m["details"], "expires_at": iso_time(m["expires"] or forever),
                 "size_vram": min(m["size"], vram), "context_length": context} for m in models]

    def first_pull(self, shown: str) -> bool:
        """Whether this process has not pulled ``shown`` before (faults that happen once)."""
        with self.lock:
            first = shown not in self.pulled_once
            self.pulled_once.add(shown)
        return first

    @staticmethod
    def fault(kind: str, line: dict, seconds: float):
        """The rest of a faulty pull stream (see the module docstring)."""
        if kind == "cut":
            raise StreamCut()
        started = time.monotonic()
        while kind in ("stall", "hang") and time.monotonic() - started < seconds:
            time.sleep(0.2)
            if kind == "stall":
                yield line

    def pull(self, name: str):
        """Yield the NDJSON objects of a real pull; the manifest is written only if the caller reads to the end."""
        yield {"status": "pulling manifest"}
        if catalogue_entry(name) is None:
            yield {"error": NOT_FOUND_ERROR}
            return
        config, layers = self.layers(name)
        shown = display_name(name)
        fault = next((f for f in FAULTY if shown.startswith(f)), "")
        fail = fault == "flaky" and self.first_pull(shown)
        stall = float(os.environ.get("OLLAMA_STANDIN_STALL_SECONDS") or 3600)
        steps = 4
        pause = float(os.environ.get("OLLAMA_STANDIN_PULL_SECONDS") or 0) / (len(layers) * (steps + 1))
        for layer in layers:
            digest = layer["digest"]
            for step in range(steps + 1):
                time.sleep(pause)
                line = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": layer["size"]}
                if step:
                    line["completed"] = layer["size"] * step // steps
                yield line
                if fail and step == 2:
                    yield {"error": f"max retries exceeded: Get \"https://{REGISTRY}/v2/library/"
                                    f"{split_name(name)[2]}/blobs/{digest}\": net/http: TLS handshake timeout"}
                    return
                if fault in ("cut", "ended", "stall", "hang") and step == 2:
                    yield from self.fault(fault, line, stall)
                    return
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        try:
            self.save(name, config, layers)
        except OSError as exc:
            yield {"error": f"open {exc.filename}: {exc.strerror}"}
            return
        yield {"status": "success"}


class StreamCut(Exception):
    """Raised inside a stream: the connection is dropped without the final chunk."""


def openai_error(message: str) -> dict:
    return {"error": {"message": message, "type": "api_error", "param": None, "code": None}}


def go_value(value: object) -> str:
    """A parameter value as Go's ``%#v`` prints it: ``go_value(0.3) == "0.3"``, ``go_value("x") == '"x"'``."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text) or [""]


class Handler(BaseHTTPRequestHandler):
    """One request: the routes below, NDJSON/SSE streams with chunked encoding, one log line each."""

    protocol_version = "HTTP/1.1"
    store: ModelStore

    def version_string(self) -> str:
        return f"ollama-standin/{VERSION}"

    def log_message(self, format: str, *args: object) -> None:
        """Silenced: ``finish_request`` writes one gin-style line per request instead."""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status = code
        super().send_response(code, message)

    def handle_one_request(self) -> None:
        self.status, started = 0, time.perf_counter()
        super().handle_one_request()
        if self.status:
            took = (time.perf_counter() - started) * 1000
            log(f"[GIN] {time.strftime('%Y/%m/%d - %H:%M:%S')} | {self.status} | {took:9.3f}ms | "
                f"{self.client_address[0]:>15} | {self.command:<7} \"{self.path}\"")

    def do_GET(self) -> None:
        self.route({"/": self.root, "/api/version": self.version, "/api/tags": self.tags,
                    "/api/ps": self.ps, "/v1/models": self.openai_models})

    def do_HEAD(self) -> None:
        self.route({"/": self.root, "/api/version": self.version})

    def do_POST(self) -> None:
        self.route({"/api/pull": self.pull, "/api/chat": self.chat, "/api/generate": self.generate,
                    "/api/show": self.show, "/v1/chat/completions": self.openai_chat,
                    "/api/create": self.create})

    def do_DELETE(self) -> None:
        self.route({"/api/delete": self.delete})

    def route(self, table: dict) -> None:
        path = self.path.split("?", 1)[0]
        self.body = self.read_body()
        if path not in table:
            self.reply(404, b"404 page not found", "text/plain")
            return
        try:
            table[path]()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def request_json(self) -> dict | None:
        try:
            request = json.loads(self.body or b"{}")
        except ValueError as exc:
            self.reply_json(400, {"error": f"invalid request body: {exc}"})
            return None
        if not isinstance(request, dict):
            self.reply_json(400, {"error": "invalid request body"})
            return None
        return request

    def reply(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, code: int, obj: object) -> None:
        self.reply(code, dumps(obj).encode(), "application/json; charset=utf-8")

    def stream(self, items, content_type: str = "application/x-ndjson", encode=None) -> None:
        """Send each item as its own chunk as soon as it exists, like Ollama's streaming replies."""
        encode = encode or (lambda obj: dumps(obj).encode() + b"\n")
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for item in items:
                data = encode(item)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
        except StreamCut:
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")

    def root(self) -> None:
        self.reply(200, b"Ollama is running", "text/plain; charset=utf-8")

    def version(self) -> None:
        self.reply_json(200, {"version": VERSION})

    def tags(self) -> None:
        self.reply_json(200, {"models": self.store.local_models()})

    def ps(self) -> None:
        self.reply_json(200, {"models": self.store.running()})

    def pull(self) -> None:
        request = self.request_json()
        if request is None:
            return
        name = request.get("model") or request.get("name")
        if not name:
            self.reply_json(400, {"error": "model is required"})
            return
        if not NAME_RE.match(str(name)):
            self.reply_json(400, {"error": "invalid model name"})
            return
        shown = display_name(str(name))
        if shown.startswith("busy") and self.store.first_pull(shown):
            self.reply_json(503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
            return
        events = self.store.pull(name)
        self.reply_progress(events, request.get("stream", True))

    def reply_progress(self, events, stream: bool) -> None:
        """A pull's or create's progress as Ollama sends it: streamed lines, or only the last one
        (HTTP 500 with it when it is an error)."""
        if stream:
            self.stream(events)
            return
        last = {}
        for last in events:
            if "error" in last:
                self.reply_json(500, last)
                return
        self.reply_json(200, last)

    def requested_model(self, openai: bool = False) -> tuple[dict, dict] | None:
        """The request and the local model it names, or None once an error reply was sent."""
        request = self.request_json()
        if request is None:
            return None
        model = self.local_model(request, openai_error if openai else (lambda msg: {"error": msg}))
        return (request, model) if model else None

    def local_model(self, request: dict, error_shape) -> dict | None:
        name = request.get("model") or request.get("name")
        if not name:
            self.reply_json(400, error_shape("model is required"))
            return None
        if not NAME_RE.match(str(name)):
            self.reply_json(400, error_shape("invalid model name"))
            return None
        model = self.store.describe(name)
        if model is None:
            self.reply_json(404, error_shape(f"model '{name}' not found"))
        return model

    def answer(self, model: dict, request: dict, prompt: str) -> tuple[list[str], dict]:
        """Canned reply chunks plus the final counters, and the model marked as loaded."""
        started = time.perf_counter_ns()
        default = parse_duration(os.environ.get("OLLAMA_KEEP_ALIVE"), 300.0)
        self.store.load(model, parse_duration(request.get("keep_alive"), default))
        chunks = words(f"This is the Ollama stand-in ({model['name']}) answering: {prompt.strip()[:200]}")
        took = time.perf_counter_ns() - started
        counts = {"total_duration": took, "load_duration": took // 2, "prompt_eval_count": len(words(prompt)),
                  "prompt_eval_duration": took // 4, "eval_count": len(chunks), "eval_duration": took // 4}
        return chunks, counts

    def chat(self) -> None:
        found = self.requested_model()
        if not found:
            return
        request, model = found
        messages = request.get("messages") or []
        base = {"model": model["name"], "created_at": iso_time(time.time())}
        if not messages:
            self.unload_or_load(model, request, base, {"message": {"role": "assistant", "content": ""}})
            return
        prompt = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
        self.record_chat(model["name"], request, messages)
        chunks, counts = self.answer(model, request, prompt)
        final = dict(base, message={"role": "assistant", "content": ""}, done_reason="stop", done=True, **counts)
        if request.get("stream", True):
            self.stream([dict(base, message={"role": "assistant", "content": c}, done=False) for c in chunks]
                        + [final])
        else:
            final["message"]["content"] = "".join(chunks)
            self.reply_json(200, final)

    def record_chat(self, name: str, request: dict, messages: list) -> None:
        """Append what this chat runs with: the model's parameters under the request's options, and the system
        prompt (the request's own system message, else the model's), as Ollama applies them."""
        params, system, _ = self.store.settings(name)
        options = dict(params, **(request.get("options") or {}))
        asked = [str(m.get("content", "")) for m in messages if m.get("role") == "system"]
        line = dumps({"model": name, "options": options, "system": asked[0] if asked else system}) + "\n"
        with self.store.lock, open(self.store.root / CHAT_LOG, "a", encoding="utf-8") as log_file:
            log_file.write(line)

    def generate(self) -> None:
        found = self.requested_model()
        if not found:
            return
        request, model = found
        base = {"model": model["name"], "created_at": iso_time(time.time())}
        prompt = str(request.get("prompt") or "")
        if not prompt:
            self.unload_or_load(model, request, base, {"response": ""})
            return
        chunks, counts = self.answer(model, request, prompt)
        final = dict(base, response="", done=True, done_reason="stop", context=list(range(1, len(chunks) + 1)),
                     **counts)
        if request.get("stream", True):
            self.stream([dict(base, response=c, done=False) for c in chunks] + [final])
        else:
            final["response"] = "".join(chunks)
            self.reply_json(200, final)

    def unload_or_load(self, model: dict, request: dict, base: dict, empty: dict) -> None:
        """An empty prompt loads a model (or unloads it with keep_alive 0), as in Ollama."""
        default = parse_duration(os.environ.get("OLLAMA_KEEP_ALIVE"), 300.0)
        keep_alive = parse_duration(request.get("keep_alive"), default)
        self.store.load(model, keep_alive)
        self.reply_json(200, dict(base, **empty, done_reason="unload" if keep_alive == 0 else "load", done=True))

    def show(self) -> None:
        found = self.requested_model()
        if not found:
            return
        request, model = found
        details = model["details"]
        params, system, weights = self.store.settings(model["name"])
        # Ollama writes each value with Go's "%-30s %#v", one line per list item (stop words).
        lines = [f"{key:<30} {go_value(item)}" for key, value in params.items()
                 for item in (value if isinstance(value, list) else [value])]
        modelfile = (f"# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n"
                     f"# FROM {model['name']}\n\nFROM {weights}\nTEMPLATE {{{{ .Prompt }}}}\n"
                     + (f'SYSTEM """{system}"""\n' if system else "")
                     + "".join(f"PARAMETER {line.split(None, 1)[0]} {line.split(None, 1)[1]}\n" for line in lines))
        reply = {"modelfile": modelfile, "parameters": "\n".join(lines), "template": "{{ .Prompt }}",
                 "details": details, "modified_at": model["modified_at"],
                 "model_info": {"general.architecture": details["family"],
                                f"{details['family']}.context_length": 131072},
                 "capabilities": ["completion"]}
        if system:
            reply["system"] = system
        self.reply_json(200, reply)

    def create(self) -> None:
        request = self.request_json()
        if request is None:
            return
        name, base = request.get("model") or request.get("name"), request.get("from")
        if not name or not NAME_RE.match(str(name)):
            self.reply_json(400, {"error": "invalid model name"})
            return
        if not base:
            self.reply_json(400, {"error": "neither 'from' or 'files' was specified"})
            return
        parameters = request.get("parameters") or {}
        if not isinstance(parameters, dict):
            self.reply_json(400, {"error": "json: cannot unmarshal parameters into Go struct field"})
            return
        events = self.store.create(str(name), str(base), request.get("system") or None, parameters)
        self.reply_progress(events, request.get("stream", True))

    def delete(self) -> None:
        found = self.requested_model()
        if found:
            self.store.delete(found[1]["name"])
            self.reply(200, b"", "text/plain")

    def openai_models(self) -> None:
        data = [{"id": m["name"], "object": "model",
                 "created": int(datetime.fromisoformat(m["modified_at"]).timestamp()), "owned_by": "library"}
                for m in self.store.local_models()]
        self.reply_json(200, {"object": "list", "data": data})

    def openai_chat(self) -> None:
        found = self.requested_model(openai=True)
        if not found:
            return
        request, model = found
        prompt = " ".join(str(m.get("content", "")) for m in request.get("messages") or [] if m.get("role") == "user")
        chunks, counts = self.answer(model, request, prompt)
        base = {"id": f"chatcmpl-{int(time.time() * 1000) % 1000}", "created": int(time.time()),
                "model": model["name"], "system_fingerprint": "fp_ollama"}
        usage = {"prompt_tokens": counts["prompt_eval_count"], "completion_tokens": counts["eval_count"],
                 "total_tokens": counts["prompt_eval_count"] + counts["eval_count"]}
        if not request.get("stream"):
            message = {"role": "assistant", "content": "".join(chunks)}
            self.reply_json(200, dict(base, object="chat.completion", usage=usage,
                                      choices=[{"index": 0, "message": message, "finish_reason": "stop"}]))
            return
        events = [dict(base, object="chat.completion.chunk",
                       choices=[{"index": 0, "delta": {"role": "assistant", "content": c}, "finish_reason": None}])
                  for c in chunks]
        events.append(dict(base, object="chat.completion.chunk",
                           choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": "stop"}]))
        self.stream(events + ["[DONE]"], "text/event-stream",
                    lambda e: b"data: " + (e.encode() if isinstance(e, str) else dumps(e).encode()) + b"\n\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, store: ModelStore):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address_family = family
        handler = type("BoundHandler", (Handler,), {"store": store})
        super().__init__((host, port), handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # Go listens dual-stack on [::]; do the same so IPv4 clients reach it too.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def serve() -> int:
    host, port = parse_host(os.environ.get("OLLAMA_HOST", ""))
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        store = ModelStore(models_dir())
    except OSError as exc:
        log(f"Error: mkdir {exc.filename}: {exc.strerror or exc}")
        return 1
    try:
        server = Server(host, port, store)
    except OSError as exc:
        log(f"Error: listen tcp {shown}: {exc.strerror or exc}")
        return 1
    # SIGTERM stops the serve loop from another thread (shutdown() waits for the loop, which runs here):
    # raising SystemExit from the handler could land inside a request thread's start and log a traceback.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log(f"time={datetime.now().astimezone().isoformat()} level=INFO source=routes.go "
        f"msg=\"Listening on {shown} (version {VERSION})\" standin=true models={store.root}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def client_url(path: str) -> str:
    host, port = parse_host(os.environ.get("OLLAMA_HOST", ""))
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"http://{host}:{port}{path}"


def call(path: str, payload: dict | None = None, method: str | None = None):
    data = None if payload is None else dumps(payload).encode()
    request = urllib.request.Request(client_url(path), data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=600)


def version_command() -> int:
    """Exactly Ollama's output: the server's version, plus a warning when the client differs or no server runs."""
    server_version = ""
    try:
        with urllib.request.urlopen(client_url("/api/version"), timeout=3) as reply:
            server_version = json.load(reply)["version"]
    except (OSError, ValueError, KeyError):
        print("Warning: could not connect to a running Ollama instance")
    if server_version:
        print(f"ollama version is {server_version}")
    if server_version != VERSION:
        print(f"Warning: client version is {VERSION}")
    return 0


def pull_command(name: str) -> int:
    with call("/api/pull", {"model": name}) as reply:
        for line in reply:
            event = json.loads(line)
            if "error" in event:
                print(f"Error: {event['error']}", file=sys.stderr)
                return 1
            done = f" {100 * event['completed'] // max(event['total'], 1)}%" if "completed" in event else ""
            print(f"{event['status']}{done}", file=sys.stderr)
    return 0


def table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("    ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def list_command() -> int:
    with call("/api/tags") as reply:
        models = json.load(reply)["models"]
    table([["NAME", "ID", "SIZE", "MODIFIED"]]
          + [[m["name"], m["digest"][:12], human_size(m["size"]), m["modified_at"][:19]] for m in models])
    return 0


def ps_command() -> int:
    with call("/api/ps") as reply:
        models = json.load(reply)["models"]
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        gpu = 100 * m["size_vram"] // max(m["size"], 1)
        processor = {0: "100% CPU", 100: "100% GPU"}.get(gpu, f"{100 - gpu}%/{gpu}% CPU/GPU")
        rows.append([m["name"], m["digest"][:12], human_size(m["size"]), processor, str(m["context_length"]),
                     m["expires_at"][:19]])
    table(rows)
    return 0


def rm_command(name: str) -> int:
    call("/api/delete", {"model": name}, "DELETE").close()
    print(f"deleted '{name}'")
    return 0


def main(argv: list[str]) -> int:
    command, args = (argv[0], argv[1:]) if argv else ("help", [])
    if command in ("-v", "--version"):
        return version_command()
    if command == "serve":
        return serve()
    clients = {"pull": (pull_command, 1), "list": (list_command, 0), "ls": (list_command, 0),
               "ps": (ps_command, 0), "rm": (rm_command, 1)}
    if command not in clients:
        print("Usage: ollama serve | ollama -v | ollama pull|rm MODEL | ollama list|ps  (stand-in)",
              file=sys.stderr)
        return 0 if command in ("help", "-h", "--help") else 1
    function, arity = clients[command]
    if len(args) != arity:
        print(f"Error: \"ollama {command}\" takes {arity} argument(s)", file=sys.stderr)
        return 1
    try:
        return function(*args)
    except urllib.error.HTTPError as exc:
        print(f"Error: {json.loads(exc.read() or b'{}').get('error', exc.reason)}", file=sys.stderr)
    except OSError:
        print("Error: could not connect to ollama server, run 'ollama serve' to start it", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
