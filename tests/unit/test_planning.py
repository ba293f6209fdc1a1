"""``ollastack plan`` for a static stack (its hosts; nothing to create), the plan's text and JSON, and the
price arithmetic (per hour, per 30-day month, partial when a line has no price)."""

from __future__ import annotations

import json

import pytest

from ollastack import cli, planning
from ollastack.config import load_stack
from ollastack.pricing import HOURS_PER_MONTH, Price, PriceLine, standard_ssd_tier


@pytest.fixture
def static_stack(tmp_path, monkeypatch):
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBlP3mFz2Gz3Jr1NPx7Ov1b4z9n0Yp1xX2y3z4a5b6c7 t@t\n")
    private.write_text("key\n")
    private.chmod(0o600)
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "plantest"\nprovider = "static"\n[static]\nhosts = ["192.0.2.10", "192.0.2.11"]\n'
                      f'[access]\nadmin_cidrs = ["198.51.100.7/32"]\nssh_public_key = "{public}"\n'
                      f'ssh_private_key = "{private}"\n')
    return config


def test_static_plan_without_a_dry_run_lists_the_hosts(static_stack, tmp_path):
    """``up``'s own plan (``gate``): the hosts, nothing to create, no dry run."""
    plan = planning.make(load_stack(static_stack))
    assert [(c.name, c.action) for c in plan.changes] == [("192.0.2.10", planning.SAME), ("192.0.2.11", planning.SAME)]
    assert plan.summary() == "plan: 0 to create, 0 to update, 2 unchanged" and plan.price is None


def test_static_plan_whose_dry_run_fails_exits_1_and_writes_nothing(static_stack, capsys, tmp_path):
    """The key is no key: pyinfra's dry run fails before any host is reached; the hosts stay listed, not compared."""
    assert cli.main(["--config", str(static_stack), "plan"]) == 1
    out = capsys.readouterr().out
    assert "unknown    host  192.0.2.10  (192.0.2.10; not compared)" in out and "192.0.2.11" in out
    assert "error: the dry run failed on at least one host (pyinfra exit 1)" in out
    assert cli.main(["--config", str(static_stack), "--json", "plan"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and payload["price"] is None and payload["hosts"] == []
    assert [c["name"] for c in payload["changes"]] == ["192.0.2.10", "192.0.2.11"]
    assert not (tmp_path / "state").exists() or not [p for p in (tmp_path / "state").iterdir() if p.name != ".gitignore"]
    assert not (tmp_path / "ssl").exists()


def test_plan_help_says_it_touches_nothing(capsys):
    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    out = capsys.readouterr().out
    assert "Only reads: no cloud write, no state file, no host." in out and "exit codes:" in out


def test_price_per_hour_and_month_and_a_partial_price():
    price = Price("USD", "test", [PriceLine("vm", 0.5), PriceLine("disk", 0.01)])
    assert price.complete and price.hourly == pytest.approx(0.51)
    assert price.monthly == pytest.approx(0.51 * HOURS_PER_MONTH) and HOURS_PER_MONTH == 720
    assert price.summary() == "0.5100 USD/hour, 367.20 USD/month (test)"
    price.lines.append(PriceLine("ip", None))
    assert not price.complete and "partial" in price.summary()
    assert Price("USD", "test", [PriceLine("vm", None)]).summary() == "no price found (test)"


def test_plan_problems_are_errors_in_the_text():
    plan = planning.Plan("s", "azure", [planning.Change("virtual_machine", "s-vm", planning.CREATE)],
                         problems=["azure.vm_size X is not offered in westeurope"])
    text = plan.render()
    assert "error: azure.vm_size X is not offered in westeurope" in text
    assert plan.to_json()["ok"] is False


@pytest.mark.parametrize("size, tier", [(30, "E4"), (32, "E4"), (64, "E6"), (65, "E10"), (4095, "E50")])
def test_standard_ssd_tier_is_the_smallest_holding_the_disk(size, tier):
    assert standard_ssd_tier(size) == tier
