"""What ``ollastack plan`` needs for lab and static stacks, without a host: the scratch view of this machine's
files (what ``up`` would write lands there, the real files stay as they are), pyinfra's dry-run plan per
host, how conditional operations are settled (``deploy/conditions.py``, on pyinfra's ``@fake`` connector),
and how the plan shows it."""

from __future__ import annotations

import json
import os

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from ollastack import dryrun, planning
from ollastack.certs import SSL_ENV
from ollastack.deploy.conditions import settle_conditions
from ollastack.state import STATE_ENV, write_atomic


def test_scratch_view_takes_every_write_and_leaves_the_real_files(tmp_path, monkeypatch):
    state, ssl = tmp_path / "state", tmp_path / "ssl"
    (ssl / "demo").mkdir(parents=True)
    state.mkdir()
    (state / "demo.openwebui-admin-password").write_text("old\n")
    (state / "demo.known_hosts").write_text("10.0.0.4 ssh-ed25519 AAAA\n")
    (state / "demo.lock").write_text("123\n")
    (ssl / "demo" / "ca.pem").write_text("ca\n")
    monkeypatch.setenv(STATE_ENV, str(state))
    monkeypatch.setenv(SSL_ENV, str(ssl))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with dryrun.scratch_files("demo") as pairs:
        scratch_state = pairs[0][1]
        assert os.environ[STATE_ENV] == str(scratch_state) and os.environ[SSL_ENV] != str(ssl)
        assert not (scratch_state / "demo.lock").exists()
        write_atomic(scratch_state / "demo.openwebui-admin-password", "new\n")
        with open(scratch_state / "demo.known_hosts", "a") as known:   # as ssh records a new host key
            known.write("10.0.0.5 ssh-ed25519 BBBB\n")
        write_atomic(pairs[1][1] / "demo-1.pem", "leaf\n")
        write_atomic(pairs[1][1] / "ca.pem", "ca\n")
        found = [item for real, scratch in pairs for item in dryrun.written(real, scratch)]
    assert found == [(state / "demo.known_hosts", dryrun.UPDATE), (state / "demo.openwebui-admin-password", dryrun.UPDATE),
                     (ssl / "demo" / "demo-1.pem", dryrun.CREATE)]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert os.environ[STATE_ENV] == str(state) and os.environ[SSL_ENV] == str(ssl)
    assert not scratch_state.exists()


def test_dry_run_plan_by_host_keeps_the_order_and_marks_conditional_operations():
    plan = [{"name": "Ollama | Ollama settings (override.conf)", "hosts_with_change": ["10.0.0.4"],
             "hosts_with_conditional_change": []},
            {"name": "nginx | nginx site", "hosts_with_change": [], "hosts_with_conditional_change": []},
            {"name": "Ollama | Restart Ollama", "hosts_with_change": [], "hosts_with_conditional_change": ["10.0.0.4"]},
            {"name": "TLS | Server private key", "hosts_with_change": ["10.0.0.5"], "hosts_with_conditional_change": []}]
    assert dryrun.by_host(plan) == {
        "10.0.0.4": [{"name": "Ollama | Ollama settings (override.conf)", "conditional": False},
                     {"name": "Ollama | Restart Ollama", "conditional": True}],
        "10.0.0.5": [{"name": "TLS | Server private key", "conditional": False}]}


def conditional_plan(deploy) -> dict[str, list[str]]:
    """Each operation of ``deploy`` on a ``@fake`` host and the hosts pyinfra's dry-run plan lists with a
    conditional change (what ``pyinfra_cli.prints.build_plan_json`` reads; importing pyinfra_cli would patch
    this test process with gevent)."""
    state = State(Inventory((["@fake/dry-host"], {})), Config())
    connect_all(state)
    add_deploy(state, deploy)
    plan = {}
    for op_hash in state.get_op_order():
        data = {host.name: state.get_op_data_for_host(host, op_hash) for host in state.inventory.iter_activated_hosts()}
        plan[next(iter(state.op_meta[op_hash].names))] = [
            name for name, op in data.items() if op.operation_meta._maybe_is_change and op.global_arguments["_if"]]
    return plan


def test_only_conditions_that_would_hold_stay_among_the_changes():
    def deploy():
        first = server.shell(name="changes", commands=["true"])
        server.shell(name="after it (bound did_change)", commands=["true"], _if=first.did_change)
        server.shell(name="after it (any_changed)", commands=["true"], _if=any_changed(first))
        never = server.shell(name="never", commands=["true"], _if=lambda: False)
        server.shell(name="after never", commands=["true"], _if=never.did_change)
        server.shell(name="after never or it", commands=["true"], _if=lambda: never.did_change() or first.did_change())
        settle_conditions()

    host = ["@fake/dry-host"]
    assert conditional_plan(deploy) == {"changes": [], "after it (bound did_change)": host, "after it (any_changed)": host,
                                        "never": [], "after never": [], "after never or it": host}


def test_without_settling_pyinfra_counts_every_conditional_operation():
    """What ``settle_conditions`` is for: pyinfra alone lists "after never" as a change."""
    def deploy():
        never = server.shell(name="never", commands=["true"], _if=lambda: False)
        server.shell(name="after never", commands=["true"], _if=never.did_change)

    assert conditional_plan(deploy) == {"never": ["@fake/dry-host"], "after never": ["@fake/dry-host"]}


def test_plan_shows_each_host_s_operations_and_count():
    plan = planning.Plan("demo", "lab", [planning.Change("host", "demo-1", planning.UPDATE, "10.0.0.4; 2 operations would change"),
                                         planning.Change("host", "demo-2", planning.SAME, "10.0.0.5; no changes")],
                         hosts=[planning.HostChanges("demo-1", "10.0.0.4", [
                             {"name": "Ollama | Ollama settings (override.conf)", "conditional": False},
                             {"name": "Ollama | Restart Ollama", "conditional": True}]),
                             planning.HostChanges("demo-2", "10.0.0.5")])
    text = plan.render()
    assert ("converge (pyinfra --dry):\n  demo-1 (10.0.0.4): 2 operations would change\n"
            "    Ollama | Ollama settings (override.conf)\n    Ollama | Restart Ollama  (after a change above)\n"
            "  demo-2 (10.0.0.5): no changes\n") in text
    assert text.splitlines()[-1] == "plan: 0 to create, 1 to update, 1 unchanged; 2 operations would change on 1 of 2 hosts"
    payload = json.loads(json.dumps(plan.to_json()))
    assert [(h["name"], h["changes"]) for h in payload["hosts"]] == [("demo-1", 2), ("demo-2", 0)]
    assert payload["hosts"][0]["operations"][1] == {"name": "Ollama | Restart Ollama", "conditional": True}
