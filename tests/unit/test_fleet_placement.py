"""``fleet.placement`` without hosts: its validation, each backend's host data, the gateway's upstream per
group as nginx renders it, Open WebUI's Ollama URLs, and doctor's check of each backend's placed models."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jinja2
import pytest

from ollastack import doctor, fleet
from ollastack.config import ConfigError, parse_stack
from ollastack.deploy import openwebui
from ollastack.deploy.nginx import upstream_arguments
from ollastack.host import Host
from ollastack.hostdata import defaults, host_data
from tests.support.repo import REPO

HOSTS = [Host("p-1", "10.213.0.10"), Host("p-2", "10.213.0.11"), Host("p-3", "10.213.0.12"), Host("p-4", "10.213.0.13")]
MODELS = ["llama3.2:1b", "qwen2.5:0.5b", "tinyllama"]


def _stack(tmp_path, placement=None, backends: int = 3, ollama: dict | None = None, **sections) -> dict:
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 test\n")
    private.write_text("key\n")
    return {"stack": {"name": "placeunit", "provider": "lab"},
            "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
            "openwebui": {"install": "none", **sections.pop("openwebui", {})},
            "ollama": {"models": MODELS, **(ollama or {})},
            "fleet": {"backends": backends, **({"placement": placement} if placement is not None else {})}, **sections}


def _problems(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_stack(data)
    return "; ".join(err.value.problems)


PLACED = [["llama3.2:1b", "qwen2.5:0.5b"], ["llama3.2:1b", "tinyllama"], ["qwen2.5:0.5b", "llama3.2:1b"]]


@pytest.mark.parametrize("placement,backends,expected", [
    ([["llama3.2:1b"], MODELS], 3, "2 list(s) of models for fleet.backends = 3"),
    ([MODELS, MODELS, ["mistral:7b", "llama3.2:1b"]], 3, "backend 3: mistral:7b not in ollama.models"),
    ([["llama3.2:1b"], ["llama3.2:1b", "qwen2.5:0.5b"]], 2, "tinyllama of ollama.models on no backend"),
    ([MODELS, ["Bad Name!"]], 2, "not a model reference like llama3.2:1b: 'Bad Name!'"),
    ([MODELS, []], 2, "every backend needs at least one model"),
    ([MODELS, ["llama3.2:1b", "tinyllama", "tinyllama:latest"]], 2, "tinyllama:latest"),
    *[([MODELS, [hostile]], 2, f"not a model reference like llama3.2:1b: {hostile!r}")
      for hostile in ("tinyllama\nx", "tiny'llama", "$(reboot)", "-tinyllama")],
])
def test_a_placement_that_does_not_fit_is_refused_whole(tmp_path, placement, backends, expected):
    problems = _problems(_stack(tmp_path, placement, backends))
    assert "fleet.placement" in problems and expected in problems


def test_names_compare_as_ollama_lists_them(tmp_path):
    """tinyllama and tinyllama:latest are one model, the same one in ollama.models and in the placement."""
    stack = parse_stack(_stack(tmp_path, [["llama3.2:1b", "qwen2.5:0.5b"], ["tinyllama:latest"]], 2))
    assert fleet.placed_models(stack, 1) == ["tinyllama:latest"]


def test_a_placement_that_would_break_the_presets_or_open_webui_is_refused(tmp_path):
    partial = [["llama3.2:1b", "qwen2.5:0.5b"], ["tinyllama"]]
    assert "llama3.2:1b: a preset's base model must be on every backend" in _problems(
        _stack(tmp_path, partial, 2, presets={"use": ["factual"]}))
    assert "openwebui.ollama_url" in _problems(
        _stack(tmp_path, partial, 2, openwebui={"ollama_url": "http://127.0.0.1:11500"}))
    assert "openwebui.port 11435" in _problems(_stack(tmp_path, partial, 2, openwebui={"port": 11435}))
    # The same base everywhere passes, and every backend makes its presets from the stack's base.
    everywhere = [["llama3.2:1b", "qwen2.5:0.5b"], ["tinyllama", "llama3.2:1b"]]
    stack = parse_stack(_stack(tmp_path, everywhere, 2, presets={"use": ["factual"]}))
    settings = fleet.host_settings(stack, HOSTS[:3])
    assert {settings[h.name]["ollastack_presets_base"] for h in HOSTS[1:3]} == {"llama3.2:1b"}


def test_without_a_placement_the_host_settings_are_as_before(tmp_path):
    stack = parse_stack(_stack(tmp_path))
    settings = fleet.host_settings(stack, HOSTS)
    assert "ollastack_fleet_groups" not in settings["p-1"]
    assert not any("ollastack_ollama_models" in settings[h.name] for h in HOSTS)
    assert fleet.placement_groups(stack, HOSTS[1:]) == [HOSTS[1:]]
    assert [fleet.placed_models(stack, i) for i in range(3)] == [MODELS] * 3


def test_each_backend_pulls_its_models_and_the_gateway_groups_them(tmp_path):
    stack = parse_stack(_stack(tmp_path, PLACED))
    settings = fleet.host_settings(stack, HOSTS)
    assert [settings[h.name]["ollastack_ollama_models"] for h in HOSTS[1:]] == PLACED
    # The first and third serve the same models (in another order): one group, balanced by one upstream.
    assert settings["p-1"]["ollastack_fleet_groups"] == [["10.213.0.11:11434", "10.213.0.13:11434"], ["10.213.0.12:11434"]]
    assert settings["p-1"]["ollastack_fleet_upstreams"] == ["10.213.0.11:11434", "10.213.0.12:11434", "10.213.0.13:11434"]
    # Nothing else of the backends' settings changes.
    plain = fleet.host_settings(parse_stack(_stack(tmp_path)), HOSTS)
    for host in HOSTS[1:]:
        assert {k: v for k, v in settings[host.name].items() if k != "ollastack_ollama_models"} == plain[host.name]


def _gateway_data(stack) -> SimpleNamespace:
    settings = fleet.host_settings(stack, HOSTS)
    return SimpleNamespace(**{**defaults(), **host_data(stack), **settings["p-1"], "ollastack_name": "p-1"})


def _site(data) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("nginx-site.conf.j2").render(
        server_names="10.213.0.10", reject_handshake=False, url_host="10.213.0.10", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        auth_rate="10r/m", auth_burst=20, tls_dir="/etc/ollastack/tls", upstream_port=8080, acme_root="/var/www/acme",
        http2_directive=False, **upstream_arguments(data))


def _blocks(text: str, opening: str) -> list[list[str]]:
    """The directives of every block starting with ``opening`` (to its closing brace), stripped."""
    found = []
    for match in re.finditer(re.escape(opening), text):
        lines = text[match.start():].splitlines()[1:]
        found.append([line.strip() for line in lines[:next(i for i, line in enumerate(lines) if line.startswith("}"))]])
    return found


def test_the_gateway_has_one_loopback_upstream_per_group(tmp_path):
    text = _site(_gateway_data(parse_stack(_stack(tmp_path, PLACED))))
    assert _blocks(text, "upstream ollastack_ollama {") == [[
        "least_conn;", "server 10.213.0.11:11434 max_fails=1 fail_timeout=10s;",
        "server 10.213.0.13:11434 max_fails=1 fail_timeout=10s;", "keepalive 16;"]]
    assert _blocks(text, "upstream ollastack_ollama_2 {") == [[
        "least_conn;", "server 10.213.0.12:11434 max_fails=1 fail_timeout=10s;", "keepalive 16;"]]
    servers = _blocks(text, "server {\n    listen 127.0.0.1:")
    assert [s[0] for s in servers] == ["listen 127.0.0.1:11434;", "listen 127.0.0.1:11435;"]
    assert [[d for d in s if d.startswith(("proxy_pass", "proxy_next_upstream_tries"))] for s in servers] == [
        ["proxy_pass http://ollastack_ollama;", "proxy_next_upstream_tries 2;"],
        ["proxy_pass http://ollastack_ollama_2;", "proxy_next_upstream_tries 1;"]]
    # The new listener is on loopback: nothing else listens beyond 22/80/443.
    listens = sorted(set(re.findall(r"^\s*listen (\S+?)[ ;]", text, re.MULTILINE)))
    assert listens == ["127.0.0.1:11434", "127.0.0.1:11435", "443", "80", "[::]:443", "[::]:80"]


def test_one_group_renders_the_site_of_a_fleet_without_placement(tmp_path, monkeypatch):
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["10.213.0.10"])   # no pyinfra host here
    plain = _gateway_data(parse_stack(_stack(tmp_path)))
    same = _gateway_data(parse_stack(_stack(tmp_path, [MODELS, list(reversed(MODELS)), MODELS])))
    assert same.ollastack_fleet_groups == [["10.213.0.11:11434", "10.213.0.12:11434", "10.213.0.13:11434"]]
    assert _site(same) == _site(plain)
    assert openwebui.environment(same) == openwebui.environment(plain)
    assert openwebui.environment(plain)["OLLAMA_BASE_URL"] == "http://127.0.0.1:11434"


def test_open_webui_asks_the_upstream_of_each_group(tmp_path, monkeypatch):
    monkeypatch.setattr(openwebui, "server_names", lambda data: ["10.213.0.10"])
    env = openwebui.environment(_gateway_data(parse_stack(_stack(tmp_path, PLACED))))
    assert env["OLLAMA_BASE_URLS"] == "http://127.0.0.1:11434;http://127.0.0.1:11435"
    assert "OLLAMA_BASE_URL" not in env


def test_doctor_checks_each_backend_against_its_placement(tmp_path, monkeypatch):
    stack = parse_stack(_stack(tmp_path, PLACED))
    monkeypatch.setattr(fleet, "probe_backends", lambda stack, gateway, backends: [
        {"name": "p-2", "address": "10.213.0.11:11434", "reachable": True, "models": ["llama3.2:1b", "qwen2.5:0.5b"],
         "running": ["qwen2.5:0.5b"]},
        {"name": "p-3", "address": "10.213.0.12:11434", "reachable": True, "models": ["llama3.2:1b"], "running": []},
        {"name": "p-4", "address": "10.213.0.13:11434", "reachable": True, "models": ["qwen2.5:0.5b", "llama3.2:1b"],
         "running": []}])
    checks = {c.name: c for c in doctor.check_backends(stack, HOSTS)}
    assert checks["backend p-2"].status == "ok" and "running: qwen2.5:0.5b" in checks["backend p-2"].detail
    assert checks["backend p-3"].status == "fail" and "tinyllama:latest" in checks["backend p-3"].detail
    assert checks["backend p-4"].status == "ok" and "running: none" in checks["backend p-4"].detail


def test_the_probe_reads_each_backend_s_running_models():
    output = ('10.213.0.11:11434 {"models": [{"name": "llama3.2:1b"}]}\t{"models": [{"name": "llama3.2:1b"}]}\n'
              '10.213.0.12:11434 {"models": []}\t\n')
    first, second = fleet.parse_probe(output, HOSTS[1:3], ["10.213.0.11:11434", "10.213.0.12:11434"])
    assert first["running"] == ["llama3.2:1b"] and first["reachable"]
    assert second["running"] == [] and second["reachable"]


def test_a_backend_s_own_checks_expect_its_placed_models_only(tmp_path):
    stack = parse_stack(_stack(tmp_path, PLACED))
    view = doctor.fleet_view(stack, "10.213.0.12:11434", fleet.placed_models(stack, 1))
    probe = {"tags": '{"models": [{"name": "llama3.2:1b", "size": 1}, {"name": "tinyllama:latest", "size": 1}]}'}
    checks = {c.name: c.status for c in doctor.check_ollama_api(view, probe)}
    assert checks == {"ollama api": "ok", "model llama3.2:1b": "ok", "model tinyllama": "ok"}


def test_status_shows_each_backend_s_models_and_load(tmp_path, monkeypatch, capsys):
    from ollastack import cli, orchestrate

    monkeypatch.setattr(orchestrate, "status", lambda stack: {"stack": "placeunit", "provider": "lab", "hosts": [], "backends": [
        {"name": "p-2", "address": "10.213.0.11:11434", "reachable": True, "models": ["llama3.2:1b"], "running": ["llama3.2:1b"]},
        {"name": "p-3", "address": "10.213.0.12:11434", "reachable": True, "models": ["tinyllama:latest"], "running": []}]})
    assert cli.cmd_status(SimpleNamespace(json=False), parse_stack(_stack(tmp_path, PLACED))) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  backend p-2 10.213.0.11:11434: answers, models: llama3.2:1b; running: llama3.2:1b" in lines
    assert "  backend p-3 10.213.0.12:11434: answers, models: tinyllama:latest; running: none" in lines


def test_the_gateway_s_own_checks_expect_the_first_group_s_models(tmp_path):
    """The gateway's ollama.host is the first group's upstream: it lists that group's models only."""
    stack = parse_stack(_stack(tmp_path, PLACED))
    view = doctor.fleet_view(stack, None, fleet.placed_models(stack, 0))
    probe = {"tags": '{"models": [{"name": "llama3.2:1b", "size": 1}, {"name": "qwen2.5:0.5b", "size": 1}]}'}
    assert {c.name: c.status for c in doctor.check_ollama_api(view, probe)} == {
        "ollama api": "ok", "model llama3.2:1b": "ok", "model qwen2.5:0.5b": "ok"}
    assert view.ollama.host == "127.0.0.1:11434" and view.openwebui == stack.openwebui
