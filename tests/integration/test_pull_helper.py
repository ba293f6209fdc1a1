"""The model pull helper (deploy/files/ollama-pull.py), run as the converge runs it, against the Ollama stand-in.

Each verdict is asserted: success only on a ``success`` line; permanent errors tried exactly once
(counted in the stand-in's request log); passing ones retried up to ``--retries``; a stall given up
after ``--idle-timeout``; the whole pull bounded by ``--deadline``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support.repo import REPO
from tests.integration.test_standin import Ollama

HELPER = REPO / "deploy/files/ollama-pull.py"
# How long the stand-in's stalled pulls last (then their stream ends without success).
STALL_S = 3


@pytest.fixture
def ollama(binary, tmp_path):
    server = Ollama(binary, tmp_path / "models", tmp_path / "ollama.log", OLLAMA_STANDIN_STALL_SECONDS=str(STALL_S)).start()
    yield server
    server.stop()


def pull(ollama: Ollama, model: str, *options: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HELPER), *options, f"127.0.0.1:{ollama.port}", model],
                          capture_output=True, text=True, timeout=timeout)


def tries(ollama: Ollama, at_least: int = 1) -> int:
    """How many pulls reached the stand-in (one gin-style log line per request, written when it ends:
    stalled ones end STALL_S after they began, so wait for ``at_least`` of them, within a bound)."""
    deadline = time.monotonic() + STALL_S + 5
    while True:
        count = sum('"/api/pull"' in line for line in ollama.log().splitlines())
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.2)


def models(ollama: Ollama) -> list[str]:
    return [m["name"] for m in ollama.get("/api/tags")["models"]]


def test_success_only_after_the_success_line(ollama):
    result = pull(ollama, "llama3.2:1b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "llama3.2:1b: success"
    assert tries(ollama) == 1 and models(ollama) == ["llama3.2:1b"]


@pytest.mark.parametrize("model", ["no-such-model:7b", "broken-model"])
def test_unknown_model_error_line_after_200_fails_at_once(ollama, model):
    result = pull(ollama, model, "--retries", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"pulling {model} failed (permanent error, not retried): "
                                     "pull model manifest: file does not exist")
    assert tries(ollama) == 1


def test_invalid_name_http_400_fails_at_once(ollama):
    result = pull(ollama, "Bad Name!", "--retries", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == "pulling Bad Name! failed (permanent error, not retried): HTTP 400: invalid model name"
    assert tries(ollama) == 1


@pytest.mark.parametrize("model", ["cut-model", "ended-model"])
def test_stream_without_success_is_a_failure_retried_up_to_the_limit(ollama, model):
    # cut: the connection dropped mid-stream (http.client reads that as the end); ended: a clean end.
    result = pull(ollama, model, "--retries", "1")
    assert result.returncode == 1
    assert f"pulling {model} failed after 2 tries: the stream ended before success" in result.stderr
    assert "success" not in result.stdout
    assert tries(ollama) == 2 and models(ollama) == []


@pytest.mark.parametrize("model", ["flaky-small", "busy-small"])
def test_passing_failure_is_retried_and_then_succeeds(ollama, model):
    result = pull(ollama, model, "--retries", "1")
    assert result.returncode == 0, result.stderr
    cause = "HTTP 503: server busy" if model == "busy-small" else "max retries exceeded"
    assert f"pulling {model}: {cause}" in result.stderr and "trying again" in result.stderr
    assert tries(ollama) == 2 and models(ollama) == [f"{model}:latest"]


def test_passing_failure_without_retries_fails(ollama):
    result = pull(ollama, "flaky-small", "--retries", "0")
    assert result.returncode == 1
    assert "pulling flaky-small failed after 1 tries: max retries exceeded" in result.stderr
    assert tries(ollama) == 1


@pytest.mark.parametrize("model", ["stall-model", "hang-model"])
def test_no_progress_gives_the_try_up_after_the_idle_timeout(ollama, model):
    # stall: the same progress line again and again (Ollama while a download stalls); hang: silence.
    result = pull(ollama, model, "--idle-timeout", "1", "--retries", "1")
    assert result.returncode == 1
    assert f"pulling {model} failed after 2 tries: no progress for 1 s (ollama.pull_idle_timeout)" in result.stderr
    assert tries(ollama, at_least=2) == 2


def test_the_deadline_bounds_every_try_together(ollama):
    # The first try would wait 30 s for progress; the deadline stops it, and no retry follows.
    result = pull(ollama, "hang-model", "--idle-timeout", "30", "--deadline", "2", "--retries", "5")
    assert result.returncode == 1
    assert result.stderr.strip() == "pulling hang-model failed: not pulled within 2 s (ollama.pull_deadline)"
    assert tries(ollama) == 1


def test_no_ollama_is_a_passing_failure(tmp_path):
    from tests.integration.test_standin import free_port

    result = subprocess.run([sys.executable, str(HELPER), "--retries", "1", f"127.0.0.1:{free_port()}", "llama3.2:1b"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pulling llama3.2:1b failed after 2 tries: cannot reach Ollama at 127.0.0.1:" in result.stderr


def test_if_missing_leaves_a_present_model_and_pulls_a_missing_one(ollama):
    assert pull(ollama, "llama3.2:1b").returncode == 0
    result = pull(ollama, "library/llama3.2:1b", "--if-missing")
    assert (result.returncode, result.stdout) == (0, "library/llama3.2:1b: already present\n"), result.stderr
    assert tries(ollama) == 1
    result = pull(ollama, "qwen2.5:0.5b", "--if-missing")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "qwen2.5:0.5b: success"
    assert tries(ollama, at_least=2) == 2 and sorted(models(ollama)) == ["llama3.2:1b", "qwen2.5:0.5b"]
