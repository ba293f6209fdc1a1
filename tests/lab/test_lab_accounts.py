"""Accounts as code against the real Open WebUI (pip route, Debian 12), through nginx over verified HTTPS.

One host of its own stack (``accountstest``) serves every test: ``ollastack up`` converges it and then
reconciles the stack's ``[accounts]`` (groups ``staff`` and ``guests``, a user in each) through Open
WebUI's admin API. The stand-in Ollama offers two models and the built-in preset ``factual`` (made
from tinyllama, see [presets]); staff may use tinyllama and the preset, guests tinyllama, and
llama3.2:1b is granted to nobody. Tests run in file order: the later ones change the stack (a user moves
between groups) after the earlier ones looked at it.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import secrets
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ollastack import lab
from ollastack.config import LabSection
from ollastack.presets import BUILTINS
from tests.lab.test_lab_presets import CHAT_LOG
from tests.lab.test_lab_openwebui import reachable_ports, request, signin
from tests.support.labkit import LabStack, lab_stack_fixture, port_open, ssh
from tests.support.oidc_provider import Client, serve_provider

pytestmark = pytest.mark.lab

ADMIN = "owner@example.org"
MODELS = ["llama3.2:1b", "tinyllama"]
STAFF_MODELS, GUEST_MODELS = {"tinyllama:latest", "factual:latest"}, {"tinyllama:latest"}


def accounts_toml(bob_groups: str = '["guests"]') -> str:
    return f"""[presets]
use = ["factual"]
base = "tinyllama"

[accounts]
default_models = ["tinyllama"]

[accounts.groups.staff]
description = "Staff"
models = ["tinyllama", "factual:latest"]
default_models = ["factual:latest"]
permissions = ["features.api_keys", "workspace.models"]

[accounts.groups.guests]
models = ["tinyllama"]

[accounts.users.alice]
email = "alice@example.org"
name = "Alice Staff"
groups = ["staff"]

[accounts.users.bob]
email = "bob@example.org"
groups = {bob_groups}
"""


class AccountsStack(LabStack):
    name = "accountstest"
    release = "bookworm"

    def __init__(self, workdir: Path, keypair, archives):
        self.accounts = accounts_toml()
        super().__init__(workdir, keypair, archives)

    def write(self, ollama: dict | None = None, extra: str = "") -> None:
        openwebui = {"install": "pip", "find_links": os.environ.get("PIP_FIND_LINKS", "/opt/wheels"),
                     "admin_email": ADMIN, "offline": True}
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in openwebui.items())
        super().write({"models": MODELS, **(ollama or {})}, f"[openwebui]\n{lines}\n\n{self.accounts}\n{extra}")

    def up(self) -> dict:
        """``ollastack --json up``: converge, ready check, accounts; the one host's report."""
        result = self.ollastack("--json", "up", timeout=2400)
        assert result.returncode == 0, result.stderr[-4000:]
        for secret in (self.secret("admin-password"), self.secret("password", "alice"), self.secret("password", "bob")):
            assert secret not in result.stdout + result.stderr
        return json.loads(result.stdout)["hosts"][0]

    def secret(self, *command: str) -> str:
        result = self.ollastack(*command)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keypair, archives):
    yield from lab_stack_fixture(lambda: AccountsStack(tmp_path_factory.mktemp("accounts"), keypair, archives))


@pytest.fixture(scope="module")
def first_up(stack) -> dict:
    return stack.up()


@pytest.fixture(scope="module")
def base(first_up) -> str:
    return f"https://{first_up['address']}"


def token_of(base: str, stack: AccountsStack, email: str, password: str) -> str:
    status, session = signin(base, stack.ca, email, password)
    assert status == 200, session
    return session["token"]


@pytest.fixture(scope="module")
def tokens(base, stack) -> dict[str, str]:
    return {"admin": token_of(base, stack, ADMIN, stack.secret("admin-password")),
            "alice": token_of(base, stack, "alice@example.org", stack.secret("password", "alice")),
            "bob": token_of(base, stack, "bob@example.org", stack.secret("password", "bob"))}


def model_ids(base: str, stack: AccountsStack, token: str) -> set[str]:
    status, body = request(f"{base}/api/models", stack.ca, token=token)
    assert status == 200, body
    return {m["id"] for m in json.loads(body)["data"]}


def chat(base: str, stack: AccountsStack, token: str, model: str, path: str = "/api/chat/completions",
         stream: bool = False) -> tuple[int, bytes]:
    return request(f"{base}{path}", stack.ca, {"model": model, "stream": stream,
                                               "messages": [{"role": "user", "content": "hello there"}]}, token=token)


def test_first_up_creates_groups_users_grants_and_settings(first_up, stack):
    changed = first_up["accounts"]
    assert {"group staff: created", "group guests: created", "user alice (alice@example.org): created as user",
            "user bob (bob@example.org): created as user", "group staff: alice added", "group guests: bob added",
            "model factual:latest: used by staff", "model tinyllama:latest: used by guests, staff"} <= set(changed), changed
    for user in ("alice", "bob"):
        assert (stack.dir / "state" / f"accountstest.openwebui-user-{user}-password").stat().st_mode & 0o777 == 0o600


def test_each_user_sees_exactly_the_models_granted(base, stack, tokens):
    assert model_ids(base, stack, tokens["alice"]) == STAFF_MODELS
    assert model_ids(base, stack, tokens["bob"]) == GUEST_MODELS
    assert model_ids(base, stack, tokens["admin"]) == STAFF_MODELS | {"llama3.2:1b"}


def test_group_defaults_and_permissions_reach_open_webui(base, stack, tokens):
    status, body = request(f"{base}/api/v1/groups/", stack.ca, token=tokens["admin"])
    groups = {g["name"]: g for g in json.loads(body)}
    assert status == 200 and groups["staff"]["data"]["config"]["default_models"] == ["factual:latest"]
    status, body = request(f"{base}/api/v1/users/permissions", stack.ca, token=tokens["alice"])
    alice = json.loads(body)
    status_bob, body_bob = request(f"{base}/api/v1/users/permissions", stack.ca, token=tokens["bob"])
    bob = json.loads(body_bob)
    assert status == status_bob == 200
    assert alice["features"]["api_keys"] and alice["workspace"]["models"]
    assert not bob["features"]["api_keys"] and not bob["workspace"]["models"]


def test_settings_come_from_the_environment_and_survive_a_restart(base, stack, tokens, first_up):
    """Open WebUI runs with ENABLE_PERSISTENT_CONFIG=false: what the stack sets must be in its environment."""
    address = first_up["address"]
    env = ssh(address, "systemctl show open-webui -p Environment --value", stack.keypair).stdout
    assert "DEFAULT_MODELS=tinyllama:latest" in env and "ENABLE_API_KEYS=true" in env
    ssh(address, "systemctl restart open-webui; for i in $(seq 600); do curl -fs -o /dev/null 127.0.0.1:8080/health "
                 "&& break; sleep 0.2; done", stack.keypair)
    status, body = request(f"{base}/api/v1/configs/export", stack.ca, token=tokens["admin"])
    config = json.loads(body)
    assert status == 200 and config["ui.default_models"] == "tinyllama:latest" and config["auth.enable_api_keys"]
    assert config["ui.enable_signup"] is False
    assert model_ids(base, stack, tokens["alice"]) == STAFF_MODELS


def test_chat_with_a_model_not_granted_is_refused(base, stack, tokens):
    status, body = chat(base, stack, tokens["alice"], "factual:latest")
    assert status == 200 and "answering: hello there" in json.loads(body)["choices"][0]["message"]["content"]
    for token, model in ((tokens["bob"], "factual:latest"), (tokens["alice"], "llama3.2:1b"),
                         (tokens["bob"], "llama3.2:1b")):
        for path in ("/api/chat/completions", "/ollama/api/chat"):
            status, body = chat(base, stack, token, model, path)
            assert status in (400, 401, 403, 404), (path, model, status, body[:200])
            assert b"answering" not in body


def test_the_presets_parameters_reach_ollama_through_open_webui(base, stack, tokens, first_up):
    """A staff chat with the preset through the real Open WebUI: the stand-in logs the options Ollama runs with."""
    status, _ = chat(base, stack, tokens["alice"], "factual:latest")
    assert status == 200
    last = json.loads(ssh(first_up["address"], f"tail -n 1 {CHAT_LOG}", stack.keypair).stdout)
    assert last["model"].startswith("factual")
    assert {k: last["options"].get(k) for k in BUILTINS["factual"]} == BUILTINS["factual"], last


def test_admin_endpoints_refuse_both_users(base, stack, tokens):
    for user in ("alice", "bob"):
        for method, path, body in (("GET", "/api/v1/users/", None), ("GET", "/api/v1/configs/export", None),
                                   ("GET", "/api/v1/models/all", None),
                                   ("POST", "/api/v1/groups/create", {"name": "x", "description": "x"}),
                                   ("POST", "/api/v1/auths/add", {"name": "x", "email": "x@example.org",
                                                                   "password": "Some-Pass-1", "role": "admin"})):
            status, answer = request(f"{base}{path}", stack.ca, body, token=tokens[user], method=method)
            assert status in (401, 403), (user, path, status, answer[:200])


def test_signup_stays_off(base, stack):
    status, _ = request(f"{base}/api/v1/auths/signup", stack.ca,
                        {"email": "visitor@example.org", "password": "Visitor-Pass-1", "name": "Visitor"})
    assert status == 403


def test_second_up_changes_nothing_and_leaves_other_accounts_alone(base, stack, tokens):
    status, body = request(f"{base}/api/v1/auths/add", stack.ca, {"name": "Eve", "email": "eve@example.org",
                                                                   "password": "Eve-Pass-12345", "role": "user"},
                           token=tokens["admin"])
    assert status == 200, body
    assert stack.up()["accounts"] == []
    status, body = request(f"{base}/api/v1/users/?page=1", stack.ca, token=tokens["admin"])
    assert "eve@example.org" in {u["email"] for u in json.loads(body)["users"]}
    result = stack.ollastack("--json", "status")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["hosts"][0]["unlisted_accounts"] == ["eve@example.org (user)"]


def curl(base: str, stack: AccountsStack, path: str, body: dict, key: str | None) -> tuple[int, str]:
    """curl as the README shows it: (HTTP status, body)."""
    headers = ["-H", "Content-Type: application/json"] + (["-H", f"Authorization: Bearer {key}"] if key else [])
    result = subprocess.run(["curl", "-sS", "--cacert", str(stack.ca), *headers, "-d", json.dumps(body),
                             "-w", "\n%{http_code}", f"{base}{path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text, _, code = result.stdout.rpartition("\n")
    return int(code), text


def test_api_key_chats_over_https_and_only_with_the_key(base, stack, first_up):
    result = stack.ollastack("api-key", "--user", "alice")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    assert key.startswith("sk-") and stack.secret("api-key", "--user", "alice") == key
    message = {"messages": [{"role": "user", "content": "hello there"}]}
    status, text = curl(base, stack, "/api/chat/completions", {"model": "factual:latest", "stream": False, **message}, key)
    assert status == 200 and "answering: hello there" in json.loads(text)["choices"][0]["message"]["content"]
    status, text = curl(base, stack, "/api/chat/completions", {"model": "factual:latest", "stream": True, **message}, key)
    pieces = [json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
              for line in text.splitlines() if line.startswith("data: {")]
    assert status == 200 and "answering: hello there" in "".join(pieces) and len([p for p in pieces if p]) > 3
    status, text = curl(base, stack, "/ollama/api/chat", {"model": "tinyllama:latest", **message}, key)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert status == 200 and lines[-1]["done"] and "answering" in "".join(x["message"]["content"] for x in lines)
    for wrong in (None, "sk-" + "0" * 32, key[:-1] + ("x" if key[-1] != "x" else "y")):
        for path in ("/api/chat/completions", "/ollama/api/chat"):
            status, text = curl(base, stack, path, {"model": "tinyllama:latest", **message}, wrong)
            assert status == 401, (path, wrong is None, status, text[:200])
    refused = stack.ollastack("api-key", "--user", "bob")
    assert refused.returncode == 2 and "features.api_keys" in refused.stderr
    address = first_up["address"]
    assert not port_open(address, 11434)
    ports, reachable = reachable_ports(address, stack.keypair)
    assert 11434 in ports and reachable == [22, 80, 443], (ports, reachable)


def test_moving_a_user_between_groups_changes_what_they_see(base, stack):
    stack.accounts = accounts_toml('["staff"]')
    stack.write()
    changed = stack.up()["accounts"]
    assert set(changed) == {"group guests: bob removed", "group staff: bob added"}, changed
    bob = token_of(base, stack, "bob@example.org", stack.secret("password", "bob"))
    assert model_ids(base, stack, bob) == STAFF_MODELS
    status, _ = chat(base, stack, bob, "factual:latest")
    assert status == 200


# -- single sign-on (the same host, re-converged with [sso]) --------------------------------------
SSO_CLIENT = "ollastack-webui"
SSO_PEOPLE = {
    "carol": {"email": "carol@example.org", "name": "Carol SSO", "realm_access": {"roles": ["chat-admin"]},
              "teams": ["staff"]},
    "dave": {"email": "dave@example.org", "name": "Dave SSO", "realm_access": {"roles": ["chat-user"]},
             "teams": ["guests"]},
    "mallory": {"email": "mallory@elsewhere.example", "name": "Mallory", "realm_access": {"roles": ["chat-user"]},
                "teams": ["staff"]},
}


def sso_toml(discovery_url: str, secret_file: Path) -> str:
    return f"""[sso]
provider_url = "{discovery_url}"
client_id = "{SSO_CLIENT}"
client_secret_file = "{secret_file}"
provider_name = "Lab IdP"
allowed_domains = ["example.org"]
role_claim = "realm_access.roles"
allowed_roles = ["chat-user"]
admin_roles = ["chat-admin"]
group_claim = "teams"
"""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def browser_sign_in(base: str, stack: AccountsStack, username: str) -> tuple[str, dict[str, str]]:
    """The browser's part of the authorization-code flow, one redirect at a time, with a cookie jar:
    Open WebUI's /oauth/oidc/login, the provider's form, the callback. Returns (final Location, cookies)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(NoRedirect, urllib.request.HTTPCookieProcessor(jar),
                                         urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(stack.ca))))

    def go(url: str, form: dict | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with opener.open(url, data=data, timeout=60) as response:
                return response.status, response.headers.get("Location", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Location", "")

    status, authorize = go(f"{base}/oauth/oidc/login")
    assert status == 302, status
    status, _ = go(authorize)
    assert status == 200, (status, authorize)
    status, callback = go(authorize, {"username": username})
    assert status == 302 and "code=" in callback, (status, callback)
    status, landing = go(callback)
    assert status in (302, 307), (status, landing)
    return landing, {c.name: c.value for c in jar}


@pytest.fixture(scope="module")
def sso(stack, first_up, tokens):
    """The host re-converged with [sso] naming a provider on the lab bridge's gateway; yields (provider, up report)."""
    subnet = LabSection().subnet
    lab.ensure_network(subnet)
    secret = "oidc-" + secrets.token_urlsafe(24)
    secret_file = stack.dir / "oidc-client-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    client = Client(SSO_CLIENT, secret, [])
    with serve_provider(lab.gateway(subnet), client, SSO_PEOPLE) as provider:
        stack.write(extra=sso_toml(provider.discovery_url, secret_file))
        result = stack.ollastack("--json", "up", timeout=2400)
        assert result.returncode == 0, result.stderr[-4000:]
        env = ssh(first_up["address"], "systemctl show open-webui -p Environment --value", stack.keypair).stdout
        redirect = next(w.split("=", 1)[1] for w in env.split() if w.startswith("OPENID_REDIRECT_URI="))
        client.redirect_uris.append(redirect)
        yield provider, secret, result


def test_sso_sign_in_maps_role_and_group_from_the_providers_claims(base, stack, tokens, sso):
    provider, _, _ = sso
    for username, role, group in (("carol", "admin", "staff"), ("dave", "user", "guests")):
        landing, cookies = browser_sign_in(base, stack, username)
        assert landing.endswith("/auth") and "error" not in landing, landing
        status, body = request(f"{base}/api/v1/auths/", stack.ca, token=cookies["token"])
        me = json.loads(body)
        assert status == 200 and me["email"] == SSO_PEOPLE[username]["email"] and me["role"] == role, me
        status, body = request(f"{base}/api/v1/users/{me['id']}", stack.ca, token=tokens["admin"])
        user = json.loads(body)
        assert status == 200 and user["role"] == role and [g["name"] for g in user["groups"]] == [group], user
    dave = browser_sign_in(base, stack, "dave")[1]["token"]
    assert model_ids(base, stack, dave) == GUEST_MODELS
    assert provider.signed_in == ["carol", "dave", "dave"]


def test_sso_refuses_an_e_mail_domain_not_allowed(base, stack, sso):
    landing, cookies = browser_sign_in(base, stack, "mallory")
    assert "error=" in landing and "token" not in cookies, landing


def test_sso_client_secret_stays_in_its_0600_file_on_the_host(stack, first_up, sso):
    _, secret, result = sso
    assert secret not in result.stdout + result.stderr
    address = first_up["address"]
    assert ssh(address, "stat -c '%a %U %G' /etc/open-webui/oidc.env", stack.keypair).stdout.split() == ["600", "root", "root"]
    assert secret in ssh(address, "cat /etc/open-webui/oidc.env", stack.keypair).stdout
    shown = ssh(address, "systemctl cat open-webui; systemctl show open-webui -p Environment; ps -eo args",
                stack.keypair).stdout
    assert "/etc/open-webui/oidc.env" in shown and secret not in shown
    leaked = [p for p in stack.dir.rglob("*") if p.is_file() and p.name != "oidc-client-secret"
              and secret.encode() in p.read_bytes()]
    assert leaked == []
