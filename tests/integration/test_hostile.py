"""Every text setting against hostile values: refused at validation, exit 2, the field named, no traceback.

The settings and their valid values come from the model (``iter_settings``, the field's default or
its ``examples``), so a setting added later is in the battery without anyone listing it. Where a
character is legitimate (``Permits``: a space in a display name, anything printable in a local
path) the value may be accepted; tests/test_lab_hostile.py converges such values for real.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
from pydantic import SecretStr

from ollastack.deploy.units import systemd_quoted
from ollastack import orchestrate
from tests.support.repo import REPO
from ollastack.cli import main
from ollastack.config import ConfigError, LocalPath, Stack, iter_settings, parse_stack, permitted
from ollastack.host import Host
from ollastack.ssh import ssh_command

SECTION_ORDER = [name for name, _, _ in iter_settings()]


def model_field(name: str):
    section, key = name.split(".", 1)
    return Stack.model_fields[section].annotation.model_fields[key]


def text_settings() -> list[tuple[str, bool]]:
    """(setting, is a list) for every str and list[str] setting of the model."""
    found = []
    for name in SECTION_ORDER:
        annotation = model_field(name).annotation
        if annotation is str or annotation == list[str]:
            found.append((name, annotation is not str))
    return found


def valid_value(name: str) -> str:
    """A value the setting accepts: its default, else its first example, else "x"."""
    field = model_field(name)
    default = field.get_default(call_default_factory=True)
    if field.examples:
        example = field.examples[0]
        return example[0] if isinstance(example, list) else example
    if isinstance(default, list):
        return default[0] if default else "x"
    return default or "x"


CONTROL = {
    "newline injection": lambda v: f"{v}\nExecStartPre=+/bin/touch /tmp/pwned",
    "trailing newline": lambda v: f"{v}\n",
    "NUL": lambda v: f"{v}\x00",
    "CR": lambda v: f"{v}\r",
    "tab": lambda v: f"{v}\t",
    "ESC": lambda v: f"{v}\x1b[2J",
    "DEL": lambda v: f"{v}\x7f",
    "line separator": lambda v: f"{v}\u2028",
    "bidi override": lambda v: f"{v}\u202e",
}
SHELL = {
    "single quote": lambda v: f"{v}'",
    "double quote": lambda v: f'{v}"',
    "command substitution": lambda v: f"{v}$(touch /tmp/pwned)",
    "backtick": lambda v: f"{v}`touch /tmp/pwned`",
    "semicolon": lambda v: f"{v};touch /tmp/pwned",
    "leading dash": lambda v: "-oProxyCommand=touch /tmp/pwned",
    "leading dash, no space": lambda v: "-oProxyCommand=x",
    "space": lambda v: f"{v} x",
    "backslash": lambda v: f"{v}\\",
}


def toml_string(value: str) -> str:
    """A TOML basic string for any text: json escapes control characters, TOML also wants DEL escaped."""
    return json.dumps(value).replace("\x7f", "\\u007f")


@pytest.fixture()
def base(tmp_path):
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAA test\n")
    private.write_text("not used by validation\n")
    return {"access": {"admin_cidrs": ["10.0.0.0/8"], "ssh_public_key": str(public), "ssh_private_key": str(private)}}


def write_stack(tmp_path: Path, data: dict) -> Path:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, list):
                lines.append(f"{key} = [{', '.join(toml_string(v) for v in value)}]")
            else:
                lines.append(f"{key} = {toml_string(value) if isinstance(value, str) else json.dumps(value)}")
    path = tmp_path / "stack.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def with_setting(base: dict, name: str, value, is_list: bool) -> dict:
    section, key = name.split(".", 1)
    data = json.loads(json.dumps(base))
    data.setdefault(section, {})[key] = [value] if is_list else value
    return data


def validate(tmp_path, capsys, data: dict) -> tuple[int, str]:
    path = write_stack(tmp_path, data)
    code = main(["--config", str(path), "validate"])
    return code, capsys.readouterr().err


CASES = [(name, is_list, kind, make) for name, is_list in text_settings()
         for kind, make in {**CONTROL, **SHELL}.items()]


def test_the_battery_covers_every_text_setting():
    names = {name for name, _ in text_settings()}
    assert {"ollama.https_proxy", "static.user", "static.hosts", "gpu.cuda_key_url", "openwebui.admin_name",
            "ollama.models_dir", "ollama.archive", "access.admin_cidrs"} <= names
    assert len(CASES) == len(names) * (len(CONTROL) + len(SHELL)) > 70


@pytest.mark.parametrize("name,is_list,kind,make", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_hostile_value_is_refused_naming_the_field(tmp_path, capsys, base, name, is_list, kind, make):
    value = make(valid_value(name))
    code, err = validate(tmp_path, capsys, with_setting(base, name, value, is_list))
    assert "Traceback" not in err
    marker = permitted(model_field(name))
    legit = kind in SHELL and marker is not None and (marker.chars is None or set(value) - set(valid_value(name))
                                                      <= set(marker.chars) | set("x"))
    if legit and code == 0:
        return
    assert code == 2, (value, err)
    assert f"{name} = " in err or f"{name}: " in err, err
    if kind in CONTROL and not isinstance(marker, LocalPath):
        assert "control characters are not allowed" in err, err


@pytest.mark.parametrize("name,is_list", [s for s in text_settings()], ids=[s[0] for s in text_settings()])
def test_valid_value_of_every_setting_is_accepted(tmp_path, capsys, base, name, is_list):
    """The battery's base values are valid, so a refusal above is the hostile part's doing."""
    if isinstance(permitted(model_field(name)), LocalPath):
        pytest.skip("local paths: see test_local_paths_accept_any_printable_name")
    value = valid_value(name)
    if value == "x":
        pytest.skip("no default or example")
    code, err = validate(tmp_path, capsys, with_setting(base, name, value, is_list))
    assert code == 0, err


ODD = "odd dir; $(touch PWNED) `id` 'q' \"dq\" -x"


def local_path_settings() -> list[str]:
    return [name for name, _ in text_settings() if isinstance(permitted(model_field(name)), LocalPath)]


@pytest.mark.parametrize("name", local_path_settings())
def test_local_paths_accept_any_printable_name(tmp_path, capsys, base, name):
    """A file (or directory) whose path holds a space, quotes, ``;``, ``$()`` and backticks is a real path."""
    odd = tmp_path / ODD
    odd.mkdir()
    target = odd / f"release {ODD}.tgz"
    target.write_bytes(b"x")
    code, err = validate(tmp_path, capsys, with_setting(base, name, str(target), False))
    if code != 0 and "directory not found" in err:
        target.unlink()
        target.mkdir()
        code, err = validate(tmp_path, capsys, with_setting(base, name, str(target), False))
    assert code == 0, err
    assert not list(tmp_path.rglob("PWNED"))


def test_real_cli_refuses_every_text_setting_with_a_newline(tmp_path, base):
    """The same rule through ``python -m ollastack.cli`` (a fresh process): exit 2, field named, no traceback."""
    for name, is_list in text_settings():
        path = write_stack(tmp_path, with_setting(base, name, CONTROL["newline injection"](valid_value(name)), is_list))
        result = subprocess.run([sys.executable, "-m", "ollastack.cli", "validate", "--config", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (name, result.stderr)
        assert name in result.stderr and "Traceback" not in result.stderr, result.stderr


def secret_settings() -> list[str]:
    return [name for name in SECTION_ORDER if model_field(name).annotation is SecretStr]


@pytest.mark.parametrize("name", secret_settings())
@pytest.mark.parametrize("kind", list(CONTROL))
def test_secret_with_control_characters_is_refused_and_never_shown(tmp_path, capsys, base, name, kind):
    value = CONTROL[kind]("hunter2-secret-value")
    code, err = validate(tmp_path, capsys, with_setting(base, name, value, False))
    assert code == 2 and name in err
    assert "hunter2" not in err and "<hidden>" in err


def test_secret_may_hold_shell_characters(tmp_path, capsys, base):
    """A password is never in a shell: quotes, $, ; and spaces are fine (the unit escaping is tested below)."""
    data = with_setting(base, "openwebui.admin_password", "a 'b' \"c\" $(d) `e`; %f \\g", False)
    assert validate(tmp_path, capsys, data)[0] == 0


def test_every_pattern_is_anchored_at_both_ends():
    """pydantic's ``pattern`` is a search: only ``^...$`` makes it a whole match (``$`` is the text's end there)."""
    for name in SECTION_ORDER:
        for meta in model_field(name).metadata:
            pattern = getattr(meta, "pattern", None)
            if pattern:
                assert pattern.startswith("^") and pattern.endswith("$"), (name, pattern)


# --- the shapes of URLs, hosts and paths --------------------------------------------------------------

@pytest.mark.parametrize("setting,value", [
    ("ollama.https_proxy", "http://user:secret@proxy.example.com:3128"),
    ("ollama.https_proxy", "http://proxy.example.com:3128/path"),
    ("ollama.https_proxy", "socks5://proxy.example.com:1080"),
    ("gpu.cuda_key_url", "https://mirror.example.com/k.pub'; touch /tmp/x; '"),
    ("gpu.cuda_repo_url", "https://mirror.example.com/$(id)/"),
    ("gpu.cuda_repo_url", "file:///etc/passwd"),
    ("openwebui.index_url", "https://-bad.example.com/simple"),
    ("openwebui.ollama_url", "http://127.0.0.1:99999"),
    ("azure.resource_manager_url", "http://management.azure.com"),
    ("azure.resource_manager_url", "https://management.azure.com/x"),
    ("alibaba.ecs_endpoint", "https://ecs.example.com/path"),
    ("tls.acme_server", "http://acme.example.com/directory"),
    ("tls.dns_server", "10.0.0.2:0"),
    ("tls.dns_server", "resolver.example.com"),
    ("ollama.url", "https://example.com/ollama.tgz?x=$(id)"),
    ("ollama.host", "localhost:11434"),
    ("ollama.host", "::1:11434"),
    ("static.hosts", "host;id"),
    ("static.hosts", "host name"),
    ("static.hosts", "-oProxyCommand=x"),
    ("static.user", "-oProxyCommand=x"),
    ("static.user", "root;id"),
    ("openwebui.admin_email", "a@b.c;id"),
    ("openwebui.admin_email", "-x@example.com"),
    ("tls.email", "-x@example.com"),
])
def test_url_host_and_name_shapes_are_refused(tmp_path, capsys, base, setting, value):
    is_list = model_field(setting).annotation is not str
    code, err = validate(tmp_path, capsys, with_setting(base, setting, value, is_list))
    assert code == 2 and setting in err, err
    assert "user:secret" not in err


@pytest.mark.parametrize("setting,value", [
    ("ollama.https_proxy", "http://proxy.example.com:3128"),
    ("ollama.https_proxy", "http://[2001:db8::1]:3128/"),
    ("gpu.cuda_repo_url", "https://mirror.example.com/cuda/repos/debian12/x86_64/"),
    ("openwebui.openai_api_base_url", "https://api.example.com/v1/%7Euser"),
    ("tls.dns_server", "10.0.0.2"),
    ("tls.dns_server", "10.0.0.2:5353"),
    ("ollama.host", "[::1]:11434"),
    ("static.hosts", "gpu1.example.com"),
    ("static.hosts", "2001:db8::10"),
    ("openwebui.admin_name", "Jane Doe"),
    ("openwebui.admin_name", "Zoë Ångström-Li"),
])
def test_good_shapes_are_accepted(tmp_path, capsys, base, setting, value):
    is_list = model_field(setting).annotation is not str
    code, err = validate(tmp_path, capsys, with_setting(base, setting, value, is_list))
    assert code == 0, err


@pytest.mark.parametrize("path", ["/", "/etc", "/etc/ollama", "/usr", "/usr/bin", "/usr/share", "/var", "/var/lib",
                                  "/boot", "/dev/shm/m", "/proc/1", "/sys", "/root/models", "/home", "/home/alice",
                                  "/lib64", "/run/ollama", "/tmp/models", "/var/tmp/m", "/usr/local/bin", "/opt",
                                  "/srv/../etc", "/srv/./m", "/srv/m/", "srv/models", "/srv/my models", "/srv/m;id",
                                  "//etc"])
def test_models_dir_refuses_system_and_odd_paths(tmp_path, capsys, base, path):
    code, err = validate(tmp_path, capsys, with_setting(base, "ollama.models_dir", path, False))
    assert code == 2 and "ollama.models_dir" in err, err


@pytest.mark.parametrize("path", ["/srv/ollama/models", "/var/lib/ollama/models", "/opt/ollama",
                                  "/usr/share/ollama/.ollama/models", "/home/ollama/models", "/mnt/data"])
def test_models_dir_accepts_a_directory_of_its_own(tmp_path, capsys, base, path):
    assert validate(tmp_path, capsys, with_setting(base, "ollama.models_dir", path, False))[0] == 0


# --- cross-field guards -------------------------------------------------------------------------------

@pytest.mark.parametrize("settings,field", [
    ({"openwebui": {"port": 11434}}, "openwebui.port"),
    ({"ollama": {"host": "127.0.0.1:9000"}, "openwebui": {"port": 9000}}, "openwebui.port"),
    ({"ollama": {"host": "0.0.0.0:11434"}}, "ollama.host"),
    ({"ollama": {"host": "[::]:11434"}}, "ollama.host"),
    ({"ollama": {"host": "10.0.0.5:11434"}}, "ollama.host"),
    ({"openwebui": {"enable_signup": True, "default_user_role": "admin"}}, "openwebui.default_user_role"),
    ({"access": {"admin_cidrs": ["0.0.0.0/0"]}}, "access.admin_cidrs"),
    ({"access": {"admin_cidrs": ["10.0.0.0/8", "::/0"]}}, "access.admin_cidrs"),
])
def test_settings_that_reopen_exposure_are_refused(tmp_path, capsys, base, settings, field):
    data = json.loads(json.dumps(base))
    for section, values in settings.items():
        data.setdefault(section, {}).update(values)
    code, err = validate(tmp_path, capsys, data)
    assert code == 2 and field in err, err


def test_opt_ins_allow_them(tmp_path, capsys, base):
    data = json.loads(json.dumps(base))
    data["ollama"] = {"host": "0.0.0.0:11434", "listen_beyond_loopback": True}
    data["openwebui"] = {"enable_signup": True, "default_user_role": "user", "port": 8081}
    assert validate(tmp_path, capsys, data) == (0, "")
    data["access"]["admin_cidrs"] = ["0.0.0.0/0"]
    data["access"]["ssh_from_anywhere"] = True
    code, err = validate(tmp_path, capsys, data)
    assert code == 0
    assert err.count("\n") == 1 and err.startswith("warning: SSH is open to the whole internet"), err


def test_open_webui_port_is_free_when_open_webui_is_off(base):
    data = json.loads(json.dumps(base))
    data["openwebui"] = {"install": "none", "port": 11434}
    assert parse_stack(data).openwebui.port == 11434


# --- tracebacks that became one-line errors ---------------------------------------------------------

def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ollastack.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_non_utf8_stack_file_is_bad_input(tmp_path):
    path = tmp_path / "stack.toml"
    path.write_bytes(b'[stack]\nname = "d\xe9mo"\n')
    result = run_cli("validate", "--config", str(path))
    assert result.returncode == 2 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr


def test_non_table_section_with_a_flag_is_bad_input(tmp_path, base):
    path = write_stack(tmp_path, base)
    path.write_text("lab = 5\n" + path.read_text())
    result = run_cli("lab", "up", "--hosts", "2", "--config", str(path))
    assert result.returncode == 2 and "lab = 5" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_state_directory_is_one_line(tmp_path, base):
    path = write_stack(tmp_path, base)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = run_cli("admin-password", "--config", str(path), env={"OLLASTACK_STATE_DIR": str(blocker / "state")})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def test_ssh_timeout_in_status_is_a_gpu_error(tmp_path, base, monkeypatch):
    stack = parse_stack(base)

    def stalled(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

    monkeypatch.setattr(orchestrate.subprocess, "run", stalled)
    report = orchestrate.gpu_report(stack, Host("h", "10.213.0.99"))
    assert "no answer within" in report["error"]


# --- global options ---------------------------------------------------------------------------------

def test_global_options_after_the_subcommand(tmp_path, base):
    path = write_stack(tmp_path, base)
    result = run_cli("validate", "--config", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    result = run_cli("--config", str(tmp_path / "missing.toml"), "validate", "--config", str(path))
    assert result.returncode == 0, result.stderr
    lab_dir = tmp_path / "lab"
    result = run_cli("lab", "list", "--json", "--config", str(path), env={"OLLASTACK_LAB_DIR": str(lab_dir)})
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    result = run_cli("--json", "lab", "list", "--config", str(path), env={"OLLASTACK_LAB_DIR": str(lab_dir)})
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stderr
    result = run_cli("settings", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)[0]["name"] == "stack.name"


# --- ssh command lines ------------------------------------------------------------------------------

def test_ssh_destination_follows_double_dash_and_remote_words_are_quoted():
    argv = ssh_command("10.213.0.10", "root", "/k", "/kh", "cat", "/etc/os-release; id")
    assert argv[argv.index("--") + 1] == "root@10.213.0.10"
    assert argv[-1] == "cat '/etc/os-release; id'"
    assert all(not a.startswith("root@") for a in argv[:argv.index("--")])


def test_ssh_user_that_is_an_option_never_reaches_ssh(base):
    data = json.loads(json.dumps(base))
    data["stack"] = {"provider": "static"}
    data["static"] = {"hosts": ["192.0.2.10"], "user": "-oProxyCommand=touch /tmp/pwned"}
    with pytest.raises(ConfigError) as caught:
        parse_stack(data)
    assert any(p.startswith("static.user") for p in caught.value.problems)


def test_gpu_probe_argv_has_double_dash(base, monkeypatch):
    seen = {}

    def fake(cmd, **kwargs):
        seen["cmd"] = cmd
        return SimpleNamespace(returncode=255, stdout="", stderr="refused")

    monkeypatch.setattr(orchestrate.subprocess, "run", fake)
    data = json.loads(json.dumps(base))
    data["stack"] = {"provider": "static"}
    data["static"] = {"hosts": ["192.0.2.10"], "user": "admin"}
    stack = parse_stack(data)
    orchestrate.gpu_report(stack, orchestrate.hosts_of(stack)[0])
    cmd = seen["cmd"]
    assert cmd[cmd.index("--") + 1] == "admin@192.0.2.10"
    assert "curl -fsS --max-time 5 http://127.0.0.1:11434/api/tags 2>/dev/null" in cmd[-1]


# --- the systemd escaping helper --------------------------------------------------------------------

UNIT_VALUES = {"PERCENT": "50%Z done %n", "QUOTE": 'say "hi"', "BACKSLASH": "C:\\path\\y", "ALL": 'a"%\\b c'}


def _verify_unit(tmp_path: Path, template: str, environment: dict[str, str]) -> str:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined)
    drop_in = env.get_template(template).render(environment=environment)
    unit = tmp_path / "ollastack-check.service"
    unit.write_text("[Unit]\nDescription=check\n[Service]\nExecStart=/bin/true\n" + drop_in.split("[Service]", 1)[1])
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60)
    return result.stderr


@pytest.mark.parametrize("template", ["ollama-override.conf.j2", "openwebui-override.conf.j2"])
def test_escaped_values_are_read_by_systemd_without_complaint(tmp_path, template):
    quoted = {k: systemd_quoted(v) for k, v in UNIT_VALUES.items()}
    assert _verify_unit(tmp_path, template, quoted) == ""
    # Without the escaping systemd drops these lines (so the check above has teeth).
    complaints = _verify_unit(tmp_path, template, UNIT_VALUES)
    assert "PERCENT" in complaints and "BACKSLASH" in complaints


def test_systemd_quoted_escapes_and_refuses_newlines():
    assert systemd_quoted('50% "x" \\') == '50%% \\"x\\" \\\\'
    assert systemd_quoted("50%", specifiers=False) == "50%"
    for bad in ("a\nExecStartPre=+/bin/touch /tmp/x", "a\rb", "a\x00"):
        with pytest.raises(ValueError, match="control characters"):
            systemd_quoted(bad)
