"""The stack's host settings as pyinfra host data: every key ``ollastack_<section>_<field>``.

The prefix keeps them apart from another pyinfra project's data when its deploy calls ollastack's
components; pyinfra's own keys (``ssh_user``, ``ssh_key``, ``_sudo`` ...) are set by the inventory
builder as they are.

Example::

    from ollastack.hostdata import host_data, key
    host_data(stack)[key("ollama.host")] == "127.0.0.1:11434"   # key: "ollastack_ollama_host"
"""

from __future__ import annotations

from typing import Any

from ollastack.config import SECRETS, Stack, iter_settings
from ollastack.state import admin_password_file

PREFIX = "ollastack_"
# Sections whose settings travel to the hosts.
HOST_SECTIONS = ("stack", "access", "ollama", "openwebui", "tls", "gpu", "presets", "accounts", "backup", "fleet", "sso")
# Set per host by the inventory builder, not by the stack description; the secret travels as the path
# of its 0600 file on the control machine.
EXTRA = {"name": "", "tls_names": [], "openwebui_admin_password_file": "",
         # A fleet host's role (gateway, backend; "" alone), the backends' Ollama addresses (on the gateway),
         # the gateway's address (on a backend): ``ollastack.fleet.host_settings``.
         "fleet_role": "", "fleet_upstreams": [], "fleet_gateway": "",
         # A placement's groups of backends (their Ollama addresses) on the gateway; [] is one group of all.
         "fleet_groups": []}


def key(setting: str) -> str:
    """The host-data key of a dotted setting or an ``EXTRA`` name: ``key("tls.mode") == "ollastack_tls_mode"``."""
    return PREFIX + setting.replace(".", "_")


def defaults() -> dict[str, Any]:
    """Every host-data key with its default (the deploys' ``data_defaults``).

    A deploy run with a plain inventory (``inventories/hosts.example.py``) gets the same defaults
    as one run by ``ollastack up``.
    """
    data = {key(name): default for name, default, _ in iter_settings()
            if name.split(".", 1)[0] in HOST_SECTIONS and name not in SECRETS}
    data.update({key(name): value for name, value in EXTRA.items()})
    return data


def host_data(stack: Stack) -> dict[str, Any]:
    """The stack's host settings as namespaced host-data keys; secrets stay out.

    Writes the admin password file when Open WebUI is installed (its path travels instead).
    """
    data: dict[str, Any] = {}
    for section in HOST_SECTIONS:
        for name, value in getattr(stack, section).model_dump().items():
            if f"{section}.{name}" not in SECRETS:
                data[key(f"{section}.{name}")] = value
    if stack.openwebui.install != "none":
        configured = stack.openwebui.admin_password.get_secret_value()
        data[key("openwebui_admin_password_file")] = str(admin_password_file(stack.stack.name, configured))
    return data
