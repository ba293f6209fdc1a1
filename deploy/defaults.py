"""Defaults of every host setting, as pyinfra host data keys (``ollastack_ollama_host``, ...).

They are derived from the stack description model (``ollastack/config.py``), which documents each
setting once, through ``ollastack.hostdata``, which names the keys.
"""

from ollastack.hostdata import defaults

DEFAULTS = defaults()
