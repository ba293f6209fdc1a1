"""The ``ollastack`` command's verdicts: exit codes, what it prints, what it refuses, and what it never shows
(secrets). Run in-process against a static stack whose "host" is a loopback TLS server, a fake ``ssh``,
and the Azure emulator where something must really be deleted (or not)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib

import pytest

from ollastack import cli, cloud, lab, orchestrate
from tests.support.repo import REPO
from ollastack.cloud import CloudError
from ollastack.config import iter_settings
from ollastack.state import StackState
from tests.support.controlkit import fake_host, fake_ssh, loopback_address
from tests.support.azure_fixtures import arm, ca, keys  # noqa: F401 (fixtures: the ARM emulator, its CA, an SSH key pair)

PASSWORD = "Tr0ub4dor-and-3-horse-batteries"


@pytest.fixture
def home(tmp_path, monkeypatch, keys):
    """Everything the CLI writes goes under tmp_path; returns a writer of stack.toml (``[section]`` dicts)."""
    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "stack.toml"
    monkeypatch.setenv("OLLASTACK_CONFIG", str(config))

    def write(provider: str = "static", raw: str = "", **sections) -> str:
        tables = {"stack": {"name": "clitest", "provider": provider},
                  "access": {"admin_cidrs": ["198.51.100.7/32"], "ssh_public_key": str(keys[0]),
                             "ssh_private_key": str(keys[1])},
                  **({"static": {"hosts": [loopback_address()]}} if provider == "static" else {}), **sections}
        config.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in values.items()) + "\n"
                                  for name, values in tables.items()) + raw)
        return str(config)

    write.bin = tmp_path / "bin"
    write.state = tmp_path / "state"
    return write


def toml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- settings -------------------------------------------------------------------------------------
def test_settings_as_markdown_json_and_example(capsys):
    names = [name for name, _, _ in iter_settings()]
    code, out, _ = run(capsys, "settings")
    assert code == 0 and out.startswith("| setting | default | what it does |\n|---|---|---|\n")
    assert [line.split("`")[1] for line in out.splitlines()[2:]] == names
    code, out, _ = run(capsys, "--json", "settings")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == names and all(r["description"] for r in rows)
    code, out, _ = run(capsys, "settings", "--example")
    example = tomllib.loads(out)
    assert code == 0 and sorted(f"{t}.{k}" for t, keys in example.items() for k in keys) == sorted(names)
    assert "admin_password" in example["openwebui"] and example["openwebui"]["admin_password"] == ""


# -- validate and bad input -----------------------------------------------------------------------
def test_validate_ok_and_missing_file(home, capsys, tmp_path):
    config = home()
    assert run(capsys, "validate") == (0, f"{config}: ok (stack 'clitest', provider static)\n", "")
    code, out, _ = run(capsys, "--json", "validate")
    assert code == 0 and json.loads(out) == {"ok": True, "stack": "clitest", "provider": "static"}
    code, out, err = run(capsys, "--config", str(tmp_path / "nope.toml"), "status")
    assert code == 2 and out == "" and "cannot read the stack description" in err


HOSTILE = [12345, ["a", "list"], {"nested": PASSWORD}, PASSWORD + "\nExecStartPre=+/bin/touch /PWN", PASSWORD + "\x00",
           PASSWORD * 40]


@pytest.mark.parametrize("value", HOSTILE, ids=["int", "list", "table", "newline", "nul", "long"])
def test_a_bad_admin_password_is_never_echoed(home, capsys, value):
    home(openwebui={"install": "none", "admin_password": value}, lab={"hosts": 99})
    code, out, err = run(capsys, "validate")
    shown = json.dumps(value) if not isinstance(value, str) else value
    for text in (out, err):
        assert PASSWORD not in text and shown not in text and "12345" not in text and "a list" not in text
    assert code == 2 and "lab.hosts" in err  # the other problem is still reported
    if "openwebui.admin_password" in err:
        assert "openwebui.admin_password = <hidden>" in err


@pytest.mark.parametrize("raw", [f'[openwebui]\nadmin_passwd = "{PASSWORD}"\n',
                                 f'[ollama]\nadmin_password = "{PASSWORD}"\n',
                                 f'[openwebui]\nadmin_password = "{PASSWORD}\n',
                                 f'[openwebui]\nadmin_password = {PASSWORD}\n',
                                 f'[azure]\nclient_secret = "{PASSWORD}"\n'])
def test_a_secret_in_the_wrong_place_or_bad_toml_is_never_echoed(home, capsys, raw):
    home(raw=raw)
    code, out, err = run(capsys, "validate")
    assert code == 2 and PASSWORD not in out + err, err


def test_a_valid_admin_password_stays_out_of_every_other_output(home, capsys, monkeypatch):
    home(openwebui={"install": "container", "admin_password": PASSWORD}, tls={"days": 5000})
    code, out, err = run(capsys, "--json", "validate")
    assert code == 2 and PASSWORD not in out + err
    home(openwebui={"install": "container", "admin_password": PASSWORD})
    for args in (["validate"], ["--json", "validate"], ["settings"]):
        code, out, err = run(capsys, *args)
        assert code == 0 and PASSWORD not in out + err
    monkeypatch.setattr(orchestrate, "up", lambda *a, **k: (_ for _ in ()).throw(CloudError("no quota left")))
    code, out, err = run(capsys, "up")
    assert code == 1 and PASSWORD not in out + err


# -- admin-password ---------------------------------------------------------------------------------
def test_admin_password_prints_the_configured_one_only_there(home, capsys):
    home(openwebui={"admin_password": PASSWORD})
    assert run(capsys, "admin-password") == (0, PASSWORD + "\n", "")
    code, out, _ = run(capsys, "--json", "admin-password")
    assert code == 0 and json.loads(out) == {"email": "admin@example.com", "password": PASSWORD}
    [secret_file] = home.state.glob("clitest.openwebui-admin-password")
    assert secret_file.stat().st_mode & 0o777 == 0o600


def test_admin_password_generated_once(home, capsys):
    home()
    code, first, _ = run(capsys, "admin-password")
    assert code == 0 and len(first.strip()) >= 20
    assert run(capsys, "admin-password")[1] == first


def test_admin_password_file_that_cannot_be_written_fails_without_the_password(home, tmp_path):
    """The state directory is a file: the CLI fails (its own process, as a user runs it) and shows no password."""
    config = home(openwebui={"admin_password": PASSWORD})
    (tmp_path / "state").write_text("not a directory\n")
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", config, "admin-password"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stdout == ""
    assert PASSWORD not in result.stderr


# -- status -----------------------------------------------------------------------------------------
def test_status_text_and_exit_code(home, capsys, monkeypatch, tmp_path):
    home(openwebui={"admin_password": PASSWORD})
    fake_ssh(home.bin, smi=["Tesla T4, 15360"], tags={"models": [{"name": "llama3.2:1b", "size": 1_321_098_329}]})
    host = fake_host(monkeypatch, tmp_path, "clitest", ("admin@example.com", PASSWORD))
    try:
        code, out, err = run(capsys, "status")
    finally:
        host.stop()
    lines = out.splitlines()
    assert code == 0, out + err
    assert lines[0] == "stack clitest (static)"
    assert lines[1].startswith(f"  {host.address} {host.address}: HTTPS verified")
    assert lines[2].startswith("    certificate: issued by ") and "expires in 39" in lines[2]
    assert lines[3:] == ["    gpu: Tesla T4, 15.0 GiB", "    model llama3.2:1b (1.3 GB): fits in GPU memory"]
    code, out, _ = run(capsys, "status")
    assert code == 1 and "not answering" in out and "certificate: no TLS handshake" in out


def test_status_json_is_the_report(home, capsys):
    home()
    fake_ssh(home.bin, exit_code=255, stderr="Connection refused")
    code, out, _ = run(capsys, "--json", "status")
    [host] = json.loads(out)["hosts"]
    assert code == 1 and host["ok"] is False and host["gpu"] == {"error": f"SSH to {host['address']} failed: Connection refused"}


def test_gpu_lines_say_what_does_not_fit():
    report = orchestrate.what_fits(["Tesla T4, 15360"], {"models": [{"name": "big:70b", "size": 42_520_413_916}]},
                                   ["big:70b", "absent"])
    assert cli.gpu_lines(report) == [
        "    gpu: Tesla T4, 15.0 GiB", "    model big:70b (42.5 GB): does NOT fit in GPU memory",
        "    warning: big:70b (42.5 GB) is larger than the GPU memory (16.1 GB): Ollama runs part of it on the CPU, slowly",
        "    warning: absent is not pulled on the host (not in /api/tags)"]


# -- down -------------------------------------------------------------------------------------------
@pytest.fixture
def azure_stack(home, arm, capsys):
    """An Azure stack created in the emulator (``arm.created``: its resources, recorded in the state file)."""
    home("azure", azure={"resource_manager_url": arm.url})
    stack = cli.load_stack()
    cloud.provider("azure").create(stack, StackState.load("clitest", "azure"), lambda line: None)
    arm.created = sorted(arm.stack_resources("clitest"))
    assert len(arm.created) >= 6
    return arm


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_down_without_yes_and_without_a_terminal_deletes_nothing(azure_stack, home):
    """The CLI as a pipeline runs it (stdin not a terminal): exit 2, every resource and the state still there."""
    result = subprocess.run([sys.executable, "-m", "ollastack.cli", "down"], stdin=subprocess.DEVNULL,
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "down deletes resources: pass --yes when running non-interactively\n"
    assert sorted(azure_stack.stack_resources("clitest")) == azure_stack.created
    assert (home.state / "clitest.json").exists()
    assert [r for r in azure_stack.seen("DELETE")] == []


@pytest.mark.parametrize("answer", ["n\n", "\n", "yes please\n"])
def test_down_asks_on_a_terminal_and_no_keeps_everything(azure_stack, capsys, monkeypatch, answer):
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    code, out, err = run(capsys, "down")
    assert code == 1 and "Delete every resource of stack 'clitest' (azure)? [y/N]" in out
    assert err == "nothing was deleted\n" and sorted(azure_stack.stack_resources("clitest")) == azure_stack.created


@pytest.mark.parametrize("how", ["terminal-yes", "flag"])
def test_down_deletes_when_confirmed(azure_stack, capsys, monkeypatch, home, how):
    monkeypatch.setattr(sys, "stdin", Terminal("y\n") if how == "terminal-yes" else io.StringIO(""))
    code, out, _ = run(capsys, "--json", "down", *(["--yes"] if how == "flag" else []))
    assert code == 0 and len(json.loads(out.split("[y/N] ")[-1])["removed"]) >= 6
    assert azure_stack.stack_resources("clitest") == [] and not (home.state / "clitest.json").exists()


# -- up, lab and errors -------------------------------------------------------------------------------
def test_up_prints_the_urls_and_how_to_trust_the_ca(home, capsys, monkeypatch):
    home()
    result = {"ok": True, "hosts": [{"url": "https://192.0.2.5/"}, {"url": "https://192.0.2.6/"}], "ca": "/x/ca.pem"}
    monkeypatch.setattr(orchestrate, "up", lambda stack, progress, config_path: result)
    code, out, _ = run(capsys, "up")
    assert code == 0 and out == ("ready:\nhttps://192.0.2.5/\nhttps://192.0.2.6/\n"
                                 "trust the stack CA once: curl --cacert /x/ca.pem https://192.0.2.5/\n")
    failed = dict(result, ok=False, ca=None, hosts=[
        {"name": "demo-1", "url": "https://192.0.2.5/", "problem": "Open WebUI answered 503 on /health"},
        {"name": "demo-2", "url": "https://192.0.2.6/", "problem": None}])
    monkeypatch.setattr(orchestrate, "up", lambda stack, progress, config_path: failed)
    code, out, err = run(capsys, "up")
    assert (code, out, err) == (1, "", "error: demo-1: Open WebUI answered 503 on /health\n")


@pytest.mark.parametrize("error", [CloudError("azure: quota exceeded"), orchestrate.ConvergeError("converge failed"),
                                   orchestrate.PreflightError("dns points elsewhere"), lab.LabError("need root")])
def test_failures_are_one_line_and_exit_1(home, capsys, monkeypatch, error):
    home()

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(orchestrate, "up", fail)
    assert run(capsys, "up") == (1, "", f"error: {error}\n")


def test_interrupt_says_how_to_resume(home, capsys, monkeypatch):
    home()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(orchestrate, "status", interrupted)
    code, out, err = run(capsys, "status")
    assert code == 1 and err.startswith("interrupted: run the same command again to resume")


def test_lab_commands_print_hosts(home, capsys, monkeypatch):
    home("lab")
    hosts = [{"name": "clitest-1", "address": "10.213.0.10", "user": "root"}]
    seen = []
    monkeypatch.setattr(lab, "up", lambda stack, progress: seen.append(stack.lab.hosts) or hosts)
    monkeypatch.setattr(lab, "down", lambda name, progress: seen.append(name) or [])
    monkeypatch.setattr(lab, "list_hosts", lambda name: seen.append(name) or [dict(hosts[0], running=False)])
    assert run(capsys, "lab", "up", "--hosts", "3")[:2] == (0, "clitest-1\t10.213.0.10\n")
    assert run(capsys, "lab", "down")[:2] == (0, "nothing to remove\n")
    assert run(capsys, "lab", "down", "--all")[:2] == (0, "nothing to remove\n")
    assert run(capsys, "lab", "list")[:2] == (0, "clitest-1\t10.213.0.10\tstopped\n")
    code, out, _ = run(capsys, "--json", "lab", "list", "--all")
    assert code == 0 and json.loads(out)[0]["name"] == "clitest-1"
    assert seen == [3, "clitest", None, "clitest", None]
    code, _, err = run(capsys, "lab", "up", "--hosts", "0")
    assert code == 2 and "lab.hosts" in err


def test_down_reads_no_answer_from_a_pipe(azure_stack, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, err = run(capsys, "down")
    assert (code, out) == (2, "") and "pass --yes" in err
    assert sorted(azure_stack.stack_resources("clitest")) == azure_stack.created
