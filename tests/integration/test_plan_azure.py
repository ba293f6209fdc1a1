"""``ollastack plan`` and the plan ``up`` makes first, for Azure: the real SDK clients against the ARM
stand-in (tests/support/azure_emulator.py, resource SKUs and vCPU usages included) and the real price
client against the Retail Prices stand-in (tests/support/azure_prices.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ollastack import planning, pricing
from ollastack.state import StackState
from tests.integration.test_azure import ADMIN, _loopback_only, arm, ca, keys, make_stack, up  # noqa: F401
from tests.support.azure_prices import PUBLIC_IP_HOURLY, RetailPrices
from tests.support.repo import REPO

KINDS = ["resource_group", "virtual_network", "network_security_group", "public_ip", "network_interface",
         "virtual_machine"]
# What the NC4as_T4_v3 stack costs per hour in the stand-in's catalogue: VM, E6 disk (4.80 a month), IP.
HOURLY = 0.526 + 4.80 / 720 + PUBLIC_IP_HOURLY


@pytest.fixture
def prices(ca, arm, monkeypatch):
    with RetailPrices(ca) as stand_in:
        monkeypatch.setenv(pricing.AZURE_PRICES_ENV, stand_in.url)
        yield stand_in


def writes(arm):
    """Requests that change something in ARM (the sign-in's token POST is not one)."""
    return [(r.method, r.path) for r in arm.seen() if r.method != "GET" and "/oauth2/" not in r.path]


def actions(plan):
    return {c.kind: c.action for c in plan.changes}


def test_plan_of_a_new_stack_creates_everything_and_prices_it(arm, prices, make_stack):
    stack = make_stack()
    plan = planning.make(stack)

    assert [c.kind for c in plan.changes] == KINDS
    assert set(actions(plan).values()) == {"create"}
    assert plan.problems == [] and plan.price.warnings == []
    assert plan.price.currency == "USD" and "Azure Retail Prices API" in plan.price.source
    assert [round(line.hourly, 6) for line in plan.price.lines] == [0.526, round(4.80 / 720, 6), PUBLIC_IP_HOURLY]
    assert plan.price.hourly == pytest.approx(HOURLY)
    assert plan.price.monthly == pytest.approx(HOURLY * 720)
    text = plan.render()
    assert "create" in text and f"{HOURLY:.4f} USD/hour" in text and f"{HOURLY * 720:.2f} USD/month" in text
    assert "Microsoft.Compute/virtualMachines/write" in text
    assert "Standard_NC4as_T4_v3: NVIDIA T4, 16 GB GPU memory" in text and "llama3.2:1b: about 0.6 GB" in text
    # Every query is filtered by service, region and pay-as-you-go; several pages were followed.
    assert all("armRegionName eq 'westeurope'" in f and "priceType eq 'Consumption'" in f for f in prices.filters)
    assert len(prices.filters) > 3
    assert writes(arm) == []
    assert not StackState.load("demo").path.exists()


def test_plan_after_up_has_nothing_to_create(arm, prices, make_stack):
    stack = make_stack()
    up(stack)
    state_before = StackState.load("demo").path.read_text()
    seen_before = len(writes(arm))

    plan = planning.make(stack)

    assert set(actions(plan).values()) == {"no change"}
    assert plan.summary().startswith("plan: 0 to create, 0 to update, 6 unchanged")
    assert len(writes(arm)) == seen_before
    assert StackState.load("demo").path.read_text() == state_before


def test_changed_admin_cidr_is_an_update_of_the_nsg_rules(arm, prices, make_stack):
    up(make_stack())
    plan = planning.make(make_stack(admin_cidrs=["203.0.113.0/24"]))

    nsg = next(c for c in plan.changes if c.kind == "network_security_group")
    assert nsg.action == "update"
    assert "allow-ssh-admin" in nsg.detail and "203.0.113.0/24" in nsg.detail
    assert {k: a for k, a in actions(plan).items() if k != "network_security_group"} == \
        {k: "no change" for k in KINDS if k != "network_security_group"}
    rules = arm.find("networkSecurityGroups")[0]["properties"]["securityRules"]
    assert next(r for r in rules if r["name"] == "allow-ssh-admin")["properties"]["sourceAddressPrefixes"] == ADMIN


def test_resource_deleted_behind_the_back_is_planned_again(arm, prices, make_stack):
    up(make_stack())
    [ip] = arm.find("publicIPAddresses")
    arm.remove(ip["id"])
    plan = planning.make(make_stack())
    change = next(c for c in plan.changes if c.kind == "public_ip")
    assert (change.action, change.detail) == ("create", "recorded in the state but gone")


@pytest.mark.parametrize("size, word", [("Standard_NC24ads_A100_v4", "NotAvailableForSubscription"),
                                        ("Standard_ND96asr_v4", "not offered")])
def test_size_that_cannot_be_created_stops_plan_and_up_before_any_write(arm, prices, make_stack, size, word):
    stack = make_stack(vm_size=size)
    plan = planning.make(stack)
    [problem] = plan.problems
    assert size in problem and word in problem
    # The alternatives are GPU sizes the subscription may use there, not the restricted one.
    assert "Standard_NC4as_T4_v3" in problem and "Standard_D2s_v5" not in problem
    assert problem.count("A100") == (1 if "A100" in size else 0)

    lines: list[str] = []
    with pytest.raises(planning.PlanRefused, match=size):
        planning.gate(stack, lines.append)
    assert writes(arm) == []


def test_vcpu_quota_too_small_stops_with_the_family(arm, prices, make_stack):
    arm.usages["standardNCASv3_T4Family"] = [12, 16]
    [problem] = planning.make(make_stack(vm_size="Standard_NC8as_T4_v3")).problems
    assert "standardNCASv3_T4Family" in problem and "4 left" in problem and "8 vCPUs" in problem
    assert planning.make(make_stack(vm_size="Standard_NC4as_T4_v3")).problems == []


def test_price_above_the_limit_stops_up_before_any_write(arm, prices, make_stack):
    cheap = make_stack()
    lines: list[str] = []
    limited = cheap.model_copy(update={"cloud": cheap.cloud.model_copy(update={"max_hourly_price": 0.5})})
    with pytest.raises(planning.PlanRefused, match=rf"{HOURLY:.4f} USD/hour, more than cloud.max_hourly_price 0.5"):
        planning.gate(limited, lines.append)
    assert lines[0].startswith("plan: 6 to create") and "USD/hour" in lines[0]
    assert writes(arm) == []
    generous = cheap.model_copy(update={"cloud": cheap.cloud.model_copy(update={"max_hourly_price": 0.6})})
    assert planning.gate(generous, lines.append).price.hourly == pytest.approx(HOURLY)


def test_unknown_size_price_is_a_warning_and_the_resources_are_still_shown(arm, prices, make_stack):
    # Offered in the location (the SKU list has it) but missing from the price list.
    arm.skus.append({**arm.skus[0], "name": "Standard_NC16as_T4_v3"})
    plan = planning.make(make_stack(vm_size="Standard_NC16as_T4_v3"))
    assert plan.problems == [] and [c.kind for c in plan.changes] == KINDS
    [warning] = plan.price.warnings
    assert "Standard_NC16as_T4_v3" in warning and "Retail Prices API" in warning
    assert not plan.price.complete and plan.price.hourly == pytest.approx(4.80 / 720 + PUBLIC_IP_HOURLY)
    assert "no price found" in plan.render()


def test_price_api_error_is_one_warning_line_never_a_traceback(arm, prices, make_stack):
    prices.fail(500, times=10)
    plan = planning.make(make_stack())
    assert [c.kind for c in plan.changes] == KINDS and plan.problems == []
    [warning] = plan.price.warnings
    assert warning.startswith("price: Azure Retail Prices API") and "500" in warning
    assert len(prices.filters) == 1          # the other lines were not asked of a failing API
    assert plan.price.hourly is None and "no price found" in plan.summary()


def test_meters_other_than_linux_pay_as_you_go_are_skipped(prices):
    items = pricing.retail_items({"serviceName": "Virtual Machines", "armRegionName": "westeurope",
                                  "armSkuName": "Standard_NC4as_T4_v3", "priceType": "Consumption"})
    # The stand-in pages two items at a time: all of them came back, Windows / Spot / Low Priority among them.
    assert len(items) == 5
    assert pricing._pay_as_you_go(items, "1 Hour")["retailPrice"] == 0.526


def cli(config, *args, env):
    return subprocess.run([sys.executable, "-m", "ollastack.cli", "--config", str(config), *args],
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)


def stack_file(tmp_path, arm, keys, extra=""):
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "azure"\n[access]\nssh_public_key = "{keys[0]}"\n'
                      f'ssh_private_key = "{keys[1]}"\nadmin_cidrs = ["198.51.100.7/32"]\n'
                      f'[azure]\nresource_manager_url = "{arm.url}"\n{extra}')
    return config


def test_cli_plan_json_and_exit_codes(arm, prices, keys, tmp_path):
    config = stack_file(tmp_path, arm, keys)
    result = cli(config, "--json", "plan", env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["ok"] and payload["counts"] == {"create": 6, "update": 0, "no change": 0}
    assert payload["price"]["hourly"] == pytest.approx(HOURLY) and payload["price"]["currency"] == "USD"

    bad = cli(stack_file(tmp_path, arm, keys, 'vm_size = "Standard_NC24ads_A100_v4"\n'), "plan", env=dict(os.environ))
    assert bad.returncode == 1
    assert "error: azure.vm_size Standard_NC24ads_A100_v4 cannot be created" in bad.stdout
    assert "Traceback" not in bad.stderr

    assert cli(stack_file(tmp_path, arm, keys, 'vm_size = "-"\n'), "plan", env=dict(os.environ)).returncode == 2
    assert writes(arm) == []


def test_cli_up_refuses_a_price_above_the_limit_before_any_write(arm, prices, keys, tmp_path):
    config = stack_file(tmp_path, arm, keys, "[cloud]\nmax_hourly_price = 0.1\n")
    result = cli(config, "up", env=dict(os.environ))
    assert result.returncode == 1
    assert "plan: 6 to create" in result.stderr
    assert "more than cloud.max_hourly_price 0.1" in result.stderr and "Traceback" not in result.stderr
    assert writes(arm) == []


def test_a_limit_with_no_price_found_refuses_up(arm, prices, make_stack):
    prices.fail(500, times=10)
    stack = make_stack()
    limited = stack.model_copy(update={"cloud": stack.cloud.model_copy(update={"max_hourly_price": 5})})
    with pytest.raises(planning.PlanRefused, match="price could not be found"):
        planning.gate(limited, [].append)
    assert writes(arm) == []
    # Without a limit the same failure is only a warning: up goes on.
    lines: list[str] = []
    assert planning.gate(stack, lines.append).problems == []
    assert any(line.startswith("warning: price: Azure Retail Prices API") for line in lines)


def test_prices_come_in_the_configured_currency_on_every_page(arm, prices, make_stack):
    plan = planning.make(make_stack(price_currency="EUR"))
    assert plan.price.currency == "EUR" and plan.price.warnings == []
    assert plan.price.hourly == pytest.approx(HOURLY * 0.9)
    assert "EUR/hour" in plan.summary()
    [warning, *_] = planning.make(make_stack(price_currency="XYZ")).price.warnings
    assert "400" in warning


def role_action(request) -> str | None:
    """The Azure role action an ARM request needs (None: sign-in and operation polling)."""
    path, verb = request.path, {"GET": "read", "PUT": "write", "DELETE": "delete"}.get(request.method)
    if verb is None or "/oauth2/" in path or "/.well-known/" in path or request.rtype == "operations":
        return None
    parts = path.strip("/").split("/")
    if "providers" in parts and parts[2].lower() != "providers":
        at = parts.index("providers")
        types = parts[at + 2::2]                 # type, name, child type, name: the types
        return f"{parts[at + 1]}/{'/'.join(types)}/{verb}"
    if parts[2].lower() == "providers":          # subscription-wide Microsoft.Compute reads
        return {"skus": "Microsoft.Compute/skus/read", "usages": "Microsoft.Compute/locations/usages/read"}[request.rtype]
    if len(parts) == 3:                          # /subscriptions/s/resourcegroups or /resources
        return f"Microsoft.Resources/subscriptions/{parts[2]}/{verb}"
    if len(parts) == 5:                          # /subscriptions/s/resourceGroups/g/resources
        return f"Microsoft.Resources/subscriptions/resourceGroups/resources/{verb}"
    return f"Microsoft.Resources/subscriptions/resourceGroups/{verb}"


def test_every_request_of_plan_up_and_down_is_in_the_role_actions(arm, prices, make_stack):
    from ollastack.cloud import azure, azure_preview

    planning.make(make_stack())
    up(make_stack())
    moved = make_stack(admin_cidrs=["203.0.113.0/24"])
    planning.make(moved)
    [nsg] = arm.find("networkSecurityGroups")
    arm.resources[nsg["id"].lower()]["properties"]["securityRules"].append(
        {"name": "allow-ollama", "properties": {**nsg["properties"]["securityRules"][0]["properties"], "priority": 200}})
    up(moved)
    azure.destroy(moved, StackState.load("demo"), [].append)
    needed = {action.lower() for action in map(role_action, arm.requests) if action}
    granted = {p.lower() for p in azure_preview.PERMISSIONS}
    assert needed - granted == set()
    assert {"microsoft.network/networksecuritygroups/securityrules/write",
            "microsoft.network/networksecuritygroups/securityrules/delete", "microsoft.compute/skus/read"} <= needed
