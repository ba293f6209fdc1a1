"""``ollastack plan``: what ``up`` would create, update or leave, what it costs, and whether it can be created.

A plan only reads: the state file, and the cloud through Describe/GET calls and the price APIs. It
never writes to the cloud, the state file or a host. ``up`` makes the same plan first (``gate``) and
stops before any write when the size cannot be created there or the price is above
``cloud.max_hourly_price``.

Example::

    plan = planning.make(stack)
    print(plan.render())          # one line per resource, the price, the permissions
    plan.problems                 # ["alibaba.instance_type ecs.x is not offered in cn-hangzhou ..."]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ollastack.cloud import CloudError
from ollastack.config import Stack
from ollastack.host import Host
from ollastack.pricing import Price

CREATE, UPDATE, SAME, LOOKUP, CONFLICT = "create", "update", "no change", "look-up", "conflict"
# A lab or static host whose dry run failed: what the converge would change there is not known.
UNKNOWN = "unknown"


class PlanRefused(CloudError):
    """``up`` stopped before any write: the plan has a problem or costs more than the limit."""


@dataclass
class Change:
    """What ``up`` would do to one resource of the cloud's graph (``action`` is one of the constants above)."""

    kind: str
    name: str
    action: str
    detail: str = ""


@dataclass
class HostChanges:
    """The operations ``up``'s converge would change on one host (``pyinfra --dry``), in order.

    ``operations``: ``{"name": "Ollama | Restart Ollama", "conditional": True}``, conditional when it runs
    only because an earlier one changes.
    """

    name: str
    address: str
    operations: list[dict[str, Any]] = field(default_factory=list)

    def verdict(self) -> str:
        """``4 operations would change``, or ``no changes``."""
        n = len(self.operations)
        return f"{n} operation{'s' if n != 1 else ''} would change" if n else "no changes"


@dataclass
class Plan:
    """A stack's plan. ``problems`` stop ``plan`` (exit 1) and ``up`` before any write."""

    stack: str
    provider: str
    changes: list[Change] = field(default_factory=list)
    price: Price | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    permissions: list[str] = field(default_factory=list)
    permissions_title: str = ""
    gpu: list[str] = field(default_factory=list)
    # Lab and static stacks: what the converge would change per host (``ollastack.dryrun``).
    hosts: list[HostChanges] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {action: sum(c.action == action for c in self.changes) for action in (CREATE, UPDATE, SAME)}

    def summary(self) -> str:
        """One line: ``plan: 6 to create, 0 to update, 0 unchanged; 0.5310 USD/hour, ...``."""
        n = self.counts()
        line = f"plan: {n[CREATE]} to create, {n[UPDATE]} to update, {n[SAME]} unchanged"
        if self.hosts:
            ops = sum(len(h.operations) for h in self.hosts)
            line += f"; {ops} operation{'s' if ops != 1 else ''} would change on {sum(bool(h.operations) for h in self.hosts)} " \
                    f"of {len(self.hosts)} host{'s' if len(self.hosts) != 1 else ''}"
        if self.price is not None:
            line += f"; {self.price.summary()}"
        return line

    def render(self) -> str:
        width = max((len(c.kind) for c in self.changes), default=0)
        lines = [f"stack {self.stack} ({self.provider}):"]
        lines += [f"  {c.action:<9}  {c.kind:<{width}}  {c.name}" + (f"  ({c.detail})" if c.detail else "")
                  for c in self.changes]
        if self.hosts:
            lines.append("converge (pyinfra --dry):")
            for changes in self.hosts:
                lines.append(f"  {changes.name} ({changes.address}): {changes.verdict()}")
                lines += [f"    {op['name']}" + ("  (after a change above)" if op["conditional"] else "")
                          for op in changes.operations]
        if self.price is not None:
            lines.append(f"price ({self.price.source}):")
            for item in self.price.lines:
                cost = ("no price found" if item.hourly is None else
                        f"{item.hourly:.4f} {self.price.currency}/hour, {item.monthly:.2f} {self.price.currency}/month")
                lines.append(f"  {item.what}: {cost}" + (f"  ({item.note})" if item.note else ""))
        if self.gpu:
            lines.append("gpu (documented size table; model sizes estimated from their tags, real where a host has them):")
            lines += [f"  {g}" for g in self.gpu]
        if self.permissions:
            lines.append(f"{self.permissions_title}:")
            lines += [f"  {p}" for p in self.permissions]
        lines += [f"warning: {w}" for w in self.warnings + (self.price.warnings if self.price else [])]
        lines += [f"error: {p}" for p in self.problems]
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"stack": self.stack, "provider": self.provider, "ok": not self.problems,
                "changes": [c.__dict__ for c in self.changes], "counts": self.counts(),
                "price": self.price.to_json() if self.price else None, "problems": self.problems,
                "warnings": self.warnings, "permissions": self.permissions, "gpu": self.gpu,
                "hosts": [{**h.__dict__, "changes": len(h.operations)} for h in self.hosts]}


def make(stack: Stack, dry_run: bool = False) -> Plan:
    """The plan of ``stack``: a cloud's resources, prices and availability, or the lab/static hosts.

    ``dry_run`` (``ollastack plan``): for lab and static hosts, also what the converge would change on
    each (``ollastack.dryrun``); ``up``'s own plan (``gate``) leaves that out.
    """
    from ollastack import providers

    provider = providers.get(stack.stack.provider)
    if isinstance(provider, providers.CloudProvider):
        plan = provider.preview(stack)
        plan.warnings = provider.warnings(stack) + plan.warnings
        if dry_run:
            plan.gpu += pulled_models(stack, provider.hosts(stack))
        return plan
    plan = Plan(stack.stack.name, provider.name)
    hosts = provider.hosts(stack)
    if isinstance(provider, providers.LabProvider) and len(hosts) < stack.lab.hosts:
        plan.changes.append(Change("host", f"{stack.lab.hosts - len(hosts)} lab host(s)", CREATE,
                                   "booted and fully converged by `up`" if dry_run else "booted by `up`"))
    if dry_run and hosts:
        converge_changes(plan, stack, hosts)
    else:
        for host in hosts:
            plan.changes.append(Change("host", host.name, SAME, f"{host.address}; converged by `up`"))
    return plan


def pulled_models(stack: Stack, hosts: list[Host]) -> list[str]:
    """The plan's lines on the models a running host has already: their real size and whether they fit in
    the GPU memory ``nvidia-smi`` reports there. Only hosts whose key ``up`` recorded are asked."""
    from ollastack.orchestrate import gpu_report

    lines = []
    for host in hosts:
        report = gpu_report(stack, host, known_only=True)
        if "error" in report:
            lines.append(f"{host.name}: models not read ({report['error']})")
            continue
        memory = f"{report['vram_bytes'] / 1e9:.1f} GB GPU memory" if report["gpus"] else "no GPU answers nvidia-smi"
        for model in report["models"]:
            if model["size"] is None:
                lines.append(f"{host.name}: {model['name']} not pulled yet")
            else:
                verdict = {True: "fits", False: "does NOT fit: runs partly on the CPU", None: "runs on the CPU"}
                lines.append(f"{host.name}: {model['name']} is {model['size'] / 1e9:.1f} GB as pulled "
                             f"({memory}): {verdict[model['fits']]}")
    return lines


def converge_changes(plan: Plan, stack: Stack, hosts: list[Host]) -> None:
    """Add what ``up``'s converge would change on ``hosts`` and write on this machine; a failed dry run is a problem."""
    from ollastack import dryrun, orchestrate
    from ollastack.certs import CertError
    from ollastack.progress import Progress
    from ollastack.state import stack_home

    try:
        operations, written = dryrun.run(stack, hosts, Progress())
    except (orchestrate.ConvergeError, CertError) as exc:
        plan.problems.append(str(exc))
        plan.changes += [Change("host", host.name, UNKNOWN, f"{host.address}; not compared") for host in hosts]
        return
    for host in hosts:
        changes = HostChanges(host.name, host.address, operations.get(host.address, []))
        plan.hosts.append(changes)
        plan.changes.append(Change("host", host.name, UPDATE if changes.operations else SAME,
                                   f"{host.address}; {changes.verdict()}"))
    home = stack_home()
    for path, action in written:
        shown = path.relative_to(home) if path.is_relative_to(home) else path
        plan.changes.append(Change("local file", str(shown), action, "written on this machine by `up`"))


def gate(stack: Stack, progress: Callable[[str], None]) -> Plan:
    """The plan ``up`` makes before creating anything: print its summary; raise PlanRefused on a problem
    or a price above ``cloud.max_hourly_price`` (a limit with no price found refuses too)."""
    plan = make(stack)
    progress(plan.summary())
    for line in plan.price.warnings if plan.price else []:
        progress(f"warning: {line}")
    if plan.problems:
        raise PlanRefused("; ".join(plan.problems) + " (nothing was created)")
    limit = stack.cloud.max_hourly_price
    if limit and plan.price is not None:
        if not plan.price.complete or plan.price.hourly is None:
            raise PlanRefused(f"cloud.max_hourly_price is {limit} but the price could not be found "
                              f"({plan.price.summary()}); nothing was created")
        if plan.price.hourly > limit:
            raise PlanRefused(f"the stack costs {plan.price.hourly:.4f} {plan.price.currency}/hour, more than "
                              f"cloud.max_hourly_price {limit}; nothing was created (pick a smaller size or raise "
                              "the limit)")
    return plan
