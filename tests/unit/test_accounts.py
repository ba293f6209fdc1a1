"""The ``[accounts]`` settings and the reconcile's diff (``ollastack.accounts``), without a server.

The current state is written in the shapes Open WebUI 0.12.4 answers with (``GET /api/v1/groups/``,
``/api/v1/users/``, ``/api/v1/models/all``, ``/api/v1/configs/export``); the lab test
(tests/lab/test_lab_accounts.py) runs the same reconcile against the real Open WebUI.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from ollastack import accounts
from ollastack.accounts import Current, everyone, granted
from ollastack.config import ConfigError, parse_stack
from ollastack.deploy import openwebui
from ollastack.hostdata import defaults, host_data
from ollastack.webui_permissions import DEFAULTS, NAMES


@pytest.fixture()
def keys(tmp_path):
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("x\n")
    return {"ssh_public_key": str(public), "ssh_private_key": str(private)}


def stack_with(keys, **accounts_section):
    return parse_stack({"access": keys, "accounts": accounts_section})


ACCOUNTS = {
    "default_models": ["tinyllama"],
    "permissions": {"chat": {"controls": False}},
    "groups": {"staff": {"models": ["tinyllama", "qwen2.5:0.5b"], "default_models": ["qwen2.5:0.5b"],
                         "permissions": ["features.api_keys"]},
               "guests": {"models": ["tinyllama:latest"]}},
    "users": {"alice": {"email": "Alice@Example.org", "groups": ["staff"]},
              "bob": {"email": "bob@example.org", "name": "Bob B", "role": "admin", "groups": ["guests"]}},
}


def problems(keys, accounts_section) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        stack_with(keys, **accounts_section)
    return caught.value.problems


# -- settings -------------------------------------------------------------------------------------
def test_accounts_parse_and_emails_are_lowercased(keys):
    stack = stack_with(keys, **ACCOUNTS)
    assert stack.accounts.users["alice"].email == "alice@example.org" and stack.accounts.users["alice"].role == "user"
    assert stack.accounts.managed and not stack_with(keys).accounts.managed


@pytest.mark.parametrize("change,expected", [
    (lambda a: a["groups"].update({"Staff": {}}), "accounts.groups.Staff.[key]"),
    (lambda a: a["users"].update({"-x": {"email": "x@example.org"}}), "accounts.users.-x.[key]"),
    (lambda a: a["groups"]["staff"].update(permissions=["features.api_key"]), "not an Open WebUI permission: 'features.api_key'"),
    (lambda a: a.update(permissions={"chat": {"nope": False}}), "not an Open WebUI permission: 'chat.nope'"),
    (lambda a: a.update(permissions={"chat": {"controls": "maybe"}}), "accounts.permissions.chat.controls"),
    (lambda a: a["groups"]["staff"].update(models=["tinyllama", "tinyllama:latest"]), "listed twice: tinyllama:latest"),
    (lambda a: a.update(default_models=["Bad Model"]), "not a model reference"),
    (lambda a: a["groups"]["guests"].update(models=["x;rm -rf /"]), "not a model reference"),
    (lambda a: a["groups"]["guests"].update(default_models=["qwen2.5:0.5b"]),
     "accounts.groups.guests.default_models: qwen2.5:0.5b not among its models"),
    (lambda a: a["users"]["alice"].update(groups=["staff", "nobody"]), "accounts.users.alice.groups: 'nobody' not in"),
    (lambda a: a["users"]["alice"].update(email="admin@example.com"), "is openwebui.admin_email"),
    (lambda a: a["users"]["bob"].update(email="ALICE@example.org"), "alice@example.org is also accounts.users.alice's"),
    (lambda a: a["users"]["bob"].update(email="bob@example.org\nX-Header: 1"), "control characters"),
    (lambda a: a["users"]["bob"].update(email="bob"), "expected an e-mail address"),
    (lambda a: a["users"]["bob"].update(name="$(touch /tmp/x)"), "expected a display name"),
    (lambda a: a["users"]["bob"].update(role="pending"), "accounts.users.bob.role"),
    (lambda a: a["users"]["bob"].pop("email"), "accounts.users.bob.email"),
    (lambda a: a["groups"]["staff"].update(members=["bob"]), "accounts.groups.staff.members: unknown setting "
                                                             "(allowed here: default_models, description, models, permissions)"),
])
def test_bad_accounts_are_refused_naming_the_setting(keys, change, expected):
    section = copy.deepcopy(ACCOUNTS)
    change(section)
    found = problems(keys, section)
    assert any(expected in p for p in found), found


def test_permission_names_are_open_webuis():
    assert len(NAMES) == 67 and "features.api_keys" in NAMES and "chat.controls" in NAMES
    assert granted(["features.api_keys"])["features"]["api_keys"] and not granted([])["chat"]["controls"]
    assert everyone({"chat": {"controls": False}})["chat"] == {**DEFAULTS["chat"], "controls": False}


# -- the diff -------------------------------------------------------------------------------------
def converged(stack) -> Current:
    """What Open WebUI holds after a reconcile of ``stack`` (as its API answers), plus an account and a group
    the stack does not list."""
    group_ids = {"staff": "g-staff", "guests": "g-guests", "other": "g-other"}
    groups = [{"id": gid, "name": name, "description": "", "user_id": "u-admin",
               "permissions": granted(stack.accounts.groups[name].permissions) if name in stack.accounts.groups else {},
               "data": {"config": {"share": True, "default_models":
                                   ["qwen2.5:0.5b"] if name == "staff" else None}}} for name, gid in group_ids.items()]
    users = [{"id": "u-admin", "email": "admin@example.com", "name": "Admin", "role": "admin", "group_ids": []},
             {"id": "u-alice", "email": "alice@example.org", "name": "alice", "role": "user", "group_ids": ["g-staff"]},
             {"id": "u-bob", "email": "bob@example.org", "name": "Bob B", "role": "admin", "group_ids": ["g-guests"]},
             {"id": "u-eve", "email": "eve@example.org", "name": "Eve", "role": "user", "group_ids": ["g-staff", "g-other"]}]

    def grant(principal: str, permission: str = "read", kind: str = "group") -> dict:
        return {"id": f"a-{principal}-{permission}", "resource_type": "model", "resource_id": "m",
                "principal_type": kind, "principal_id": principal, "permission": permission, "created_at": 1}

    models = [{"id": "tinyllama:latest", "name": "tinyllama:latest", "access_grants": [grant("g-staff"), grant("g-guests")]},
              {"id": "qwen2.5:0.5b", "name": "Qwen", "access_grants": [grant("g-staff"), grant("g-other"),
                                                                      grant("u-eve", "write", "user")]},
              {"id": "llama3.2:1b", "name": "llama3.2:1b", "access_grants": [grant("*", kind="user")]}]
    config = {"ui.enable_signup": False, "ui.default_models": "tinyllama:latest", "auth.enable_api_keys": True,
              "user.permissions": everyone({"chat": {"controls": False}}), "webui.url": "https://x"}
    return Current(groups, users, models, config)


def plan(stack, current) -> list[accounts.Change]:
    return (accounts.plan_groups(stack, current) + accounts.plan_users(stack, current, lambda user: f"pw-{user}")
            + accounts.plan_members(stack, current) + accounts.plan_grants(stack, current)
            + accounts.plan_config(stack, current))


def test_a_converged_host_needs_no_change(keys):
    stack = stack_with(keys, **ACCOUNTS)
    assert plan(stack, converged(stack)) == []


def test_an_empty_open_webui_gets_everything_and_no_line_holds_a_password(keys):
    stack = stack_with(keys, **ACCOUNTS)
    empty = Current([], [{"id": "u-admin", "email": "admin@example.com", "name": "Admin", "role": "admin"}], [],
                    {"ui.enable_signup": True, "ui.default_models": "", "auth.enable_api_keys": False})
    first = accounts.plan_groups(stack, empty) + accounts.plan_users(stack, empty, lambda user: f"pw-{user}")
    assert [c.line for c in first] == ["group staff: created", "group guests: created",
                                       "user alice (alice@example.org): created as user",
                                       "user bob (bob@example.org): created as admin"]
    staff = first[0].body
    assert staff["permissions"]["features"]["api_keys"] and not staff["permissions"]["chat"]["controls"]
    assert staff["data"] == {"config": {"default_models": ["qwen2.5:0.5b"]}}
    assert first[2].body == {"name": "alice", "email": "alice@example.org", "password": "pw-alice", "role": "user"}
    assert not any("pw-" in c.line or "pw-" in repr(c) for c in first)
    (settings,) = accounts.plan_config(stack, empty)
    assert settings.body == {"config": {"ui.enable_signup": False, "ui.default_models": "tinyllama:latest",
                                        "auth.enable_api_keys": True, "user.permissions": everyone({"chat": {"controls": False}})}}


def test_only_what_differs_is_written_and_other_accounts_groups_and_grants_stay(keys):
    stack = stack_with(keys, **ACCOUNTS)
    current = converged(stack)
    current.users[1]["role"] = "admin"                     # alice promoted by hand
    current.users[2]["group_ids"] = ["g-staff"]            # bob moved by hand
    current.groups[0]["permissions"]["chat"]["controls"] = True
    current.models[0]["access_grants"] = current.models[0]["access_grants"][:1]  # guests lost tinyllama
    current.models[2]["access_grants"].append(dict(current.models[1]["access_grants"][0], resource_id="llama3.2:1b"))
    current.config["ui.enable_signup"] = True
    changes = plan(stack, current)
    assert [c.line for c in changes] == [
        "group staff: permissions updated", "user alice: role admin -> user",
        "group staff: bob removed", "group guests: bob added",
        "model llama3.2:1b: used by no stack group", "model tinyllama:latest: used by guests, staff",
        "settings: ui.enable_signup updated"]
    by_line = {c.line: c for c in changes}
    assert by_line["user alice: role admin -> user"].body == {"role": "user"}
    assert by_line["group staff: bob removed"].body == {"user_ids": ["u-bob"]}
    # eve (not in the stack) stays in staff; the public grant on llama3.2:1b stays, staff's goes.
    assert [(g["principal_type"], g["principal_id"]) for g in by_line["model llama3.2:1b: used by no stack group"]
            .body["access_grants"]] == [("user", "*")]
    assert by_line["settings: ui.enable_signup updated"].body == {"config": {"ui.enable_signup": False}}


def test_grants_to_other_groups_and_users_are_kept_when_a_stack_group_drops_a_model(keys):
    section = copy.deepcopy(ACCOUNTS)
    section["groups"]["staff"].update(models=["tinyllama"], default_models=[])
    stack = stack_with(keys, **section)
    current = converged(stack)
    changes = {c.line: c for c in plan(stack, current)}
    assert set(changes) == {"group staff: default models updated", "model qwen2.5:0.5b: used by no stack group"}
    kept = changes["model qwen2.5:0.5b: used by no stack group"].body
    assert kept["name"] == "Qwen" and [(g["principal_id"], g["permission"]) for g in kept["access_grants"]] == [
        ("g-other", "read"), ("u-eve", "write")]
    assert changes["group staff: default models updated"].body["data"] == {"config": {"default_models": []}}


def test_api_keys_follow_the_stack_and_only_granted_accounts_may_hold_one(keys):
    section = copy.deepcopy(ACCOUNTS)
    section["groups"]["staff"]["permissions"] = []
    stack = stack_with(keys, **section)
    (change,) = accounts.plan_config(stack, converged(stack))
    assert change.body == {"config": {"auth.enable_api_keys": False}}
    assert "features.api_keys" in (accounts.api_key_refusal(stack, "alice") or "")
    assert "accounts.api_keys = true" in (accounts.api_key_refusal(stack, None) or "")
    assert accounts.api_key_refusal(stack, "bob") is None    # an admin needs only ENABLE_API_KEYS
    granting = stack_with(keys, **ACCOUNTS)
    assert accounts.api_key_refusal(granting, "alice") is None and accounts.api_key_refusal(granting, None) is None
    assert "not in accounts.users" in (accounts.api_key_refusal(granting, "nobody") or "")
    admin_only = stack_with(keys, **{**section, "api_keys": True})
    assert accounts.api_key_refusal(admin_only, None) is None and accounts.api_key_refusal(admin_only, "alice")


def test_the_unit_environment_seeds_what_a_restart_comes_back_to(keys, tmp_path, monkeypatch):
    """With ENABLE_PERSISTENT_CONFIG=false, default models, everyone's permissions and ENABLE_API_KEYS
    must be in Open WebUI's environment (the deploy's drop-in), not only set through the API."""
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["h1.example.com"])   # no pyinfra host here
    stack = stack_with(keys, **ACCOUNTS)
    env = openwebui.environment(SimpleNamespace(**{**defaults(), **host_data(stack)}))
    assert env["DEFAULT_MODELS"] == "tinyllama:latest" and env["ENABLE_API_KEYS"] == "true"
    assert env["USER_PERMISSIONS_CHAT_CONTROLS"] == "false" and env["ENABLE_PERSISTENT_CONFIG"] == "false"
    plain = openwebui.environment(SimpleNamespace(**{**defaults(), **host_data(stack_with(keys))}))
    assert not {"DEFAULT_MODELS", "ENABLE_API_KEYS"} & set(plain) and not any(k.startswith("USER_PERM") for k in plain)


# -- the commands that print secrets --------------------------------------------------------------
def test_password_prints_a_generated_0600_password_and_api_key_refuses_what_the_stack_does_not_allow(
        keys, tmp_path, monkeypatch, capsys):
    from ollastack import cli

    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "stack.toml"
    path.write_text(f'[access]\nssh_public_key = "{keys["ssh_public_key"]}"\nssh_private_key = "{keys["ssh_private_key"]}"\n'
                    '[accounts.groups.guests]\nmodels = ["tinyllama"]\n'
                    '[accounts.users.bob]\nemail = "bob@example.org"\ngroups = ["guests"]\n')
    assert cli.main(["--config", str(path), "password", "bob"]) == 0
    password = capsys.readouterr().out.strip()
    stored = tmp_path / "state" / "demo.openwebui-user-bob-password"
    assert len(password) >= 20 and stored.read_text().strip() == password and stored.stat().st_mode & 0o777 == 0o600
    assert cli.main(["--config", str(path), "password", "bob"]) == 0 and capsys.readouterr().out.strip() == password
    assert cli.main(["--config", str(path), "password", "nobody"]) == 2
    assert "not in accounts.users" in capsys.readouterr().err
    assert cli.main(["--config", str(path), "api-key", "--user", "bob"]) == 2
    err = capsys.readouterr().err
    assert "features.api_keys" in err and password not in err
    assert cli.main(["--config", str(path), "api-key"]) == 2
    assert "accounts.api_keys = true" in capsys.readouterr().err
