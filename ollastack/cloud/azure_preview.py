"""The Azure part of ``ollastack plan``: each resource of ``azure.GRAPH`` compared with the state and
what Azure holds, whether the size can be created in the location, and its list price.

Only GET requests go to Resource Manager (the resources by name, the compute SKUs of the location,
the vCPU usages): nothing is created, changed or recorded.

Example::

    plan = preview(stack, StackState.load("demo", "azure"))
    [(c.kind, c.action) for c in plan.changes]    # [("resource_group", "create"), ...]
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from ollastack import pricing
from ollastack.cloud import azure, plan
from ollastack.config import Stack
from ollastack.gpus import lines as gpu_lines
from ollastack.planning import CONFLICT, CREATE, SAME, UPDATE, Change, Plan
from ollastack.state import StackState

# Role actions the signed-in identity needs for plan, up and down (the built-in Contributor role has them all).
PERMISSIONS = (
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/subscriptions/resourceGroups/write",
    "Microsoft.Resources/subscriptions/resourceGroups/delete",
    "Microsoft.Resources/subscriptions/resources/read",
    "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/write",
    "Microsoft.Network/virtualNetworks/delete",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/networkSecurityGroups/read",
    "Microsoft.Network/networkSecurityGroups/write",
    "Microsoft.Network/networkSecurityGroups/delete",
    "Microsoft.Network/networkSecurityGroups/join/action",
    "Microsoft.Network/networkSecurityGroups/securityRules/read",
    "Microsoft.Network/networkSecurityGroups/securityRules/write",
    "Microsoft.Network/networkSecurityGroups/securityRules/delete",
    "Microsoft.Network/publicIPAddresses/read",
    "Microsoft.Network/publicIPAddresses/write",
    "Microsoft.Network/publicIPAddresses/delete",
    "Microsoft.Network/publicIPAddresses/join/action",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/delete",
    "Microsoft.Network/networkInterfaces/join/action",
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Compute/skus/read",
    "Microsoft.Compute/locations/usages/read",
)
ALTERNATIVES_MAX = 6


def preview(stack: Stack, state: StackState) -> Plan:
    """The plan of an Azure stack (read-only); SDK failures are raised as one-line ``CloudError``."""
    session = azure._Session(stack, state, lambda line: None)
    result = Plan(stack.stack.name, "azure", permissions=list(PERMISSIONS),
                  permissions_title="Azure role actions needed (the Contributor role has them)")
    try:
        result.changes = changes(session, state)
    except azure.SDK_ERRORS as exc:
        raise azure.cloud_error(exc, f"reading resource group {session.group} and its resources") from None
    for change in result.changes:
        if change.action == CONFLICT:
            result.problems.append(change.detail)
    if any(c.kind == "virtual_machine" and c.action == CREATE for c in result.changes):
        try:
            result.problems += availability(session)
        except azure.SDK_ERRORS as exc:
            result.warnings.append(f"availability of {stack.azure.vm_size} not checked: "
                                   f"{azure.cloud_error(exc, 'listing compute SKUs and usages')}")
    result.price = pricing.azure_price(stack)
    result.gpu = gpu_lines(stack.azure.vm_size, stack.ollama.models)
    return result


def changes(session: Any, state: StackState) -> list[Change]:
    """One ``Change`` per step of ``azure.graph`` (a fleet's backends included), in dependency order."""
    stack, group = session.stack, session.group
    recorded = {(r["kind"], r["name"]) for r in state.resources if r.get("id")}
    try:
        rg = session.resources.resource_groups.get(group).as_dict()
    except ResourceNotFoundError:
        rg = None
    found: list[Change] = []
    for step in plan.order(azure.graph(stack)):
        if step == "resource_group":
            found.append(_group_change(stack, group, rg, ("resource_group", group) in recorded))
            continue
        kind, name = session.resource(step)
        existing = None if rg is None else session._get(session._ops(kind)[0], name)
        found.append(_change(session, kind, name, existing, (kind, name) in recorded))
    return found


def _group_change(stack: Stack, group: str, rg: dict | None, recorded: bool) -> Change:
    if rg is None:
        return Change("resource_group", group, CREATE, "recorded in the state but gone" if recorded else
                      stack.azure.location)
    if rg.get("tags", {}).get(azure.TAG) != stack.stack.name:
        return Change("resource_group", group, SAME, "exists, not created by ollastack: kept on destroy")
    return Change("resource_group", group, SAME)


def _change(session: Any, kind: str, name: str, existing: dict | None, recorded: bool) -> Change:
    stack = session.stack
    if existing is None:
        detail = "recorded in the state but gone" if recorded else ""
        if kind == "virtual_machine":
            detail = ", ".join(filter(None, [stack.azure.vm_size, detail]))
        return Change(kind, name, CREATE, detail)
    if existing.get("tags", {}).get(azure.TAG) != stack.stack.name:
        return Change(kind, name, CONFLICT,
                      f"azure: {azure.LABELS[kind]} {name} in resource group {session.group} exists but is not tagged "
                      f"{azure.TAG}={stack.stack.name}; pick another stack.name or azure.resource_group")
    provisioning = existing["properties"].get("provisioningState")
    if provisioning != "Succeeded":
        return Change(kind, name, CREATE, f"created again, it is {provisioning}")
    if kind == "network_security_group" and name == session.names["network_security_group"]:
        rules = session.security_rules()
        extra, changed = azure.rule_changes(existing, rules)
        if extra or changed:
            parts = [f"update rule {n}" + (f" (SSH from {', '.join(stack.access.admin_cidrs)})"
                                           if n == "allow-ssh-admin" else "") for n in changed]
            parts += [f"remove rule {n} (not one of ollastack's)" for n in extra]
            return Change(kind, name, UPDATE, "; ".join(parts))
    if kind == "public_ip":
        have = existing["properties"].get("dnsSettings", {}).get("domainNameLabel", "")
        if have != stack.azure.dns_label:
            return Change(kind, name, UPDATE, f"DNS label {have or '(none)'} -> {stack.azure.dns_label or '(none)'}")
    if kind == "virtual_machine":
        size = existing["properties"].get("hardwareProfile", {}).get("vmSize")
        if size != stack.azure.vm_size:
            return Change(kind, name, SAME, f"is {size}, azure.vm_size says {stack.azure.vm_size}: not resized "
                                            "(`ollastack down` and `up` change it)")
    return Change(kind, name, SAME)


def _capability(sku: dict, name: str) -> str:
    return next((c.get("value", "") for c in sku.get("capabilities") or [] if c.get("name") == name), "")


def availability(session: Any) -> list[str]:
    """Problems creating ``azure.vm_size`` in ``azure.location``: not offered, restricted, or over the
    family's vCPU quota; each names sizes that would work there."""
    az = session.stack.azure
    skus = [s.as_dict() for s in session.compute.resource_skus.list(filter=f"location eq '{az.location}'")]
    sizes = [s for s in skus if s.get("resourceType") == "virtualMachines"
             and az.location.lower() in [loc.lower() for loc in s.get("locations") or []]]

    def usable(sku: dict) -> bool:
        return not any(r.get("type") == "Location" for r in sku.get("restrictions") or [])

    mine = next((s for s in sizes if s["name"].lower() == az.vm_size.lower()), None)
    gpu = azure.is_gpu_size(az.vm_size)
    others = sorted(s["name"] for s in sizes if usable(s) and azure.is_gpu_size(s["name"]) == gpu
                    and s["name"].lower() != az.vm_size.lower())
    offer = (f"; {'GPU ' if gpu else ''}sizes offered there: {', '.join(others[:ALTERNATIVES_MAX])}" if others
             else f"; no {'GPU ' if gpu else ''}size is offered to this subscription there: try another azure.location")
    if mine is None:
        return [f"azure.vm_size {az.vm_size} is not offered in {az.location}{offer}"]
    if not usable(mine):
        reasons = sorted({r.get("reasonCode", "") for r in mine["restrictions"] if r.get("type") == "Location"})
        return [f"azure.vm_size {az.vm_size} cannot be created in {az.location} ({', '.join(filter(None, reasons))})"
                f"{offer}"]
    # A fleet is 1 + fleet.backends VMs of the size.
    needed = int(_capability(mine, "vCPUs") or 0) * (1 + session.stack.fleet.backends)
    family = mine.get("family", "")
    usage = next((u for u in (x.as_dict() for x in session.compute.usage.list(az.location))
                  if u.get("name", {}).get("value", "").lower() == family.lower()), None)
    if usage is not None and needed and usage["currentValue"] + needed > usage["limit"]:
        return [f"azure.vm_size {az.vm_size}{_times(session.stack)} needs {needed} vCPUs of {family} in {az.location}, and the quota has "
                f"{usage['limit'] - usage['currentValue']} left ({usage['currentValue']} of {usage['limit']} used): "
                f"request more vCPU quota for the family{offer}"]
    return []


def _times(stack: Stack) -> str:
    """`` × 3`` for a fleet of a gateway and two backends; "" for one VM."""
    return f" × {1 + stack.fleet.backends}" if stack.fleet.backends else ""
