"""``ollastack plan`` and the plan ``up`` makes first, for Alibaba: the real ECS/VPC SDK clients against
the signed-request stand-in (tests/support/alibaba_emulator.py: DescribePrice, DescribeAvailableResource)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from ollastack import planning
from ollastack.cloud import Progress, alibaba, alibaba_preview
from ollastack.state import StackState
from tests.integration.test_alibaba import FAST, _env, _loopback_only, emu, keys, make_stack, up  # noqa: F401
from tests.support.alibaba_emulator import DISK_PRICES
from tests.support.repo import REPO

KINDS = ["zone", "image", "key_pair", "vpc", "vswitch", "security_group", "instance"]
# ecs.gn7i-c8g1.2xlarge with the default 100 GiB cloud_essd system disk; bandwidth is paid by traffic.
HOURLY = 11.58 + DISK_PRICES["cloud_essd"] * 100


def writes(emu):
    """Calls that change something: every action that is not a Describe*."""
    return [r["action"] for r in emu.requests if not r["action"].startswith("Describe")]


def moved(stack):
    """The stack after the admins moved to another network."""
    return stack.model_copy(update={"access": stack.access.model_copy(update={"admin_cidrs": ["203.0.113.0/24"]})})


def actions(plan):
    return {c.kind: c.action for c in plan.changes}


def test_plan_of_a_new_stack_creates_everything_and_prices_it(emu, keys):
    plan = planning.make(make_stack(emu, keys))

    assert [c.kind for c in plan.changes] == KINDS
    assert actions(plan) == {"zone": "look-up", "image": "look-up", **{k: "create" for k in KINDS[2:]}}
    assert plan.changes[0].name == "cn-hangzhou-i"
    assert plan.problems == [] and plan.price.warnings == []
    assert plan.price.currency == "CNY" and "DescribePrice" in plan.price.source
    assert plan.price.hourly == pytest.approx(HOURLY) and plan.price.monthly == pytest.approx(HOURLY * 720)
    assert [line.hourly for line in plan.price.lines] == pytest.approx([11.58, DISK_PRICES["cloud_essd"] * 100, 0.0])
    (asked,) = emu.calls("DescribePrice")
    assert (asked["InstanceType"], asked["SystemDisk.Category"], asked["SystemDisk.Size"], asked["PriceUnit"]) == \
        ("ecs.gn7i-c8g1.2xlarge", "cloud_essd", "100", "Hour")
    (stock,) = emu.calls("DescribeAvailableResource")
    assert (stock["DestinationResource"], stock["InstanceChargeType"]) == ("InstanceType", "PostPaid")
    text = plan.render()
    assert f"{HOURLY:.4f} CNY/hour" in text and "ecs:RunInstances" in text
    assert plan.gpu[0] == "ecs.gn7i-c8g1.2xlarge: NVIDIA A10, 24 GB GPU memory"
    assert writes(emu) == []
    assert not StackState.load("demo").path.exists()


def test_plan_after_up_has_nothing_to_create_and_writes_nothing(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    state = StackState.load("demo").path.read_text()
    before = len(writes(emu))

    plan = planning.make(stack)

    assert {k: a for k, a in actions(plan).items() if a != "look-up"} == {k: "no change" for k in KINDS[2:]}
    assert plan.summary().startswith("plan: 0 to create, 0 to update, 5 unchanged")
    assert len(writes(emu)) == before
    assert StackState.load("demo").path.read_text() == state


def test_changed_admin_cidr_is_an_update_of_the_security_group(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    plan = planning.make(moved(stack))
    group = next(c for c in plan.changes if c.kind == "security_group")
    assert group.action == "update"
    assert "allow TCP 22 from 203.0.113.0/24" in group.detail and "revoke TCP 22 from 198.51.100.7/32" in group.detail
    assert sum(c.action == "update" for c in plan.changes) == 1


def test_sold_out_type_stops_plan_and_up_before_any_write_naming_what_works(emu, keys):
    emu.sold_out |= {("cn-hangzhou-i", "ecs.gn7i-c8g1.2xlarge"), ("cn-hangzhou-j", "ecs.gn7i-c8g1.2xlarge")}
    stack = make_stack(emu, keys)
    [problem] = planning.make(stack).problems
    assert "ecs.gn7i-c8g1.2xlarge has no stock in any zone of cn-hangzhou" in problem
    assert "ecs.gn6i-c4g1.xlarge" in problem and "ecs.g7.large" not in problem

    with pytest.raises(planning.PlanRefused, match="no stock"):
        planning.gate(stack, [].append)
    assert writes(emu) == []


def test_pinned_zone_without_stock_names_the_zones_that_have_it(emu, keys):
    emu.sold_out.add(("cn-hangzhou-i", "ecs.gn7i-c8g1.2xlarge"))
    [problem] = planning.make(make_stack(emu, keys, zone="cn-hangzhou-i")).problems
    assert "alibaba.zone cn-hangzhou-i has no stock" in problem and "zones with stock: cn-hangzhou-j" in problem
    plan = planning.make(make_stack(emu, keys))
    assert plan.problems == [] and plan.changes[0].name == "cn-hangzhou-j"


def test_unknown_type_price_is_a_warning_and_the_resources_are_still_shown(emu, keys):
    emu.zones = {**emu.zones, "cn-hangzhou-k": ["ecs.gn8is.2xlarge"]}
    plan = planning.make(make_stack(emu, keys, instance_type="ecs.gn8is.2xlarge"))
    assert plan.problems == [] and [c.kind for c in plan.changes] == KINDS
    [warning] = plan.price.warnings
    assert warning.startswith("price: ") and "InvalidInstanceType.ValueNotSupported" in warning
    assert plan.price.hourly is None and "no price found" in plan.summary()


def test_price_api_error_is_a_warning(emu, keys):
    emu.inject("DescribePrice", "error", code="InternalError.Billing")
    plan = planning.make(make_stack(emu, keys))
    assert [c.kind for c in plan.changes] == KINDS and plan.problems == []
    assert len(plan.price.warnings) == 1 and "InternalError.Billing" in plan.price.warnings[0]


def test_price_above_the_limit_stops_up_before_any_write(emu, keys):
    stack = make_stack(emu, keys)
    limited = stack.model_copy(update={"cloud": stack.cloud.model_copy(update={"max_hourly_price": 10})})
    lines: list[str] = []
    with pytest.raises(planning.PlanRefused, match=rf"{HOURLY:.4f} CNY/hour, more than cloud.max_hourly_price 10"):
        planning.gate(limited, lines.append)
    assert lines[0].startswith("plan: 5 to create")
    assert writes(emu) == []


def test_every_call_of_plan_up_and_down_is_in_the_ram_permissions(emu, keys):
    stack = make_stack(emu, keys)
    planning.make(stack)
    up(stack)
    planning.make(moved(stack))
    alibaba.create(moved(stack), StackState.load("demo", "alibaba"), Progress(stream=io.StringIO()), FAST)
    alibaba.destroy(stack, StackState.load("demo"), Progress(stream=io.StringIO()), FAST)
    called = {f"{r['product']}:{r['action']}" for r in emu.requests}
    assert called - set(alibaba_preview.PERMISSIONS) == set()
    assert {"ecs:RevokeSecurityGroup", "ecs:DescribePrice", "vpc:DeleteVpc"} <= called


def test_cli_plan_exit_codes(emu, keys, tmp_path):
    public, private = keys
    config = tmp_path / "stack.toml"

    def run(extra=""):
        config.write_text(f'[stack]\nname = "demo"\nprovider = "alibaba"\n[access]\nssh_public_key = "{public}"\n'
                          f'ssh_private_key = "{private}"\nadmin_cidrs = ["198.51.100.7/32"]\n[alibaba]\n'
                          f'ecs_endpoint = "{emu.ecs_url}"\nvpc_endpoint = "{emu.vpc_url}"\n{extra}')
        return subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), "--json", "plan"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)

    ok = run()
    assert ok.returncode == 0, ok.stderr
    payload = json.loads(ok.stdout)
    assert payload["counts"]["create"] == 5 and payload["price"]["currency"] == "CNY"
    emu.sold_out.add(("cn-hangzhou-j", "ecs.gn7i-c8g1.2xlarge"))
    failed = run('zone = "cn-hangzhou-j"\n')
    assert failed.returncode == 1 and json.loads(failed.stdout)["problems"]
    assert "Traceback" not in failed.stderr
    assert run('instance_type = "not a type"\n').returncode == 2
    assert writes(emu) == []


def test_up_uses_the_zone_the_plan_names(emu, keys):
    emu.sold_out.add(("cn-hangzhou-i", "ecs.gn7i-c8g1.2xlarge"))
    stack = make_stack(emu, keys)
    assert planning.make(stack).changes[0].name == "cn-hangzhou-j"
    up(stack)
    (run,) = emu.calls("RunInstances")
    assert run["ZoneId"] == "cn-hangzhou-j"
