"""Single sign-on: the stack's ``[sso]`` as Open WebUI's OIDC environment, and its client secret.

Open WebUI runs with ``ENABLE_PERSISTENT_CONFIG=false``, so what the stack sets is in the unit's
environment: the settings below in the drop-in, the client secret alone in a 0600 root-owned
environment file. The secret is read on the control machine when the deploy runs, from
``sso.client_secret_file`` (0600) or the variable ``sso.client_secret_env``; host data carries only
that path or name.

Example::

    environment(stack.sso, "https://chat.example.org")["OPENID_REDIRECT_URI"]
    # "https://chat.example.org/oauth/oidc/login/callback"
"""

from __future__ import annotations

import os
from pathlib import Path

from ollastack.config import SsoSection, control_characters

# Open WebUI's callback route for its generic OIDC provider (main.py: /oauth/{provider}/login/callback).
CALLBACK = "/oauth/oidc/login/callback"


class SsoError(Exception):
    """The client secret cannot be read, or is not fit for an environment file."""


def flag(value: bool) -> str:
    return "true" if value else "false"


def environment(sso: SsoSection, webui_url: str) -> dict[str, str]:
    """Open WebUI's OIDC settings from ``sso`` (none when single sign-on is off); never the secret.

    The redirect URI is the host's first name: the one the provider must list for this client.
    """
    if not sso.enabled:
        return {}
    env = {
        "ENABLE_OAUTH_SIGNUP": flag(sso.signup),
        "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": flag(sso.merge_accounts_by_email),
        "OPENID_PROVIDER_URL": sso.provider_url,
        "OPENID_REDIRECT_URI": webui_url + CALLBACK,
        "OAUTH_CLIENT_ID": sso.client_id,
        "OAUTH_PROVIDER_NAME": sso.provider_name,
        "OAUTH_SCOPES": " ".join(sso.scopes),
        "OAUTH_ALLOWED_DOMAINS": ",".join(sso.allowed_domains) or "*",
        "ENABLE_OAUTH_ROLE_MANAGEMENT": flag(bool(sso.role_claim)),
        "ENABLE_OAUTH_GROUP_MANAGEMENT": flag(bool(sso.group_claim)),
        "ENABLE_OAUTH_GROUP_CREATION": flag(sso.create_groups),
    }
    if sso.role_claim:
        env.update(OAUTH_ROLES_CLAIM=sso.role_claim, OAUTH_ALLOWED_ROLES=",".join(sso.allowed_roles),
                   OAUTH_ADMIN_ROLES=",".join(sso.admin_roles))
    if sso.group_claim:
        env["OAUTH_GROUPS_CLAIM"] = sso.group_claim
    return env


def client_secret(sso: SsoSection) -> str:
    """The client secret from its 0600 file or its environment variable, checked whole (one printable line)."""
    if sso.client_secret_file:
        path = Path(sso.client_secret_file).expanduser()
        if path.stat().st_mode & 0o077:
            raise SsoError(f"{path} is readable by others: chmod 600 it (it holds the client secret)")
        secret = path.read_text().strip()
        source = str(path)
    else:
        secret = os.environ.get(sso.client_secret_env, "").strip()
        source = f"${sso.client_secret_env}"
    if not secret:
        raise SsoError(f"no client secret in {source} (sso.client_secret_file / sso.client_secret_env)")
    if control_characters(secret):
        raise SsoError(f"the client secret in {source} holds control characters (one line expected)")
    return secret
