"""Defaults of every host setting, as pyinfra host data keys (``ollama_host``, ``tls_mode``, ...).

They are derived from the stack description model (``ollastack/config.py``), which documents each
setting once; a deploy run with a plain inventory (``inventories/hosts.example.py``) gets the same
defaults as one run by ``ollastack up``.
"""

from ollastack.config import HOST_SECTIONS, SECRETS, iter_settings

DEFAULTS = {
    name.replace(".", "_"): default
    for name, default, _ in iter_settings()
    if name.split(".", 1)[0] in HOST_SECTIONS and name not in SECRETS
}
# Set by the inventory, not by the stack description (secrets travel as the path of a 0600 file).
DEFAULTS.update({"ollastack_name": "", "tls_names": [], "openwebui_admin_password_file": ""})
