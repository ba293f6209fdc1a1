#!/usr/bin/env python3
"""Load a model and check that Ollama put it in GPU memory: ``nvidia-vram-check.py 127.0.0.1:11434 llama3.2:1b``.

Exit 0 when ``/api/ps`` reports ``size_vram > 0`` for the model; exit 1 with one line saying why otherwise.
Installed by ollastack's Ollama component on hosts with an NVIDIA GPU.
"""

import json
import sys
import urllib.request


def call(address: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{address}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read() or b"{}")


def main(address: str, model: str) -> int:
    # An empty prompt only loads the model, as a first request would.
    call(address, "/api/generate", {"model": model, "prompt": "", "stream": False})
    loaded = [m for m in call(address, "/api/ps").get("models", []) if m.get("name") == model]
    if not loaded:
        print(f"{model} is not listed in /api/ps after loading it; check `journalctl -u ollama`", file=sys.stderr)
        return 1
    size, vram = loaded[0].get("size", 0), loaded[0].get("size_vram", 0)
    if vram <= 0:
        print(f"Ollama runs {model} on the CPU (size_vram 0 in /api/ps) although an NVIDIA GPU is present: it found "
              "no usable GPU when it started (driver not loaded, nvidia_uvm missing, or driver too old); check "
              "`nvidia-smi` and `journalctl -u ollama | grep -iE 'cuda|gpu'`, then `systemctl restart ollama`",
              file=sys.stderr)
        return 1
    print(f"{model}: {vram} of {size} bytes in GPU memory")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
