#!/usr/bin/env python3
"""Pull one model through Ollama's API, printing progress; exit 1 naming the model and the cause on failure.

Usage: ollama-pull.py [--idle-timeout S] [--deadline S] [--retries N] [--if-missing] ADDRESS MODEL
       (e.g. ollama-pull.py --idle-timeout 120 --deadline 3600 --retries 2 127.0.0.1:11434 llama3.2:1b)

Only a ``{"status": "success"}`` line is a success. A try is given up after S seconds without
progress (no line, or only lines repeating the same progress, as Ollama sends while a download
stalls). Passing failures (no connection, HTTP 5xx, a stream cut or ended before success, a stall,
a registry timeout) are tried again up to N times within the overall deadline; permanent ones (HTTP
4xx, unknown model, invalid name, no space left) fail at once. With --if-missing, a model Ollama already
has (``/api/show`` answers 200) is left as it is: no registry is asked. Installed by ollastack;
standard library only.
"""
import argparse
import http.client
import json
import re
import sys
import time
import urllib.error
import urllib.request

# Error lines that another try cannot fix (Ollama's wording, e.g. "pull model manifest: file does not exist").
PERMANENT = re.compile(r"file does not exist|not found|manifest unknown|invalid model name|invalid reference|"
                       r"unauthorized|requires a newer version|no space left on device|permission denied", re.I)
RETRY_PAUSE_S = 2.0


class Failure(Exception):
    """One try failed; ``permanent`` says whether another try could help."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class DeadlinePassed(Failure):
    """The overall deadline passed during a try."""

    def __init__(self):
        super().__init__("deadline passed", permanent=True)


def error_line(message: str) -> Failure:
    return Failure(message, permanent=bool(PERMANENT.search(message)))


def pull_once(address: str, model: str, idle_s: float, deadline: float) -> None:
    """One streamed pull; returns on a ``success`` line, raises Failure otherwise."""
    request = urllib.request.Request(f"http://{address}/api/pull", method="POST",
                                     data=json.dumps({"model": model, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    timeout = max(0.1, min(idle_s, deadline - time.monotonic()))
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read() or b"{}").get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise Failure(f"HTTP {exc.code}: {message}", permanent=400 <= exc.code < 500) from None
    except OSError as exc:
        raise Failure(f"cannot reach Ollama at {address}: {exc}") from None
    last, progress, progressed_at = None, None, time.monotonic()
    try:
        with response:
            for line in response:
                now = time.monotonic()
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise Failure(f"not a JSON line from Ollama: {line[:80]!r}") from None
                if "error" in event:
                    raise error_line(str(event["error"]))
                status = event.get("status", "")
                if status == "success":
                    print(f"{model}: success", flush=True)
                    return
                current = (status, event.get("digest"), event.get("completed"))
                if current != progress:
                    progress, progressed_at = current, now
                elif now - progressed_at > idle_s:
                    raise Failure(f"no progress for {idle_s:g} s (ollama.pull_idle_timeout)")
                if now > deadline:
                    raise DeadlinePassed()
                if event.get("total"):
                    status = f"{status} {100 * event.get('completed', 0) // event['total']}%"
                if status != last:
                    print(f"{model}: {status}", flush=True)
                    last = status
    except TimeoutError:
        # A socket timeout shorter than the idle timeout is what was left of the deadline.
        if timeout < idle_s or time.monotonic() >= deadline:
            raise DeadlinePassed() from None
        raise Failure(f"no progress for {idle_s:g} s (ollama.pull_idle_timeout)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Failure(f"the stream was cut: {exc!r}") from None
    raise Failure("the stream ended before success")


def present(address: str, model: str) -> bool:
    """Whether Ollama has ``model`` locally (it resolves the name itself: ``library/x`` is ``x:latest``)."""
    request = urllib.request.Request(f"http://{address}/api/show", method="POST",
                                     data=json.dumps({"model": model}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


def pull(address: str, model: str, idle_s: float, deadline_s: float, retries: int) -> int:
    """Up to ``retries + 1`` tries within ``deadline_s``; 0 on success, 1 (one line on stderr) otherwise."""
    deadline = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            pull_once(address, model, idle_s, deadline)
            return 0
        except DeadlinePassed:
            print(f"pulling {model} failed: not pulled within {deadline_s:g} s (ollama.pull_deadline)", file=sys.stderr)
            return 1
        except Failure as failure:
            if failure.permanent:
                print(f"pulling {model} failed (permanent error, not retried): {failure}", file=sys.stderr)
                return 1
            if attempt > retries or time.monotonic() + RETRY_PAUSE_S >= deadline:
                print(f"pulling {model} failed after {attempt} tries: {failure}", file=sys.stderr)
                return 1
            print(f"pulling {model}: {failure}; trying again", file=sys.stderr, flush=True)
            time.sleep(RETRY_PAUSE_S)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-timeout", type=float, default=120.0, help="seconds without progress per try")
    parser.add_argument("--deadline", type=float, default=3600.0, help="overall seconds for this model")
    parser.add_argument("--retries", type=int, default=2, help="further tries after a passing failure")
    parser.add_argument("--if-missing", action="store_true", help="do nothing when Ollama already has the model")
    parser.add_argument("address")
    parser.add_argument("model")
    args = parser.parse_args(argv)
    if args.if_missing and present(args.address, args.model):
        print(f"{args.model}: already present", flush=True)
        return 0
    return pull(args.address, args.model, args.idle_timeout, args.deadline, args.retries)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
