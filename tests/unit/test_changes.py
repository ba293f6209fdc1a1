"""deploy/changes.py through deploy/present.py's helpers, run by pyinfra against its ``@fake`` connector: where the
read shows the difference, only the commands it needs are sent; where it cannot tell, pyinfra's operation reads
the host itself."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.operations import run_ops
from pyinfra.connectors.fake import FakeConnector

from ollastack.deploy.present import NOTHING, Present, directory, link, put, service_running

TEXT = "managed\n"
SHA1 = hashlib.sha1(TEXT.encode()).hexdigest()


def run(deploy) -> tuple[list[str], list[str]]:
    """(commands sent, an upload as ``UPLOAD <path>`` in its place among them; names of the operations that
    changed) of ``deploy`` on one fake host."""
    inventory = Inventory(([("@fake/host", {"fake_delay": 0, "fake_delay_jitter": 0})], {}))
    state = State(inventory, Config())
    connect_all(state)
    fake = inventory.get_host("@fake/host")
    real_put = FakeConnector.put_file

    def put_file(self, source, remote, *args, **kwargs):
        self.executed_commands.append(f"UPLOAD {remote}")
        return real_put(self, source, remote, *args, **kwargs)

    FakeConnector.put_file = put_file
    try:
        add_deploy(state, deploy)
        run_ops(state)
    finally:
        FakeConnector.put_file = real_put
    changed = [list(state.op_meta[h].names)[0] for h in state.get_op_order()
               if h in state.ops[fake] and state.ops[fake][h].operation_meta.did_change()]
    # pyinfra asks the host once for its temporary directory, before its first upload of a run.
    commands = [c for c in fake.connector.executed_commands if not c.startswith('if [ -n "$TMPDIR" ]')]
    return commands, changed


def read(paths: dict, asked: list[str], services: dict | None = None) -> Present:
    return Present({**NOTHING.found, "paths": paths, "services": services or {}},
                   asked={"paths": asked, "services": list(services or {})})


DIRECTORY = {"/etc/x": {"kind": "directory", "mode": "755", "user": "root", "group": "root"}}


def test_a_missing_file_in_a_directory_read_is_created_with_its_mode_then_filled_and_nothing_read_again():
    present = read(DIRECTORY, ["/etc/x", "/etc/x/f"])
    commands, changed = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/x/f", mode="0644"))
    assert (commands, changed) == (["install -m 644 -- /dev/null /etc/x/f", "UPLOAD /etc/x/f"], ["f"])


def test_a_missing_file_others_may_not_read_has_its_owner_and_mode_before_its_content_arrives():
    present = read(DIRECTORY, ["/etc/x", "/etc/x/secret"])
    commands, _ = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/x/secret", mode="0640",
                                  user="svc", group="svc"))
    assert commands == ["install -m 640 -o svc -g svc -- /dev/null /etc/x/secret", "UPLOAD /etc/x/secret"]


def test_a_file_whose_parent_was_not_read_creates_it_owned_as_files_put_does():
    present = read({}, ["/srv/a b;c/f"])
    commands, _ = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/srv/a b;c/f", mode="0644",
                                  user="svc", group="svc"))
    assert commands == ["{ [ -d '/srv/a b;c' ] || { mkdir -p -- '/srv/a b;c' && chown svc:svc '/srv/a b;c' ; } ; } && "
                        "install -m 644 -o svc -g svc -- /dev/null '/srv/a b;c/f'", "UPLOAD /srv/a b;c/f"]


def test_only_a_changed_mode_is_set_without_an_upload():
    present = read({"/etc/f": {"kind": "file", "mode": "644", "user": "root", "group": "root", "sha1": SHA1}}, ["/etc/f"])
    commands, changed = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600"))
    assert (commands, changed) == (["chmod 600 /etc/f"], ["f"])


def test_a_changed_file_is_uploaded_over_the_old_one_keeping_it_in_place_and_its_mode():
    present = read({"/etc/f": {"kind": "file", "mode": "600", "user": "root", "group": "root", "sha1": "0" * 40}},
                   ["/etc/f"])
    commands, _ = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600"))
    assert commands == ["UPLOAD /etc/f"]


@pytest.mark.parametrize("entry", [{"mode": "644", "user": "root"}, {"mode": "600", "user": "svc"}],
                         ids=["another mode", "another owner"])
def test_a_changed_file_with_another_mode_or_owner_gets_both_set_after_the_upload(entry):
    present = read({"/etc/f": {"kind": "file", "group": "root", "sha1": "0" * 40, **entry}}, ["/etc/f"])
    commands, _ = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600", user="root",
                                  group="root"))
    assert commands == ["UPLOAD /etc/f", "chown root:root /etc/f && chmod 600 /etc/f"]


def test_a_file_already_in_place_sends_nothing():
    present = read({"/etc/f": {"kind": "file", "mode": "600", "user": "root", "group": "root", "sha1": SHA1}}, ["/etc/f"])
    assert run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600")) == ([], [])


@pytest.mark.parametrize("present", [
    read({"/etc/f": {"kind": "directory", "mode": "755", "user": "root", "group": "root"}}, ["/etc/f"]),
    read({"/etc/f": {"kind": "link", "target": "/elsewhere"}}, ["/etc/f"]),
    read({}, []),   # the path was never read: its absence means nothing
    NOTHING,
], ids=["a directory there", "a link there", "not read", "unknown"])
def test_what_the_read_cannot_settle_is_left_to_pyinfras_own_operation(present):
    commands, _ = run(lambda: put(present, name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600"))
    assert any(c.startswith("! (test -e /etc/f") for c in commands), commands


def test_a_link_read_as_missing_is_made_in_one_command_and_any_other_left_to_pyinfra():
    commands, changed = run(lambda: link(read({}, ["/etc/a b/l"]), name="l", path="/etc/a b/l", target="/etc/t"))
    assert (commands, changed) == (["mkdir -p -- '/etc/a b' && ln -s -- /etc/t '/etc/a b/l'"], ["l"])
    # Another link there, or the path not read: files.link reads the host itself first.
    for present in (read({"/etc/l": {"kind": "link", "target": "/elsewhere"}}, ["/etc/l"]), read({}, [])):
        commands, _ = run(lambda: link(present, name="l", path="/etc/l", target="/etc/t"))
        assert commands[0].startswith("! (test -e /etc/l") and commands[-1] == "ln -s /etc/t /etc/l", commands


def test_a_missing_directory_is_made_with_its_owner_and_mode_in_one_command():
    present = read({}, ["/var/lib/x"])
    commands, changed = run(lambda: directory(present, name="d", path="/var/lib/x", mode="0750", user="x", group="x"))
    assert (commands, changed) == (["mkdir -p -- /var/lib/x && chown x:x /var/lib/x && chmod 750 /var/lib/x"], ["d"])


def test_a_directory_with_another_mode_is_only_chmodded():
    present = read({"/var/lib/x": {"kind": "directory", "mode": "777", "user": "root", "group": "root"}}, ["/var/lib/x"])
    assert run(lambda: directory(present, name="d", path="/var/lib/x", mode="0755"))[0] == ["chmod 755 /var/lib/x"]


@pytest.mark.parametrize(("state", "command"), [
    (("dead", "enabled"), "systemctl start nginx.service"),
    (("running", "disabled"), "systemctl enable nginx.service"),
    (("dead", "disabled"), "systemctl enable --now nginx.service"),
])
def test_a_service_read_as_stopped_or_disabled_gets_only_what_it_lacks(state, command):
    present = read({}, [], {"nginx.service": state})
    assert run(lambda: service_running(present, name="s", service="nginx")) == ([command], ["s"])


def test_a_service_not_read_is_left_to_systemd_service():
    commands, _ = run(lambda: service_running(NOTHING, name="s", service="nginx"))
    assert any("systemctl show" in c for c in commands), commands


def test_a_running_enabled_service_sends_nothing():
    present = read({}, [], {"nginx.service": ("running", "enabled")})
    assert run(lambda: service_running(present, name="s", service="nginx")) == ([], [])


def test_a_hostile_path_reaches_the_shell_as_one_quoted_word():
    """A newline, a quote, $(...) and a leading '-' in a path component stay inside one shell word."""
    hostile = "/srv/-x\n'$(reboot)"
    commands, _ = run(lambda: directory(read({}, [hostile]), name="d", path=hostile, mode="0700"))
    assert commands == [f"mkdir -p -- {shlex.quote(hostile)} && chmod 700 {shlex.quote(hostile)}"]
    commands, _ = run(lambda: put(read({}, [f"{hostile}/f"]), name="f", src=StringIO(TEXT), dest=f"{hostile}/f", mode="0600"))
    assert commands[0] == (f"{{ [ -d {shlex.quote(hostile)} ] || {{ mkdir -p -- {shlex.quote(hostile)} ; }} ; }} && "
                           f"install -m 600 -- /dev/null {shlex.quote(hostile + '/f')}")
    commands, _ = run(lambda: put(read({}, ["/etc/f"]), name="f", src=StringIO(TEXT), dest="/etc/f", mode="0600",
                                  user=hostile, group=hostile))
    assert commands[0].endswith(f" && install -m 600 -o {shlex.quote(hostile)} -g {shlex.quote(hostile)} -- /dev/null /etc/f")


def test_a_missing_user_is_created_in_one_command_and_an_existing_one_left_to_pyinfra(monkeypatch):
    from ollastack.deploy import present as present_module

    absent = Present({**NOTHING.found, "paths": {}, "users": {}}, asked={"paths": ["/srv/svc home"], "users": ["svc"]})
    commands, changed = run(lambda: present_module.user(absent, name="svc user", user="svc", home="/srv/svc home",
                                                        shell="/bin/false", system=True))
    options = "-d '/srv/svc home' -s /bin/false -r -m"
    assert commands == [f"if getent group svc >/dev/null; then useradd {options} -g svc svc ; else useradd {options} svc ; fi"]
    assert changed == ["svc user"]
    # A home directory already there (its owner unknown), a user that exists, or nothing read: server.user,
    # which reads the host's users and groups itself, sets what differs.
    home_there = Present({**NOTHING.found, "paths": {"/srv/svc home": {"kind": "directory", "mode": "755", "user": "root",
                                                                      "group": "root"}}, "users": {}},
                         asked={"paths": ["/srv/svc home"], "users": ["svc"]})
    other_shell = Present({**NOTHING.found, "paths": {}, "users": {"svc": {"home": "/srv/svc home", "shell": "/bin/sh"}}},
                          asked={"paths": ["/srv/svc home"], "users": ["svc"]})
    calls = []
    monkeypatch.setattr(present_module.server, "user", lambda **arguments: calls.append(arguments))
    for present in (home_there, other_shell, NOTHING):
        present_module.user(present, name="svc user", user="svc", home="/srv/svc home", shell="/bin/false", system=True)
    assert calls == [{"name": "svc user", "user": "svc", "home": "/srv/svc home", "shell": "/bin/false", "system": True,
                      "ensure_home": True, "create_home": True}] * 3


def test_a_service_not_enabled_yet_is_enabled_and_restarted_in_one_command_without_a_reload_before():
    from pyinfra.operations import server as shell_ops

    from ollastack.deploy.services import restart_when_changed

    fresh = read({}, [], services={"svc.service": ("dead", "disabled")})

    def deploy():
        changed = shell_ops.shell(name="unit written", commands=["true"])
        restart_when_changed("Svc", "svc", changes=[changed], health_url="http://127.0.0.1:1/", wait_s=1, present=fresh)

    commands, changed = run(deploy)
    assert "systemctl daemon-reload" not in commands
    assert commands[:2] == ["true", "systemctl enable svc.service && systemctl restart svc.service"]
    assert changed[:2] == ["unit written", "Restart Svc"] and "Svc running and enabled" not in changed


def test_an_enabled_service_gets_the_reload_first(monkeypatch):
    import types

    from ollastack.deploy import services
    from ollastack.deploy.present import UNCHANGED

    enabled = Present({**NOTHING.found, "services": {"svc.service": ("running", "enabled")}}, asked={"services": ["svc"]})
    assert not enabled.not_enabled("svc") and not NOTHING.not_enabled("svc")
    assert read({}, [], services={"svc.service": ("running", "disabled")}).not_enabled("svc")
    calls = []
    monkeypatch.setattr(services, "systemd", types.SimpleNamespace(
        daemon_reload=lambda **arguments: calls.append(arguments["name"]),
        service=lambda **arguments: calls.append(arguments["name"]) or UNCHANGED))
    changed = types.SimpleNamespace(did_change=lambda: True)
    run(lambda: services.restart_when_changed("Svc", "svc", changes=[changed], health_url="http://127.0.0.1:1/",
                                              wait_s=1, present=enabled))
    assert calls == ["Reload systemd units", "Restart Svc"]


def test_nothing_that_may_change_makes_no_reload_restart_nor_wait_at_all():
    """Skipped operations would still cost pyinfra milliseconds each to place in the run's order."""
    from ollastack.deploy import services
    from ollastack.deploy.present import UNCHANGED

    enabled = Present({**NOTHING.found, "services": {"svc.service": ("running", "enabled")}}, asked={"services": ["svc"]})
    ops: list = []

    def deploy():
        from pyinfra import state
        restart = services.restart_when_changed("Svc", "svc", changes=[UNCHANGED, UNCHANGED], wait=False,
                                                health_url="http://127.0.0.1:1/", wait_s=1, present=enabled)
        services.wait_until_healthy("Svc", "svc", restart, "http://127.0.0.1:1/", 1)
        ops.extend(state.get_op_order())
        assert restart is UNCHANGED

    assert run(deploy) == ([], [])
    assert ops == []
