"""The Alibaba part of ``ollastack plan``: each step of ``alibaba.GRAPH`` compared with the state and what
the account holds by tag, whether the instance type has stock in a zone (``DescribeAvailableResource``),
and its pay-as-you-go price (``DescribePrice``).

Only Describe* calls are made: nothing is created, changed or recorded.

Example::

    plan = preview(stack, StackState.load("demo", "alibaba"))
    plan.price.summary()          # "11.7200 CNY/hour, 8438.40 CNY/month (Alibaba Cloud ECS DescribePrice, cn-hangzhou)"
"""

from __future__ import annotations

import io
from typing import Any

from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_vpc20160428 import models as vpc_models

from ollastack.cloud import CloudError, Progress, alibaba
from ollastack.config import Stack
from ollastack.gpus import lines as gpu_lines
from ollastack.planning import CONFLICT, CREATE, LOOKUP, SAME, UPDATE, Change, Plan
from ollastack.pricing import Price, PriceLine, backend_lines
from ollastack.state import StackState

# The RAM actions plan, up and down call (AliyunECSFullAccess and AliyunVPCFullAccess hold them all).
PERMISSIONS = (
    "ecs:DescribeAvailableResource", "ecs:DescribePrice", "ecs:DescribeZones", "ecs:DescribeImages",
    "ecs:DescribeKeyPairs", "ecs:ImportKeyPair", "ecs:DeleteKeyPairs",
    "ecs:DescribeSecurityGroups", "ecs:CreateSecurityGroup", "ecs:DescribeSecurityGroupAttribute",
    "ecs:ModifySecurityGroupPolicy",
    "ecs:AuthorizeSecurityGroup", "ecs:RevokeSecurityGroup", "ecs:DeleteSecurityGroup",
    "ecs:RunInstances", "ecs:DescribeInstances", "ecs:DeleteInstance", "ecs:TagResources",
    "vpc:DescribeVpcs", "vpc:CreateVpc", "vpc:DeleteVpc",
    "vpc:DescribeVSwitches", "vpc:CreateVSwitch", "vpc:DeleteVSwitch", "vpc:TagResources",
)
ALTERNATIVES_MAX = 6
# DescribePrice's detail lines, in the order shown.
PRICE_PARTS = (("instanceType", "instance {type}"), ("systemDisk", "system disk {category} ({size} GiB)"),
               ("bandwidth", "public bandwidth {mbps} Mbps"))


def preview(stack: Stack, state: StackState) -> Plan:
    """The plan of an Alibaba stack (read-only); a failed look-up is raised as one-line ``CloudError``."""
    # Look-ups report nothing worth a progress line: the plan is the report.
    steps = alibaba.Steps(stack, state, Progress(stream=io.StringIO()), alibaba.Timing())
    result = Plan(stack.stack.name, "alibaba", permissions=list(PERMISSIONS),
                  permissions_title="RAM actions needed (AliyunECSFullAccess and AliyunVPCFullAccess hold them)")
    recorded = {r["kind"] for r in state.resources if r.get("id")}
    found = _resources(steps)
    instance = found["instance"]
    zone = found["vswitch"]["ZoneId"] if found["vswitch"] else ""
    if instance is None:
        zone, problems = availability(steps, zone)
        result.problems += problems
    chosen = bool(zone) and not (stack.alibaba.zone or found["vswitch"])
    result.changes.append(Change("zone", zone or "(none)", LOOKUP,
                                 f"first zone with stock of {stack.alibaba.instance_type}" if chosen else ""))
    try:
        image = steps.image()
        result.changes.append(Change("image", image, LOOKUP))
    except CloudError as exc:
        result.changes.append(Change("image", stack.alibaba.image_id or stack.alibaba.image_pattern, LOOKUP))
        if instance is None:
            result.problems.append(str(exc))
    result.changes += _changes(steps, found, recorded, zone)
    for change in result.changes:
        if change.action == CONFLICT:
            result.problems.append(change.detail)
    result.price = price(steps, zone)
    result.gpu = gpu_lines(stack.alibaba.instance_type, stack.ollama.models)
    return result


def _resources(steps: alibaba.Steps) -> dict[str, Any]:
    """What the account holds of the stack, by tag (the key pair by its name): one entry or None per kind."""
    api, region, name = steps.api, steps.region, steps.name
    keys = steps._key_pairs(steps.prefix)
    vpcs = api.items(api.vpc.describe_vpcs, vpc_models.DescribeVpcsRequest(
        region_id=region, tag=alibaba._tag(vpc_models, "DescribeVpcs", name)), "Vpcs", "Vpc")
    vpc = vpcs[0] if vpcs else None
    vswitches = groups = []
    if vpc is not None:
        vswitches = api.items(api.vpc.describe_vswitches, vpc_models.DescribeVSwitchesRequest(
            region_id=region, vpc_id=vpc["VpcId"], tag=alibaba._tag(vpc_models, "DescribeVSwitches", name)),
            "VSwitches", "VSwitch")
        groups = api.items(api.ecs.describe_security_groups, ecs_models.DescribeSecurityGroupsRequest(
            region_id=region, vpc_id=vpc["VpcId"], tag=alibaba._tag(ecs_models, "DescribeSecurityGroups", name)),
            "SecurityGroups", "SecurityGroup")
    backends = {steps.backend_name(i) for i in range(1, steps.stack.fleet.backends + 1)}
    instances = [i for i in steps._instances() if i["Status"] not in ("Stopping", "Deleted")]
    named = {i.get("InstanceName"): i for i in instances}
    instances = [i for i in instances if not steps.is_backend(i)]
    groups = [g for g in groups if g.get("SecurityGroupName") != steps.backend_name()]
    return {"key_pair": keys[0] if keys else None, "vpc": vpc, "vswitch": vswitches[0] if vswitches else None,
            "security_group": groups[0] if groups else None, "instance": instances[0] if instances else None,
            "backends": {name: named.get(name) for name in sorted(backends)}}


def _changes(steps: alibaba.Steps, found: dict[str, Any], recorded: set[str], zone: str) -> list[Change]:
    stack, prefix = steps.stack, steps.prefix
    cfg = stack.alibaba

    def missing(kind: str, detail: str = "") -> Change:
        gone = "recorded in the state but gone" if kind in recorded else ""
        return Change(kind, prefix, CREATE, ", ".join(filter(None, [detail, gone])))

    result = []
    key = found["key_pair"]
    if key is None:
        result.append(missing("key_pair"))
    elif not alibaba._tagged(key, steps.name):
        result.append(Change("key_pair", prefix, CONFLICT,
                             f"a key pair named {prefix} exists but is not tagged {alibaba.TAG_KEY}={steps.name}: "
                             "delete it in the ECS console or rename the stack"))
    else:
        result.append(Change("key_pair", prefix, SAME))
    vpc = found["vpc"]
    result.append(Change("vpc", vpc["VpcId"], SAME) if vpc else missing("vpc", alibaba.VPC_CIDR))
    vsw = found["vswitch"]
    result.append(Change("vswitch", vsw["VSwitchId"], SAME, vsw["ZoneId"]) if vsw else
                  missing("vswitch", zone))
    group = found["security_group"]
    if group is None:
        result.append(missing("security_group", "SSH from " + ", ".join(stack.access.admin_cidrs) + ", HTTP(S) from anywhere"))
    else:
        allow, revoke = steps.rule_changes(group["SecurityGroupId"])
        parts = [f"allow {proto} {ports.split('/')[0]} from {source}" for proto, ports, source in allow]
        parts += [f"revoke {proto} {ports.split('/')[0]} from {source}" for proto, ports, source in revoke]
        result.append(Change("security_group", group["SecurityGroupId"], UPDATE if parts else SAME, "; ".join(parts)))
    inst = found["instance"]
    if inst is None:
        result.append(missing("instance", f"{cfg.instance_type}, {cfg.system_disk_gb} GiB {cfg.system_disk_category}"))
    elif inst["InstanceType"] != cfg.instance_type:
        result.append(Change("instance", inst["InstanceId"], SAME,
                             f"is {inst['InstanceType']}, alibaba.instance_type says {cfg.instance_type}: not changed "
                             "(`ollastack down` and `up` change it)"))
    else:
        result.append(Change("instance", inst["InstanceId"], SAME))
    for name, backend in found["backends"].items():
        result.append(Change("instance", name, CREATE, f"fleet backend, no public address, {cfg.instance_type}")
                      if backend is None else Change("instance", backend["InstanceId"], SAME, f"fleet backend {name}"))
    return result


def availability(steps: alibaba.Steps, zone: str) -> tuple[str, list[str]]:
    """(the zone ``up`` would use, problems): the type must have stock in the pinned zone or in one of the region."""
    cfg = steps.stack.alibaba
    want, pinned = cfg.instance_type, zone or cfg.zone
    zones = sorted(z for z, types in steps.zones_with_stock(want).items() if want in types)
    if pinned:
        if pinned in zones:
            return pinned, []
        where = f"zones with stock: {', '.join(zones)}" if zones else f"no zone of {steps.region} has stock"
        return pinned, [f"alibaba.zone {pinned} has no stock of alibaba.instance_type {want} ({where}); "
                        "set another zone, or leave it empty"]
    if zones:
        return zones[0], []
    family = want.split("-")[0].rsplit(".", 1)[-1][:2]          # ecs.gn7i-c8g1.2xlarge -> "gn"
    offered = sorted({t for types in steps.zones_with_stock(None).values() for t in types
                      if t.split(".")[1].startswith(family)} - {want})
    others = f"types of the {family} family with stock there: {', '.join(offered[:ALTERNATIVES_MAX])}" if offered \
        else "try another alibaba.region"
    return "", [f"alibaba.instance_type {want} has no stock in any zone of {steps.region} (not offered or sold out); "
                f"{others}"]


def price(steps: alibaba.Steps, zone: str) -> Price:
    """The pay-as-you-go price per hour of the instance type, its system disk and its bandwidth."""
    cfg = steps.stack.alibaba
    result = Price("CNY", f"Alibaba Cloud ECS DescribePrice, {steps.region}, pay-as-you-go")
    names = {resource: label.format(type=cfg.instance_type, category=cfg.system_disk_category,
                                    size=cfg.system_disk_gb, mbps=cfg.bandwidth_mbps)
             for resource, label in PRICE_PARTS}
    try:
        body = steps.api.call(steps.api.ecs.describe_price, ecs_models.DescribePriceRequest(
            region_id=steps.region, resource_type="instance", instance_type=cfg.instance_type, zone_id=zone or None,
            instance_network_type="vpc", io_optimized="optimized", price_unit="Hour",
            system_disk=ecs_models.DescribePriceRequestSystemDisk(category=cfg.system_disk_category,
                                                                  size=cfg.system_disk_gb),
            internet_charge_type="PayByTraffic", internet_max_bandwidth_out=cfg.bandwidth_mbps))
    except CloudError as exc:
        result.warnings.append(f"price: {exc}")
        result.lines = [PriceLine(name, None) for name in names.values()]
        result.lines += backend_lines(steps.stack, result.lines[:2])
        return result
    found = body.get("PriceInfo", {}).get("Price", {})
    result.currency = found.get("Currency") or result.currency
    details = {d.get("Resource"): d for d in found.get("DetailInfos", {}).get("DetailInfo", [])}
    for resource, name in names.items():
        detail = details.get(resource)
        note = "pay by traffic: each GB sent is billed apart" if resource == "bandwidth" else ""
        if detail is None:
            result.warnings.append(f"price: DescribePrice gave no {resource} price for {cfg.instance_type}")
        result.lines.append(PriceLine(name, None if detail is None else float(detail.get("TradePrice", 0.0)), note))
    # A backend is the same instance and disk, without public bandwidth.
    result.lines += backend_lines(steps.stack, result.lines[:2])
    return result
