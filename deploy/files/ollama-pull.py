#!/usr/bin/env python3
"""Pull one model through Ollama's API, printing progress; exit 1 naming the model on an error line.

Usage: ollama-pull.py ADDRESS MODEL     (e.g. ollama-pull.py 127.0.0.1:11434 llama3.2:1b)
Installed by ollastack; uses only the standard library.
"""
import json
import sys
import urllib.request


def main(address: str, model: str) -> int:
    request = urllib.request.Request(f"http://{address}/api/pull", method="POST",
                                     data=json.dumps({"model": model, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    last = None
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    print(f"pulling {model} failed: {event['error']}", file=sys.stderr)
                    return 1
                status = event.get("status", "")
                if event.get("total"):
                    percent = 100 * event.get("completed", 0) // event["total"]
                    status = f"{status} {percent}%"
                if status != last:
                    print(f"{model}: {status}", flush=True)
                    last = status
    except OSError as exc:
        print(f"pulling {model} failed: cannot reach Ollama at {address}: {exc}", file=sys.stderr)
        return 1
    if last != "success":
        print(f"pulling {model} failed: the stream ended before success", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
