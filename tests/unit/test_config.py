"""The stack description: every bad field reported at once, exit 2, nothing touched."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.repo import REPO
from ollastack.cli import example_toml, main, settings_markdown
from ollastack.config import ConfigError, iter_settings, load_stack


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "id"
    private.write_text("not used by validation\n")
    public = tmp_path / "id.pub"
    public.write_text("ssh-rsa AAAA test\n")  # every provider takes RSA; Alibaba refuses ed25519
    return public, private


def write_stack(tmp_path: Path, keys, body: str) -> Path:
    public, private = keys
    path = tmp_path / "stack.toml"
    access = "" if "[access]" in body else (
        f'[access]\nadmin_cidrs = ["10.0.0.0/8"]\nssh_public_key = "{public}"\nssh_private_key = "{private}"\n')
    path.write_text(access + body)
    return path


# (what is wrong, stack description, field the message must name)
BAD = [
    ("wrong type", '[lab]\nhosts = "two"\n', "lab.hosts"),
    ("out of range", "[lab]\nhosts = 99\n", "lab.hosts"),
    ("bad CIDR", '[access]\nadmin_cidrs = ["10.0.0.300/8"]\nssh_public_key = "{pub}"\nssh_private_key = "{priv}"\n',
     "access.admin_cidrs"),
    ("CIDR with host bits", '[access]\nadmin_cidrs = ["10.0.0.1/8"]\nssh_public_key = "{pub}"\nssh_private_key = "{priv}"\n',
     "access.admin_cidrs"),
    ("bad port", '[ollama]\nhost = "127.0.0.1:99999"\n', "ollama.host"),
    ("host is a name", '[ollama]\nhost = "localhost:11434"\n', "ollama.host"),
    ("unknown key", '[ollama]\nmodles = ["llama3.2:1b"]\n', "ollama.modles"),
    ("unknown section", '[olama]\nhost = "127.0.0.1:11434"\n', "olama"),
    ("bad model tag", '[ollama]\nmodels = ["Llama 3!"]\n', "ollama.models"),
    ("missing key file", '[access]\nadmin_cidrs = ["10.0.0.0/8"]\nssh_public_key = "/nonexistent/id.pub"\n'
     'ssh_private_key = "{priv}"\n', "access.ssh_public_key"),
    ("sha256 format", '[ollama]\nsha256 = "abc123"\n', "ollama.sha256"),
    ("bad provider", '[stack]\nprovider = "aws"\n', "stack.provider"),
    ("bad stack name", '[stack]\nname = "My Stack"\n', "stack.name"),
    ("autoupdate with a digest", '[openwebui]\nautoupdate = true\nimage = "ghcr.io/open-webui/open-webui@sha256:'
     + "0" * 64 + '"\n', "openwebui.autoupdate"),
    ("bad duration", '[ollama]\nkeep_alive = "five minutes"\n', "ollama.keep_alive"),
    ("bad tls mode", '[tls]\nmode = "none"\n', "tls.mode"),
    ("bad domain", '[tls]\ndomain = "not a domain"\n', "tls.domain"),
    ("archive not found", '[ollama]\narchive = "/nonexistent/ollama.tgz"\n', "ollama.archive"),
    ("archive wrong kind", '[ollama]\nurl = "https://example.com/ollama.zip"\n', "ollama.url"),
    ("bool as string", '[ollama]\nflash_attention = "yes please"\n', "ollama.flash_attention"),
    ("lab subnet public", '[lab]\nsubnet = "8.8.8.0/24"\n', "lab.subnet"),
    ("static without hosts", '[stack]\nprovider = "static"\n', "static.hosts"),
    ("not TOML", "[ollama\nhost=\n", "not valid TOML"),
    ("pip route on Debian 13", '[lab]\nrelease = "trixie"\n[openwebui]\ninstall = "pip"\n', "openwebui.install"),
    # "$" also matches before a trailing newline: patterns are matched whole and control characters refused.
    ("e-mail with trailing newline", '[openwebui]\nadmin_email = "a@b.c\\n"\n', "openwebui.admin_email"),
    ("newline in a display name", '[openwebui]\nadmin_name = "A\\nExecStartPre=+/bin/touch /x"\n', "openwebui.admin_name"),
    ("proxy not a URL", '[ollama]\nhttps_proxy = "http://p:3128\\nExecStartPre=+/bin/id"\n', "ollama.https_proxy"),
    ("key URL with a quote", '[gpu]\ncuda_key_url = "https://x.example.com/k\'$(id)\'"\n', "gpu.cuda_key_url"),
    ("models_dir is /", '[ollama]\nmodels_dir = "/"\n', "ollama.models_dir"),
    ("models_dir is /etc", '[ollama]\nmodels_dir = "/etc"\n', "ollama.models_dir"),
    ("models_dir climbs out", '[ollama]\nmodels_dir = "/srv/../etc"\n', "ollama.models_dir"),
    ("ssh user is an option", '[static]\nuser = "-oProxyCommand=x"\n', "static.user"),
    ("static host with ;", '[static]\nhosts = ["h;id"]\n', "static.hosts"),
    ("Open WebUI on Ollama's port", '[openwebui]\nport = 11434\n', "openwebui.port"),
    ("Ollama off loopback", '[ollama]\nhost = "0.0.0.0:11434"\n', "ollama.host"),
    ("signup as admin", '[openwebui]\nenable_signup = true\ndefault_user_role = "admin"\n', "openwebui.default_user_role"),
    ("SSH from anywhere", '[access]\nadmin_cidrs = ["0.0.0.0/0"]\nssh_public_key = "{pub}"\nssh_private_key = "{priv}"\n',
     "access.admin_cidrs"),
]


@pytest.mark.parametrize("what,body,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exits_2_naming_the_field(tmp_path, keys, capsys, what, body, field):
    body = body.format(pub=keys[0], priv=keys[1])
    path = write_stack(tmp_path, keys, body)
    assert main(["--config", str(path), "validate"]) == 2
    err = capsys.readouterr().err
    assert field in err, err
    assert "nothing was touched" in err


def test_digest_pinned_image_accepted_with_autoupdate_off(tmp_path, keys):
    digest = "ghcr.io/open-webui/open-webui@sha256:" + "0" * 64
    stack = load_stack(write_stack(tmp_path, keys, f'[openwebui]\nimage = "{digest}"\n'))
    assert stack.openwebui.image == digest and stack.openwebui.autoupdate is False


def test_hosts_flag_is_validated_like_the_setting(tmp_path, keys, capsys):
    path = write_stack(tmp_path, keys, "")
    assert main(["--config", str(path), "lab", "up", "--hosts", "42"]) == 2
    assert "lab.hosts = 42" in capsys.readouterr().err


def test_every_bad_field_is_reported_at_once(tmp_path, keys):
    path = write_stack(tmp_path, keys, '[lab]\nhosts = 0\n[ollama]\nhost = "x"\nsha256 = "no"\ntypo = 1\n')
    with pytest.raises(ConfigError) as caught:
        load_stack(path)
    fields = [p.split(" ")[0] for p in caught.value.problems]
    assert {"lab.hosts", "ollama.host", "ollama.sha256", "ollama.typo:"} <= set(fields), fields


def test_unknown_key_lists_the_allowed_ones(tmp_path, keys):
    path = write_stack(tmp_path, keys, "[tls]\nmdoe = 'letsencrypt'\n")
    with pytest.raises(ConfigError) as caught:
        load_stack(path)
    assert "tls.mdoe: unknown setting" in caught.value.problems[0]
    assert "mode" in caught.value.problems[0]


def test_config_from_environment_and_missing_file(tmp_path, keys, monkeypatch, capsys):
    path = write_stack(tmp_path, keys, "")
    monkeypatch.setenv("OLLASTACK_CONFIG", str(path))
    assert main(["validate"]) == 0
    monkeypatch.setenv("OLLASTACK_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["validate"]) == 2
    assert "copy stack.example.toml" in capsys.readouterr().err


def test_bad_input_reaches_no_host(tmp_path, keys, monkeypatch):
    """`up` with a bad description stops before any provider is asked for anything."""
    path = write_stack(tmp_path, keys, '[stack]\nname = "never"\n[lab]\nhosts = 42\n')
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_LAB_DIR", str(tmp_path / "lab"))
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(path), "up"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "lab.hosts" in result.stderr
    assert not (tmp_path / "state").exists() and not (tmp_path / "lab").exists()


def test_example_stack_is_valid(tmp_path, keys):
    text = (REPO / "stack.example.toml").read_text()
    text = re.sub(r'ssh_public_key = ".*"', f'ssh_public_key = "{keys[0]}"', text)
    text = re.sub(r'ssh_private_key = ".*"', f'ssh_private_key = "{keys[1]}"', text)
    path = tmp_path / "stack.toml"
    path.write_text(text)
    load_stack(path)


def test_example_stack_is_generated_from_the_model():
    assert (REPO / "stack.example.toml").read_text() == example_toml(), \
        "stack.example.toml is stale: regenerate it with `ollastack settings --example > stack.example.toml`"


def test_readme_settings_table_matches_the_model():
    readme = (REPO / "README.md").read_text()
    assert settings_markdown() in readme, "README settings table is stale: regenerate it with `ollastack settings`"


def test_settings_json_lists_every_setting(capsys):
    assert main(["--json", "settings"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    assert names == [name for name, _, _ in iter_settings()]
    assert "ollama.host" in names and "access.admin_cidrs" in names


@pytest.mark.parametrize("body,release,setting", [
    ("", "trixie", "lab.release"),
    ('[lab]\nrelease = "bookworm"\n', "bookworm", "lab.release"),
    ('[stack]\nprovider = "azure"\n[azure]\nsubscription_id = "s"\n', "trixie", "azure.image"),
    ('[stack]\nprovider = "azure"\n[azure]\nsubscription_id = "s"\nimage = "Debian:debian-12:12-gen2:latest"\n',
     "bookworm", "azure.image"),
    ('[stack]\nprovider = "alibaba"\n[alibaba]\nimage_pattern = "debian_12*x64*"\n', "bookworm", "alibaba.image_pattern"),
    ('[stack]\nprovider = "static"\n[static]\nhosts = ["192.0.2.10"]\n', None, ""),
])
def test_requested_release_names_the_deciding_setting(tmp_path, keys, body, release, setting):
    """Debian 13 is the default everywhere; each provider has one setting that picks Debian 12."""
    assert load_stack(write_stack(tmp_path, keys, body)).requested_release() == (release, setting)
