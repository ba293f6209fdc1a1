"""The Ollama stand-in, run the way hosts run it: unpacked from a built release archive with ``tar``,
started as ``ollama serve`` with OLLAMA_HOST/OLLAMA_MODELS, and spoken to over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ollastack.ollama_names import tagged
from ollastack.presets import BUILTINS, create_request, differences
from tests.support.standin.build_archive import build_archive, unpack

VERSION = "0.13.3"
MANIFESTS = Path("manifests/registry.ollama.ai/library")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Ollama:
    """One ``ollama serve`` process; ``url`` is its base address, ``log`` its stderr (journald's view)."""

    def __init__(self, binary: Path, models: Path, log: Path, host: str | None = None, **env: str):
        self.binary, self.models, self.log_path = binary, models, log
        self.port = free_port()
        self.env = dict(os.environ, OLLAMA_HOST=host or f"127.0.0.1:{self.port}", OLLAMA_MODELS=str(models), **env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Ollama":
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(self.binary), "serve"], env=self.env, stderr=log,
                                         stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"stand-in did not start: {self.log()}")
                time.sleep(0.02)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args], env=self.env, capture_output=True, text=True, timeout=30)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, str, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as reply:
                return reply.status, reply.headers.get("Content-Type", ""), reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read()

    def get(self, path: str) -> dict:
        status, _, body = self.request("GET", path)
        assert status == 200, body
        return json.loads(body)

    def post_lines(self, path: str, body: dict) -> list[dict]:
        """A streamed NDJSON reply, one object per line; asserts HTTP 200 and the NDJSON content type."""
        status, content_type, raw = self.request("POST", path, body)
        assert (status, content_type) == (200, "application/x-ndjson"), raw
        return [json.loads(line) for line in raw.splitlines()]


@pytest.fixture
def ollama(binary, tmp_path):
    server = Ollama(binary, tmp_path / "models", tmp_path / "ollama.log").start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def test_root_version_and_unknown_path(ollama):
    assert ollama.request("GET", "/") == (200, "text/plain; charset=utf-8", b"Ollama is running")
    assert ollama.request("HEAD", "/")[0] == 200
    assert ollama.get("/api/version") == {"version": VERSION}
    assert ollama.request("GET", "/api/nothing")[0] == 404


def test_version_flag_matches_real_output(ollama, binary):
    assert ollama.cli("--version").stdout == f"ollama version is {VERSION}\n"
    assert ollama.cli("-v").stdout == f"ollama version is {VERSION}\n"
    offline = subprocess.run([str(binary), "-v"], env=dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{free_port()}"),
                             capture_output=True, text=True, timeout=30)
    assert offline.stdout == ("Warning: could not connect to a running Ollama instance\n"
                              f"Warning: client version is {VERSION}\n")


def test_pull_streams_real_progress_shape_and_persists_manifest(ollama):
    lines = ollama.post_lines("/api/pull", {"model": "llama3.2:1b"})
    statuses = [line["status"] for line in lines]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    layers: dict[str, list[dict]] = {}
    for line in lines[1:-3]:
        assert line["status"] == f"pulling {line['digest'][7:19]}" and line["digest"].startswith("sha256:")
        layers.setdefault(line["digest"], []).append(line)
    assert len(layers) == 4
    for progress in layers.values():
        completed = [p.get("completed", 0) for p in progress]
        assert len(progress) >= 3 and completed == sorted(completed) and completed[-1] == progress[0]["total"]
    assert (ollama.models / MANIFESTS / "llama3.2" / "1b").is_file()
    [model] = ollama.get("/api/tags")["models"]
    assert model["name"] == model["model"] == "llama3.2:1b"
    assert model["size"] == 1_321_098_329 and len(model["digest"]) == 64
    assert model["details"]["family"] == "llama" and model["details"]["parameter_size"] == "1.2B"


def test_pull_without_stream_and_default_tag(ollama):
    status, _, body = ollama.request("POST", "/api/pull", {"name": "tinyllama", "stream": False})
    assert (status, json.loads(body)) == (200, {"status": "success"})
    assert [m["name"] for m in ollama.get("/api/tags")["models"]] == ["tinyllama:latest"]
    assert (ollama.models / MANIFESTS / "tinyllama" / "latest").is_file()


@pytest.mark.parametrize("name", ["no-such-model:7b", "broken-model"])
def test_unknown_model_pull_gives_error_line_after_200(ollama, name):
    lines = ollama.post_lines("/api/pull", {"model": name})
    assert lines == [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
    status, _, body = ollama.request("POST", "/api/pull", {"model": name, "stream": False})
    assert (status, json.loads(body)) == (500, {"error": "pull model manifest: file does not exist"})
    assert ollama.get("/api/tags") == {"models": []}


def test_pull_needs_a_valid_model_name(ollama):
    status, _, body = ollama.request("POST", "/api/pull", {})
    assert (status, json.loads(body)) == (400, {"error": "model is required"})
    for path in ("/api/pull", "/api/chat"):
        status, _, body = ollama.request("POST", path, {"model": "../../etc/passwd"})
        assert (status, json.loads(body)) == (400, {"error": "invalid model name"})


def test_flaky_model_fails_once_per_process_then_succeeds(ollama):
    first = ollama.post_lines("/api/pull", {"model": "flaky-small"})
    assert "error" in first[-1] and "TLS handshake timeout" in first[-1]["error"]
    assert any("completed" in line for line in first), "real failures happen mid-download"
    assert ollama.get("/api/tags") == {"models": []}
    assert ollama.post_lines("/api/pull", {"model": "flaky-small"})[-1] == {"status": "success"}
    assert [m["name"] for m in ollama.get("/api/tags")["models"]] == ["flaky-small:latest"]


def test_chat_streams_chunks_and_loads_model(ollama):
    assert ollama.request("POST", "/api/pull", {"model": "qwen2.5:0.5b", "stream": False})[0] == 200
    assert ollama.get("/api/ps") == {"models": []}
    lines = ollama.post_lines("/api/chat", {"model": "qwen2.5:0.5b",
                                            "messages": [{"role": "user", "content": "Why is the sky blue?"}]})
    *chunks, final = lines
    assert len(chunks) >= 3 and all(c["done"] is False and c["message"]["role"] == "assistant" for c in chunks)
    assert "Why is the sky blue?" in "".join(c["message"]["content"] for c in chunks)
    assert final["done"] is True and final["done_reason"] == "stop" and final["eval_count"] == len(chunks)
    assert final["prompt_eval_count"] > 0 and final["total_duration"] > 0
    [loaded] = ollama.get("/api/ps")["models"]
    assert loaded["name"] == "qwen2.5:0.5b" and loaded["size"] == 397_821_319 and loaded["size_vram"] == 0
    assert loaded["expires_at"] > final["created_at"]


def test_chat_and_generate_without_stream(ollama):
    ollama.request("POST", "/api/pull", {"model": "qwen2.5:0.5b", "stream": False})
    status, _, body = ollama.request("POST", "/api/chat", {"model": "qwen2.5:0.5b", "stream": False,
                                                           "messages": [{"role": "user", "content": "hello"}]})
    reply = json.loads(body)
    assert status == 200 and reply["done"] is True and reply["message"]["content"].endswith("hello")
    status, _, body = ollama.request("POST", "/api/generate", {"model": "qwen2.5:0.5b", "prompt": "count",
                                                               "stream": False})
    reply = json.loads(body)
    assert status == 200 and reply["done"] is True and reply["response"].endswith("count")
    *chunks, final = ollama.post_lines("/api/generate", {"model": "qwen2.5:0.5b", "prompt": "count"})
    assert "".join(c["response"] for c in chunks) == reply["response"] and final["done"] is True


def test_chat_with_missing_model_is_404(ollama):
    for path in ("/api/chat", "/api/generate"):
        status, _, body = ollama.request("POST", path, {"model": "llama3.2:1b", "prompt": "x",
                                                        "messages": [{"role": "user", "content": "x"}]})
        assert (status, json.loads(body)) == (404, {"error": "model 'llama3.2:1b' not found"})


def test_keep_alive_zero_unloads(ollama):
    ollama.request("POST", "/api/pull", {"model": "qwen2.5:0.5b", "stream": False})
    _, _, body = ollama.request("POST", "/api/generate", {"model": "qwen2.5:0.5b"})
    assert json.loads(body)["done_reason"] == "load" and len(ollama.get("/api/ps")["models"]) == 1
    _, _, body = ollama.request("POST", "/api/generate", {"model": "qwen2.5:0.5b", "keep_alive": 0})
    assert json.loads(body)["done_reason"] == "unload" and ollama.get("/api/ps") == {"models": []}


def test_vram_setting_decides_gpu_offload(binary, tmp_path):
    server = Ollama(binary, tmp_path / "models", tmp_path / "log", OLLAMA_STANDIN_VRAM_BYTES=str(16 * 2**30)).start()
    try:
        for name in ("llama3.2:1b", "llama3.1:70b"):
            server.request("POST", "/api/pull", {"model": name, "stream": False})
            server.request("POST", "/api/chat", {"model": name, "stream": False,
                                                 "messages": [{"role": "user", "content": "hi"}]})
        loaded = {m["name"]: m for m in server.get("/api/ps")["models"]}
        assert loaded["llama3.2:1b"]["size_vram"] == loaded["llama3.2:1b"]["size"]
        assert loaded["llama3.1:70b"]["size"] > 40e9 and loaded["llama3.1:70b"]["size_vram"] == 16 * 2**30
        assert "100% GPU" in server.cli("ps").stdout
    finally:
        server.stop()


def test_models_survive_a_restart(ollama, binary):
    ollama.post_lines("/api/pull", {"model": "llama3.2"})
    before = ollama.get("/api/tags")
    assert ollama.stop() == 0
    again = Ollama(binary, ollama.models, ollama.log_path).start()
    try:
        assert [m["name"] for m in before["models"]] == ["llama3.2:latest"]
        assert again.get("/api/tags") == before
        assert again.get("/api/ps") == {"models": []}
    finally:
        again.stop()


def test_openai_compatible_endpoints(ollama):
    ollama.request("POST", "/api/pull", {"model": "qwen2.5:0.5b", "stream": False})
    assert [m["id"] for m in ollama.get("/v1/models")["data"]] == ["qwen2.5:0.5b"]
    body = {"model": "qwen2.5:0.5b", "messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = ollama.request("POST", "/v1/chat/completions", body)
    reply = json.loads(raw)
    assert status == 200 and reply["choices"][0]["message"]["content"].endswith("hi")
    assert reply["usage"]["total_tokens"] == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    status, content_type, raw = ollama.request("POST", "/v1/chat/completions", dict(body, stream=True))
    events = [e.removeprefix("data: ") for e in raw.decode().split("\n\n") if e]
    assert (status, content_type, events[-1]) == (200, "text/event-stream", "[DONE]")
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and len(chunks) >= 3
    status, _, raw = ollama.request("POST", "/v1/chat/completions", dict(body, model="absent"))
    assert status == 404 and "not found" in json.loads(raw)["error"]["message"]


def test_cli_clients_pull_list_rm(ollama):
    pulled = ollama.cli("pull", "tinyllama")
    assert pulled.returncode == 0 and pulled.stderr.splitlines()[-1] == "success"
    listed = ollama.cli("list").stdout.splitlines()
    assert listed[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"] and listed[1].startswith("tinyllama:latest")
    assert "637.7 MB" in listed[1]
    failed = ollama.cli("pull", "broken")
    assert failed.returncode == 1
    assert failed.stderr.splitlines()[-1] == "Error: pull model manifest: file does not exist"
    assert ollama.cli("rm", "tinyllama").stdout == "deleted 'tinyllama'\n"
    assert ollama.get("/api/tags") == {"models": []}
    assert ollama.cli("rm", "tinyllama").returncode == 1


def test_streams_while_serving_others_and_stops_pull_on_disconnect(binary, tmp_path):
    server = Ollama(binary, tmp_path / "models", tmp_path / "log", OLLAMA_STANDIN_PULL_SECONDS="3").start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/api/pull", json.dumps({"model": "llama3.2:1b"}))
        reply = conn.getresponse()
        assert json.loads(reply.readline()) == {"status": "pulling manifest"}
        started = time.monotonic()
        assert server.request("GET", "/api/version")[0] == 200
        assert time.monotonic() - started < 0.5, "a pull in progress must not block other requests"
        conn.close()
        while '"/api/pull"' not in server.log():
            assert time.monotonic() - started < 2, "the pull went on after its client left"
            time.sleep(0.02)
        assert server.get("/api/tags") == {"models": []}
        assert not (server.models / MANIFESTS / "llama3.2" / "1b").exists()
    finally:
        server.stop()


def test_binds_every_address_forms(binary, tmp_path):
    port = free_port()
    for host in (f"0.0.0.0:{port}", f"[::]:{port}"):
        server = Ollama(binary, tmp_path / "models", tmp_path / "log", host=host)
        server.port, server.url = port, f"http://127.0.0.1:{port}"
        server.start()
        try:
            assert server.request("GET", "/")[2] == b"Ollama is running"
            assert f"Listening on {host}" in server.log()
        finally:
            server.stop()


def test_busy_port_fails_like_ollama(ollama, binary, tmp_path):
    busy = subprocess.run([str(binary), "serve"], env=ollama.env, capture_output=True, text=True, timeout=30)
    assert busy.returncode == 1
    assert busy.stderr == f"Error: listen tcp 127.0.0.1:{ollama.port}: Address already in use\n"


def test_logs_one_line_per_request(ollama):
    ollama.get("/api/tags")
    ollama.request("POST", "/api/chat", {"model": "absent", "messages": []})
    # Like gin, the stand-in logs a request once it has answered: the line may land just after the reply.
    deadline = time.monotonic() + 10
    while 'POST    "/api/chat"' not in ollama.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = ollama.log().splitlines()
    assert "Listening on 127.0.0.1" in lines[0]
    requests = [line for line in lines if line.startswith("[GIN]")]
    assert any('| 200 |' in line and 'GET     "/api/tags"' in line for line in requests)
    assert requests[-1].split("|")[1].strip() == "404" and requests[-1].endswith('POST    "/api/chat"')


@pytest.mark.parametrize("fmt", ["tgz", "tar.zst"])
def test_archive_formats_have_release_layout(tmp_path, fmt):
    path, sha256 = build_archive(tmp_path / "a", "0.9.1", fmt=fmt)
    assert path.name == f"ollama-linux-amd64.{fmt}"
    assert build_archive(tmp_path / "b", "0.9.1", fmt=fmt)[1] == sha256, "builds must be reproducible"
    listing = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    assert listing.split()[0] == sha256
    ollama_bin = unpack(path, tmp_path / "usr")
    assert os.access(ollama_bin, os.X_OK) and ollama_bin.read_text().startswith("#!/usr/bin/env python3\n")
    assert any((tmp_path / "usr" / "lib" / "ollama").iterdir())
    server = Ollama(ollama_bin, tmp_path / "models", tmp_path / "log").start()
    try:
        assert server.get("/api/version") == {"version": "0.9.1"}
        assert server.cli("-v").stdout == "ollama version is 0.9.1\n"
    finally:
        server.stop()


def test_archive_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="archive format"):
        build_archive(tmp_path, "0.13.3", fmt="zip")
    with pytest.raises(ValueError, match="version"):
        build_archive(tmp_path, '1"; import os')


def test_unwritable_model_store_gives_error_line_and_start_failure(ollama, binary, tmp_path):
    blocker = ollama.models / MANIFESTS / "qwen2.5"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a directory belongs")
    lines = ollama.post_lines("/api/pull", {"model": "qwen2.5:0.5b"})
    assert lines[-1]["error"].startswith("open ") and lines[-2] == {"status": "writing manifest"}
    not_a_dir = tmp_path / "models-file"
    not_a_dir.write_text("")
    env = dict(ollama.env, OLLAMA_MODELS=str(not_a_dir), OLLAMA_HOST=f"127.0.0.1:{free_port()}")
    failed = subprocess.run([str(binary), "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert failed.returncode == 1 and failed.stderr.startswith(f"Error: mkdir {not_a_dir}")


NAME_FORMS = ["tinyllama", "tinyllama:latest", "llama3.2:1b", "library/tinyllama", "library/llama3.2:1b",
              "registry.ollama.ai/library/tinyllama", "registry.ollama.ai/library/qwen2.5:0.5b",
              "Registry.Ollama.AI/Library/tinyllama", "user/tinyllama", "user/llama3.2:1b",
              "registry.ollama.ai/user/qwen2.5:0.5b", "10.0.0.5:5000/team/llama3.2:1b", "10.0.0.5:5000/library/tinyllama",
              "models.example.com/team/qwen2.5:0.5b"]


@pytest.mark.parametrize("form", NAME_FORMS)
def test_every_name_form_pulled_is_found_by_tagged(ollama, form):
    """The contract between the product's naming and Ollama's listing: what ollastack pulls it finds again."""
    lines = ollama.post_lines("/api/pull", {"model": form})
    assert lines[-1] == {"status": "success"}, lines
    listed = [m["name"] for m in ollama.get("/api/tags")["models"]]
    assert listed == [tagged(form)]


def test_names_ollama_treats_as_one_model_are_listed_once(ollama):
    for form in ("tinyllama", "library/tinyllama:latest", "registry.ollama.ai/library/tinyllama"):
        assert ollama.post_lines("/api/pull", {"model": form})[-1] == {"status": "success"}
    assert [m["name"] for m in ollama.get("/api/tags")["models"]] == ["tinyllama:latest"]
    assert (ollama.models / MANIFESTS / "tinyllama" / "latest").is_file()
    assert ollama.post_lines("/api/pull", {"model": "user/tinyllama"})[-1] == {"status": "success"}
    assert (ollama.models / "manifests/registry.ollama.ai/user/tinyllama/latest").is_file()
    assert sorted(m["name"] for m in ollama.get("/api/tags")["models"]) == ["tinyllama:latest", "user/tinyllama:latest"]


def test_create_from_a_local_model_streams_statuses_and_lists_the_new_model(ollama):
    ollama.post_lines("/api/pull", {"model": "llama3.2:1b"})
    lines = ollama.post_lines("/api/create", {"model": "factual", "from": "llama3.2:1b", "system": "Be exact.\nAlways.",
                                              "parameters": {"temperature": 0.3, "top_k": 40}})
    statuses = [line["status"] for line in lines]
    assert statuses[-2:] == ["writing manifest", "success"]
    assert all(s.startswith(("using existing layer sha256:", "creating new layer sha256:")) for s in statuses[:-2])
    assert sorted(m["name"] for m in ollama.get("/api/tags")["models"]) == ["factual:latest", "llama3.2:1b"]
    status, _, body = ollama.request("POST", "/api/show", {"model": "factual"})
    shown = json.loads(body)
    assert status == 200 and shown["system"] == "Be exact.\nAlways."
    # Go's "%-30s %#v" per parameter, as Ollama writes it.
    assert sorted(shown["parameters"].splitlines()) == [f"{'temperature':<30} 0.3", f"{'top_k':<30} 40"]
    base = json.loads(ollama.request("POST", "/api/show", {"model": "llama3.2:1b"})[2])
    assert "system" not in base and base["parameters"] == ""
    from_line = [line for line in shown["modelfile"].splitlines() if line.startswith("FROM ")]
    assert from_line == [line for line in base["modelfile"].splitlines() if line.startswith("FROM ")]


def test_create_without_stream_merges_parameters_over_the_base_and_fails_on_an_unknown_base(ollama):
    ollama.post_lines("/api/pull", {"model": "llama3.2:1b"})
    ollama.post_lines("/api/create", {"model": "a", "from": "llama3.2:1b", "parameters": {"top_k": 40, "top_p": 0.9}})
    status, _, body = ollama.request("POST", "/api/create", {"model": "b", "from": "a", "parameters": {"top_k": 7},
                                                             "stream": False})
    assert (status, json.loads(body)) == (200, {"status": "success"})
    shown = json.loads(ollama.request("POST", "/api/show", {"model": "b"})[2])
    assert sorted(shown["parameters"].split()) == sorted(["top_k", "7", "top_p", "0.9"])
    status, _, body = ollama.request("POST", "/api/create", {"model": "c", "from": "nothing-here", "stream": False})
    assert (status, json.loads(body)) == (500, {"error": "model 'nothing-here' not found"})
    assert ollama.request("POST", "/api/create", {"model": "d"})[0] == 400


def test_chat_log_has_the_models_parameters_under_the_requests_options(ollama):
    ollama.post_lines("/api/pull", {"model": "llama3.2:1b"})
    ollama.post_lines("/api/create", {"model": "p", "from": "llama3.2:1b", "system": "Model's own.",
                                      "parameters": {"temperature": 0.3, "num_ctx": 8192}})
    chat = {"model": "p", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    assert ollama.request("POST", "/api/chat", chat)[0] == 200
    asked = dict(chat, options={"num_ctx": 2048}, messages=[{"role": "system", "content": "Asked."}, *chat["messages"]])
    assert ollama.request("POST", "/api/chat", asked)[0] == 200
    logged = [json.loads(line) for line in (ollama.models / "standin-chats.jsonl").read_text().splitlines()]
    assert logged == [{"model": "p:latest", "options": {"temperature": 0.3, "num_ctx": 8192}, "system": "Model's own."},
                      {"model": "p:latest", "options": {"temperature": 0.3, "num_ctx": 2048}, "system": "Asked."}]


def test_a_preset_the_stand_in_holds_is_up_to_date_for_the_deploy(ollama):
    """The deploy's comparison reads the stand-in's /api/show as it reads Ollama's."""
    ollama.post_lines("/api/pull", {"model": "llama3.2:1b"})
    preset = {"name": "factual", "base": "llama3.2:1b", "system": "", "parameters": dict(BUILTINS["factual"])}
    body = create_request(preset)
    assert ollama.request("POST", "/api/create", body)[0] == 200

    def show(name):
        return json.loads(ollama.request("POST", "/api/show", {"model": name})[2])
    assert differences(preset, show("factual"), show("llama3.2:1b")) == []
    assert differences(dict(preset, parameters=dict(BUILTINS["factual"], top_k=41)), show("factual"),
                       show("llama3.2:1b")) == ["top_k"]
