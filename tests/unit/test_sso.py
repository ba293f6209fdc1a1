"""The ``[sso]`` settings, their Open WebUI environment and where the client secret goes (``ollastack.sso``).

The secret is read on the control machine from a 0600 file or an environment variable and reaches
the host only in ``/etc/open-webui/oidc.env`` (0600, root): never host data, the unit, the drop-in,
a command or output. The deploy runs on pyinfra's fake connector here; the lab test
(tests/lab/test_lab_accounts.py) signs in through a real provider against the real Open WebUI.
"""

from __future__ import annotations

import json
import pytest
from pyinfra import host
from pyinfra.api.exceptions import DeployError

from ollastack import sso
from ollastack.config import ConfigError, parse_stack
from ollastack.deploy import openwebui
from ollastack.hostdata import defaults, host_data
from tests.unit.test_accounts import keys  # noqa: F401 (fixture: the stack's key pair)
from tests.unit.test_gpu_fake import LINUX, converge
from tests.unit.test_ollama_env import uploads  # noqa: F401 (fixture: what the deploy uploads)

URL = "https://id.example.org/realms/staff/.well-known/openid-configuration"
SECRET_CORE = "s3cret-Value_with.odd"
SECRET = SECRET_CORE + "%chars$and\"quotes'"


@pytest.fixture()
def secret_file(tmp_path):
    path = tmp_path / "oidc-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def stack_with(keys, **section):
    return parse_stack({"stack": {"name": "ssotest", "provider": "static"}, "static": {"hosts": ["192.0.2.10"]},
                        "access": keys, "sso": section})


def full(secret_file) -> dict:
    return {"provider_url": URL, "client_id": "open-webui", "client_secret_file": str(secret_file),
            "allowed_domains": ["example.org", "staff.example.org"], "role_claim": "realm_access.roles",
            "allowed_roles": ["chat-user"], "admin_roles": ["chat-admin"], "group_claim": "teams"}


def problems(keys, **section) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        stack_with(keys, **section)
    return caught.value.problems


def test_environment_is_open_webuis_oauth_settings_and_never_the_secret(keys, secret_file):
    env = sso.environment(stack_with(keys, **full(secret_file)).sso, "https://chat.example.org")
    assert env == {
        "ENABLE_OAUTH_SIGNUP": "true", "OAUTH_MERGE_ACCOUNTS_BY_EMAIL": "false", "OPENID_PROVIDER_URL": URL,
        "OPENID_REDIRECT_URI": "https://chat.example.org/oauth/oidc/login/callback", "OAUTH_CLIENT_ID": "open-webui",
        "OAUTH_PROVIDER_NAME": "SSO", "OAUTH_SCOPES": "openid email profile",
        "OAUTH_ALLOWED_DOMAINS": "example.org,staff.example.org", "ENABLE_OAUTH_ROLE_MANAGEMENT": "true",
        "ENABLE_OAUTH_GROUP_MANAGEMENT": "true", "ENABLE_OAUTH_GROUP_CREATION": "false",
        "OAUTH_ROLES_CLAIM": "realm_access.roles", "OAUTH_ALLOWED_ROLES": "chat-user", "OAUTH_ADMIN_ROLES": "chat-admin",
        "OAUTH_GROUPS_CLAIM": "teams"}
    minimal = sso.environment(stack_with(keys, provider_url=URL, client_id="c", client_secret_env="IDP_SECRET").sso, "https://h")
    assert minimal["OAUTH_ALLOWED_DOMAINS"] == "*" and minimal["ENABLE_OAUTH_ROLE_MANAGEMENT"] == "false"
    assert not {"OAUTH_ROLES_CLAIM", "OAUTH_GROUPS_CLAIM"} & set(minimal)
    assert sso.environment(stack_with(keys).sso, "https://h") == {}


@pytest.mark.parametrize("section,expected", [
    ({"provider_url": "https://id.example.org/realms/staff"}, "sso.provider_url"),
    ({"provider_url": "ftp://id.example.org/.well-known/openid-configuration"}, "sso.provider_url"),
    ({"provider_url": "https://id.example.org/$(reboot)/.well-known/openid-configuration"}, "sso.provider_url"),
    ({"provider_url": "https://u:p@id.example.org/.well-known/openid-configuration"}, "sso.provider_url"),
    ({"client_id": "web ui"}, "sso.client_id"),
    ({"client_id": "x\ny"}, "sso.client_id"),
    ({"client_secret_env": "lower; rm -rf /"}, "sso.client_secret_env"),
    ({"allowed_domains": ["example.org,evil.org"]}, "sso.allowed_domains"),
    ({"allowed_domains": ["*"]}, "sso.allowed_domains"),
    ({"role_claim": "roles; x"}, "sso.role_claim"),
    ({"group_claim": "groups\""}, "sso.group_claim"),
    ({"admin_roles": ["admin,user"]}, "sso.admin_roles"),
    ({"allowed_roles": ["a b"]}, "sso.allowed_roles"),
    ({"scopes": ["email"]}, "sso.scopes"),
    ({"provider_name": "SSO`id`"}, "sso.provider_name"),
])
def test_every_value_is_validated_whole(keys, secret_file, section, expected):
    found = problems(keys, **{**full(secret_file), **section})
    assert any(p.startswith(expected) for p in found), found


def test_incomplete_settings_and_two_secrets_are_refused(keys, secret_file):
    assert any("client_id" in p for p in problems(keys, provider_url=URL, client_secret_env="IDP_SECRET"))
    assert not stack_with(keys, client_id="c", client_secret_env="IDP_SECRET").sso.enabled
    assert any("once" in p for p in problems(keys, provider_url=URL, client_id="c"))
    assert any("once" in p for p in problems(keys, **full(secret_file), client_secret_env="IDP_SECRET"))


def test_a_secret_file_readable_by_others_is_refused_and_never_echoed(keys, secret_file):
    secret_file.chmod(0o640)
    found = problems(keys, **full(secret_file))
    assert any("chmod 600" in p for p in found) and not any(SECRET in p for p in found)
    assert any("not found" in p for p in problems(keys, **{**full(secret_file), "client_secret_file": "/nonexistent/x"}))


def test_client_secret_from_file_or_environment(keys, secret_file, monkeypatch):
    assert sso.client_secret(stack_with(keys, **full(secret_file)).sso) == SECRET
    section = stack_with(keys, provider_url=URL, client_id="c", client_secret_env="IDP_SECRET").sso
    with pytest.raises(sso.SsoError, match=r"\$IDP_SECRET"):
        sso.client_secret(section)
    monkeypatch.setenv("IDP_SECRET", "from-env")
    assert sso.client_secret(section) == "from-env"
    monkeypatch.setenv("IDP_SECRET", "two\nlines")
    with pytest.raises(sso.SsoError, match="control characters"):
        sso.client_secret(section)


def test_host_data_carries_the_path_not_the_secret(keys, secret_file, tmp_path, monkeypatch):
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    data = host_data(stack_with(keys, **full(secret_file)))
    assert data["ollastack_sso_client_secret_file"] == str(secret_file)
    assert SECRET not in json.dumps(data) and set(data) <= set(defaults())


def settings_and_unit():
    openwebui.secrets(host.data)
    openwebui.unit(host.data, quadlet=False)


def deploy_data(stack) -> dict:
    return {**defaults(), **host_data(stack), "ollastack_openwebui_install": "pip"}


def test_the_secret_reaches_the_host_only_in_its_0600_environment_file(keys, secret_file, tmp_path, monkeypatch,
                                                                       uploads):  # noqa: F811
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["chat.example.org"])
    changed, commands = converge(LINUX, deploy=settings_and_unit, **deploy_data(stack_with(keys, **full(secret_file))))
    assert uploads[openwebui.OIDC_ENV] == "OAUTH_CLIENT_SECRET=\"s3cret-Value_with.odd%chars$and\\\"quotes'\"\n"
    assert "OIDC client secret (0600)" in changed
    # Created with its owner and mode before its content is written.
    assert any("install -m 600 -o root -g root -- /dev/null /etc/open-webui/oidc.env" in c for c in commands), commands
    assert f"EnvironmentFile={openwebui.OIDC_ENV}" in uploads[openwebui.UNIT]
    assert 'OPENID_PROVIDER_URL=' in uploads[openwebui.DROP_IN] and "OAUTH_GROUPS_CLAIM=teams" in uploads[openwebui.DROP_IN]
    # Looked for by a plain part too: quoting for a unit or a shell would change the rest.
    elsewhere = [path for path, text in uploads.items() if path != openwebui.OIDC_ENV
                 and (SECRET in text or SECRET_CORE in text)]
    assert elsewhere == [] and not any(SECRET_CORE in c for c in commands)


def test_without_sso_the_secret_file_is_removed_and_the_unit_does_not_name_it(keys, tmp_path, monkeypatch,
                                                                              uploads):  # noqa: F811
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["chat.example.org"])
    converge(LINUX, deploy=settings_and_unit, **deploy_data(stack_with(keys)))
    assert openwebui.OIDC_ENV not in uploads[openwebui.UNIT] and "OAUTH" not in uploads[openwebui.DROP_IN]


def test_a_missing_environment_secret_stops_the_deploy_before_any_change(keys, tmp_path, monkeypatch,
                                                                          uploads):  # noqa: F811
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["chat.example.org"])
    monkeypatch.delenv("IDP_SECRET", raising=False)
    stack = stack_with(keys, provider_url=URL, client_id="c", client_secret_env="IDP_SECRET")
    with pytest.raises(DeployError, match=r"\$IDP_SECRET"):
        converge(LINUX, deploy=settings_and_unit, **deploy_data(stack))
    assert uploads == {}
