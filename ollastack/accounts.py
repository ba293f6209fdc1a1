"""The stack's groups, users, model access and default models, reconciled through Open WebUI's admin API.

``up`` calls ``reconcile`` for each host once it is ready (``ready.check``), from the control machine
through nginx over verified HTTPS, signed in as the stack's admin. What the stack lists is made so:
groups (description, permissions, default models) and their members among the stack's users, the
users' role and name, read grants of the stack's groups on models, everyone's default permissions and
default models, signup (``openwebui.enable_signup``). Everything is read first and compared: only what
differs is written, and each write is one line of the report (a second run reports nothing).
Accounts, groups and grants the stack does not list are left alone (``unlisted`` names the accounts).

Open WebUI shows a model to a non-admin only when the model has an entry with a grant for one of the
user's groups (``get_filtered_models``), so a base model from Ollama gets a grant-only entry
(``POST /api/v1/models/model/access/update`` creates it). A group's permissions are stored whole,
the granted ones on and every other off: Open WebUI OR's them with everyone's, so off means "not
granted by this group", as the admin panel shows it.

Example::

    lines = reconcile(stack, target, admin_password)   # ["group staff: created", "user alice: created as user", ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ollastack import ready
from ollastack.config import AccountsSection, Stack
from ollastack.ollama_names import tagged
from ollastack.state import user_password_file
from ollastack.webui_api import ApiError, Session, signin
from ollastack.webui_permissions import DEFAULTS, ENV

API_KEYS = "features.api_keys"


class AccountsError(Exception):
    """A request of the reconcile failed, or an account may not do what was asked."""


@dataclass(frozen=True)
class Change:
    """One write: ``line`` says what changes (never a secret), the rest is the request."""

    line: str
    method: str
    path: str
    body: dict = field(repr=False)


@dataclass
class Current:
    """What Open WebUI holds: groups, users (with ``group_ids``), model entries (with ``access_grants``), config."""

    groups: list[dict]
    users: list[dict]
    models: list[dict]
    config: dict

    def group(self, name: str) -> dict | None:
        return next((g for g in self.groups if g["name"] == name), None)

    def user(self, email: str) -> dict | None:
        return next((u for u in self.users if u["email"].lower() == email), None)


def read(session: Session) -> Current:
    """Everything the reconcile compares, in four kinds of request (users page by page)."""
    users: list[dict] = []
    page = 1
    while True:
        answer = session.get(f"/api/v1/users/?page={page}")
        users += answer["users"]
        if not answer["users"] or len(users) >= answer["total"]:
            break
        page += 1
    return Current(session.get("/api/v1/groups/"), users, session.get("/api/v1/models/all"),
                   session.get("/api/v1/configs/export"))


def granted(names: list[str]) -> dict[str, dict[str, bool]]:
    """A group's permissions: ``names`` (section.name) on, every other permission off.

    Example: ``granted(["features.api_keys"])["features"] == {"api_keys": True, "notes": False, ...}``
    """
    return {section: {name: f"{section}.{name}" in names for name in names_} for section, names_ in DEFAULTS.items()}


def everyone(overrides: dict[str, dict[str, bool]]) -> dict[str, dict[str, bool]]:
    """Everyone's permissions: Open WebUI's defaults with ``overrides`` (``accounts.permissions``) over them."""
    return {section: {**names, **overrides.get(section, {})} for section, names in DEFAULTS.items()}


def _filled(permissions: dict | None) -> dict[str, dict[str, bool]]:
    """Stored permissions as Open WebUI reads them (missing ones at their defaults), on the known names."""
    permissions = permissions or {}
    return {section: {name: bool((permissions.get(section) or {}).get(name, default)) for name, default in names.items()}
            for section, names in DEFAULTS.items()}


def _default_models(group: dict) -> list[str]:
    return ((group.get("data") or {}).get("config") or {}).get("default_models") or []


def api_key_refusal(stack: Stack, user: str | None) -> str | None:
    """Why the stack does not let account ``user`` (None: the admin) hold an API key, or None when it does:
    an admin may; anyone else needs ``features.api_keys`` from everyone's permissions or one of its groups."""
    accounts = stack.accounts
    if user is None:
        return None if api_keys_on(accounts) else (
            "API keys are off for this stack: set accounts.api_keys = true and run `ollastack up`")
    if user not in accounts.users:
        return f"{user!r} is not in accounts.users of the stack"
    settings = accounts.users[user]
    if (settings.role == "admin" or accounts.permissions.get("features", {}).get("api_keys", False)
            or any(API_KEYS in accounts.groups[g].permissions for g in settings.groups)):
        return None
    return (f"{user} may not hold an API key: add \"{API_KEYS}\" to the permissions of one of its groups "
            "(accounts.groups.NAME.permissions) or set accounts.permissions.features.api_keys = true, "
            "then run `ollastack up`")


def api_keys_on(accounts: AccountsSection) -> bool:
    """ENABLE_API_KEYS by the stack: ``accounts.api_keys``, or ``features.api_keys`` granted to anyone."""
    return accounts.api_keys or bool(accounts.permissions.get("features", {}).get("api_keys")) or any(
        API_KEYS in g.permissions for g in accounts.groups.values())


def environment(accounts: AccountsSection) -> dict[str, str]:
    """What Open WebUI reads from its environment of ``accounts``: DEFAULT_MODELS, everyone's permissions
    (``USER_PERMISSIONS_*``) and ENABLE_API_KEYS, only those the stack sets.

    The deploy puts them in the unit: with ENABLE_PERSISTENT_CONFIG=false a setting changed through the
    API lasts only until the next restart, the environment is what Open WebUI comes back to.
    Example: ``environment(stack.accounts) == {"DEFAULT_MODELS": "tinyllama:latest", "ENABLE_API_KEYS": "true"}``
    """
    env = {ENV[f"{section}.{name}"]: "true" if value else "false"
           for section, names in accounts.permissions.items() for name, value in names.items()}
    if accounts.default_models:
        env["DEFAULT_MODELS"] = ",".join(tagged(m) for m in accounts.default_models)
    if api_keys_on(accounts):
        env["ENABLE_API_KEYS"] = "true"
    return env


def plan_groups(stack: Stack, current: Current) -> list[Change]:
    """Create the stack's missing groups; update description, permissions and default models that differ."""
    changes = []
    for name, group in stack.accounts.groups.items():
        permissions, defaults = granted(group.permissions), [tagged(m) for m in group.default_models]
        body = {"name": name, "description": group.description, "permissions": permissions,
                "data": {"config": {"default_models": defaults}}}
        found = current.group(name)
        if found is None:
            changes.append(Change(f"group {name}: created", "POST", "/api/v1/groups/create", body))
            continue
        differs = [what for what, same in (
            ("description", found.get("description", "") == group.description),
            ("permissions", _filled(found.get("permissions")) == permissions),
            ("default models", _default_models(found) == defaults)) if not same]
        if differs:
            changes.append(Change(f"group {name}: {', '.join(differs)} updated", "POST",
                                  f"/api/v1/groups/id/{found['id']}/update", body))
    return changes


def plan_users(stack: Stack, current: Current, password: Callable[[str], str]) -> list[Change]:
    """Create the stack's missing accounts (``password(user)`` gives the new one's); reconcile role and name."""
    changes = []
    for key, user in stack.accounts.users.items():
        name = user.name or key
        found = current.user(user.email)
        if found is None:
            changes.append(Change(f"user {key} ({user.email}): created as {user.role}", "POST", "/api/v1/auths/add",
                                  {"name": name, "email": user.email, "password": password(key), "role": user.role}))
            continue
        updates = {k: v for k, v in (("role", user.role), ("name", name)) if found.get(k) != v}
        if updates:
            said = ", ".join(f"{k} {found.get(k)} -> {v}" for k, v in updates.items())
            changes.append(Change(f"user {key}: {said}", "POST", f"/api/v1/users/{found['id']}/update", updates))
    return changes


def plan_members(stack: Stack, current: Current) -> list[Change]:
    """Each stack group's members among the stack's users: exactly those listing it. Other accounts stay."""
    ids = {key: found["id"] for key, user in stack.accounts.users.items() if (found := current.user(user.email))}
    keys = {uid: key for key, uid in ids.items()}
    changes = []
    for name in stack.accounts.groups:
        group = current.group(name)
        if group is None:
            continue
        wanted = {ids[key] for key, user in stack.accounts.users.items() if name in user.groups and key in ids}
        members = {u["id"] for u in current.users if group["id"] in (u.get("group_ids") or [])}
        for verb, user_ids in (("add", wanted - members), ("remove", (members & set(keys)) - wanted)):
            if user_ids:
                shown = ", ".join(sorted(keys[u] for u in user_ids))
                changes.append(Change(f"group {name}: {shown} {'added' if verb == 'add' else 'removed'}", "POST",
                                      f"/api/v1/groups/id/{group['id']}/users/{verb}", {"user_ids": sorted(user_ids)}))
    return changes


def plan_grants(stack: Stack, current: Current) -> list[Change]:
    """Read grants of the stack's groups on models: exactly the models each group lists. Grants to
    anyone else (other groups, users, the public) are kept as they are."""
    group_ids = {g["id"]: name for name in stack.accounts.groups if (g := current.group(name))}
    wanted: dict[str, set[str]] = {}
    for name, group in stack.accounts.groups.items():
        if (found := current.group(name)) is not None:
            for model in group.models:
                wanted.setdefault(tagged(model), set()).add(found["id"])

    def ours(grant: dict) -> bool:
        return grant["principal_type"] == "group" and grant["principal_id"] in group_ids and grant["permission"] == "read"

    entries = {m["id"]: m for m in current.models}
    touched = set(wanted) | {m["id"] for m in current.models if any(ours(g) for g in m.get("access_grants") or [])}
    changes = []
    for model_id in sorted(touched):
        existing = entries.get(model_id, {}).get("access_grants") or []
        grants = [{k: g[k] for k in ("id", "principal_type", "principal_id", "permission")}
                  for g in existing if not ours(g)]
        grants += [{"principal_type": "group", "principal_id": gid, "permission": "read"}
                   for gid in sorted(wanted.get(model_id, set()))]
        if {(g["principal_type"], g["principal_id"], g["permission"]) for g in existing} != \
                {(g["principal_type"], g["principal_id"], g["permission"]) for g in grants}:
            users = ", ".join(sorted(group_ids[g] for g in wanted.get(model_id, set()))) or "no stack group"
            changes.append(Change(f"model {model_id}: used by {users}", "POST", "/api/v1/models/model/access/update",
                                  {"id": model_id, "name": entries.get(model_id, {}).get("name") or model_id,
                                   "access_grants": grants}))
    return changes


def plan_config(stack: Stack, current: Current) -> list[Change]:
    """Signup, default models, everyone's permissions and ENABLE_API_KEYS as the running Open WebUI has
    them, in one import of what differs (they start from the unit's environment, ``environment``; this
    undoes a change made in the admin panel since)."""
    accounts = stack.accounts
    wanted: dict[str, Any] = {"ui.enable_signup": stack.openwebui.enable_signup}
    if accounts.default_models:
        wanted["ui.default_models"] = ",".join(tagged(m) for m in accounts.default_models)
    if accounts.permissions:
        wanted["user.permissions"] = everyone(accounts.permissions)
    if accounts.managed:
        wanted["auth.enable_api_keys"] = api_keys_on(accounts)
    have = dict(current.config, **{"user.permissions": _filled(current.config.get("user.permissions"))})
    changed = {key: value for key, value in wanted.items() if have.get(key) != value}
    if not changed:
        return []
    return [Change(f"settings: {', '.join(sorted(changed))} updated", "POST", "/api/v1/configs/import",
                   {"config": changed})]


def apply(session: Session, changes: list[Change]) -> None:
    for change in changes:
        try:
            session.post(change.path, change.body)
        except ApiError as exc:
            raise AccountsError(f"{change.line} failed: {exc}") from None


def _admin(stack: Stack, target: ready.Target, admin_password: str) -> Session:
    try:
        return signin(target, stack.openwebui.admin_email, admin_password)
    except ApiError as exc:
        raise AccountsError(f"the admin {stack.openwebui.admin_email} cannot sign in: {exc}") from None


def reconcile(stack: Stack, target: ready.Target, admin_password: str) -> list[str]:
    """Make one host's Open WebUI hold what ``stack.accounts`` lists; the lines of what changed."""
    session = _admin(stack, target, admin_password)
    try:
        current = read(session)
        # Groups and accounts first: memberships and grants name them by the ids Open WebUI gives them.
        first = plan_groups(stack, current) + plan_users(
            stack, current, lambda user: user_password_file(stack.stack.name, user).read_text().strip())
        apply(session, first)
        if first:
            current = read(session)
        second = plan_members(stack, current) + plan_grants(stack, current) + plan_config(stack, current)
        apply(session, second)
    except ApiError as exc:
        raise AccountsError(str(exc)) from None
    return [change.line for change in first + second]


def unlisted(stack: Stack, target: ready.Target, admin_password: str) -> list[str]:
    """The accounts on the host that the stack does not list (the admin aside): ``["eve@example.org (user)"]``."""
    session = _admin(stack, target, admin_password)
    listed = {u.email for u in stack.accounts.users.values()} | {stack.openwebui.admin_email}
    try:
        users = read(session).users
    except ApiError as exc:
        raise AccountsError(str(exc)) from None
    return [f"{u['email']} ({u['role']})" for u in users if u["email"].lower() not in listed]


def api_key(stack: Stack, target: ready.Target, admin_password: str, user: str | None = None) -> str:
    """The API key of the admin (``user`` None) or of account ``user``, created when it has none.

    The stack turns API keys on (``api_keys_on``) and grants ``features.api_keys``: what were switched
    on here alone would be gone at the next restart or converge. So this refuses (``api_key_refusal``)
    what the stack does not allow, and asks for ``up`` when the host does not have it yet.
    """
    if refusal := api_key_refusal(stack, user):
        raise AccountsError(refusal)
    admin = _admin(stack, target, admin_password)
    try:
        if not admin.get("/api/v1/configs/export").get("auth.enable_api_keys"):
            raise AccountsError("API keys are not on in this Open WebUI yet: run `ollastack up`")
        if user is None:
            session = admin
        else:
            email = stack.accounts.users[user].email
            session = signin(target, email, user_password_file(stack.stack.name, user).read_text().strip())
        try:
            return session.get("/api/v1/auths/api_key")["api_key"]
        except ApiError as exc:
            if exc.status != 404:
                raise
            return session.post("/api/v1/auths/api_key", {})["api_key"]
    except ApiError as exc:
        hint = " (run `ollastack up` first: the account or its permission is not there yet)" if exc.status in (400, 403) else ""
        raise AccountsError(f"{exc}{hint}") from None
