"""The skeleton both clouds share: a resource graph as data, one runner for it, one destroy rule.

A cloud declares its resources as a graph, each step with the steps it needs::

    GRAPH = {"network": [], "firewall": ["network"], "server": ["network", "firewall"]}

and an object with one method per step, called with the results of the steps it needs (in the
order listed) once they are done. ``run`` starts every step whose needs are met, so independent
steps overlap and the wall time is the longest chain, not the sum. Each step records what it
created through a shared ``Recorder`` the moment it exists; after a failure no further step starts,
the running ones finish (and record), then the first failure is raised: the state holds everything
created so far, and the next run finds those resources and creates only what is missing.

``destroy`` removes what the state records ∪ what carries the stack's tag (``targets``), tier by
tier in dependency order (``teardown``).

Example::

    results = run(GRAPH, steps)                 # {"network": ..., "firewall": ..., "server": ...}
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from ollastack.state import StackState

# Not a user setting: tests and benchmarks against the local emulators set it, real clouds keep the default.
POLL_ENV = "OLLASTACK_CLOUD_POLL_S"

Graph = Mapping[str, Sequence[str]]


def poll_interval(default: float) -> float:
    """Seconds between status polls of a cloud: ``default``, or ``$OLLASTACK_CLOUD_POLL_S`` when set.

    Example: ``poll_interval(5.0)`` -> 5.0 (0.0 under the emulator tests, which set the variable to 0)
    """
    value = os.environ.get(POLL_ENV, "")
    return float(value) if value else default


def order(graph: Graph) -> list[str]:
    """The steps with every step after those it needs (graph order among independent ones).

    Raises ValueError for a need that is not a step or a cycle: a graph is data, checked before use.

    Example: ``order({"b": ["a"], "a": []})`` -> ["a", "b"]
    """
    done: list[str] = []
    visiting: set[str] = set()

    def visit(step: str) -> None:
        if step in done:
            return
        if step in visiting:
            raise ValueError(f"resource graph has a cycle through {step!r}")
        visiting.add(step)
        for need in graph[step]:
            if need not in graph:
                raise ValueError(f"resource graph: {step!r} needs {need!r}, which is not a step")
            visit(need)
        visiting.discard(step)
        done.append(step)

    for step in graph:
        visit(step)
    return done


def run(graph: Graph, steps: object, timings: dict[str, tuple[float, float]] | None = None,
        workers: int | None = None) -> dict[str, Any]:
    """Run ``steps.<name>(*results of its needs)`` for each step of ``graph``; return each step's result.

    A step starts as soon as the steps it needs are done. On the first failure no further step
    starts; steps already running finish, so what they create is recorded, and then that failure
    is raised. ``timings`` (optional) receives (start, end) monotonic times per step; ``workers=1``
    runs the steps one after another in ``order(graph)``.

    Example::

        class Steps:
            def a(self): return 1
            def b(self, a): return a + 1
        run({"a": [], "b": ["a"]}, Steps())          # {"a": 1, "b": 2}
    """
    pending = order(graph)
    times = timings if timings is not None else {}
    results: dict[str, Any] = {}
    running: dict[Future, str] = {}
    failure: BaseException | None = None

    def step(name: str) -> Any:
        start = time.monotonic()
        try:
            return getattr(steps, name)(*[results[need] for need in graph[name]])
        finally:
            times[name] = (start, time.monotonic())

    with ThreadPoolExecutor(max_workers=workers or len(graph) or 1, thread_name_prefix="ollastack-step") as pool:
        while pending or running:
            ready = [] if failure else [s for s in pending if all(n in results for n in graph[s])]
            for name in ready[: (workers or len(graph)) - len(running)]:
                pending.remove(name)
                running[pool.submit(step, name)] = name
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                if future.exception() is not None:
                    failure = failure or future.exception()
                else:
                    results[name] = future.result()
    if failure is not None:
        raise failure
    return results


class Recorder:
    """The state of one create/destroy run, shared by steps running in parallel.

    Every change is saved at once (``StackState`` writes atomically), one at a time; ``common``
    attributes go into every record (e.g. the region). ``progress`` prints one whole line at a time.

    Example::

        recorder = Recorder(state, progress, region="cn-hangzhou")
        recorder.record("vpc", "ollastack-demo", id="vpc-1")   # saved before the next step starts waiting
    """

    def __init__(self, state: StackState, progress: Callable[[str], None], **common: Any):
        self.state = state
        self._progress = progress
        self.common = common
        self.lock = threading.RLock()

    def record(self, kind: str, name: str, **attrs: Any) -> dict[str, Any]:
        with self.lock:
            return self.state.record(kind, name, **self.common, **attrs)

    def forget(self, kind: str, name: str) -> None:
        with self.lock:
            self.state.forget(kind, name)

    def progress(self, message: str) -> None:
        with self.lock:
            self._progress(message)


def targets(recorded: Iterable[dict[str, Any]], tagged: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``destroy`` removes: what the state records ∪ what carries the stack's tag, each once.

    Entries are {"kind", "name", "id", ...}; the same kind and id (case aside) is one resource.
    Recorded ones come first; ``tagged`` says whether the tag look-up found it (a recorded one it
    did not find may be gone, or carry no tag any more: its cloud checks before deleting).

    Example::

        targets([{"kind": "vpc", "name": "n", "id": "vpc-1"}], [{"kind": "vpc", "name": "n", "id": "VPC-1"}])
        # [{"kind": "vpc", "name": "n", "id": "vpc-1", "tagged": True}]
    """
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in recorded:
        if entry.get("id"):
            entries[(entry["kind"], entry["id"].lower())] = {**entry, "tagged": False}
    for entry in tagged:
        key = (entry["kind"], entry["id"].lower())
        entries.setdefault(key, dict(entry))["tagged"] = True
    return list(entries.values())


def teardown(tiers: Sequence[Sequence[str]], entries: list[dict[str, Any]], remove: Callable[[dict[str, Any]], Any],
             recorder: Recorder, sweep: bool = True) -> list[Any]:
    """Remove ``entries`` tier by tier (a tier only once the one before is gone), a tier's entries in parallel.

    ``remove(entry)`` deletes the resource if it still exists and is the stack's, and returns what
    to report (None: nothing was deleted). Each entry's record goes once its ``remove`` returns,
    and a tier's other records of its kinds (e.g. a create that never got an id) once the tier is
    done (unless ``sweep`` is False: removing some of a stack's resources keeps the records of the others);
    the first failure stops before the next tier, keeping the records of what is left.

    Example: ``teardown([("vm",), ("network",)], targets(state.resources, tagged), remove, recorder)``
    """
    removed: list[Any] = []
    for tier in tiers:
        batch = [e for e in entries if e["kind"] in tier]

        def one(entry: dict[str, Any]) -> Any:
            result = remove(entry)
            recorder.forget(entry["kind"], entry["name"])
            return result

        results = _parallel([functools.partial(one, e) for e in batch])
        removed += [r for r in results if r is not None]
        for entry in [r for r in recorder.state.resources if r["kind"] in tier] if sweep else []:
            recorder.forget(entry["kind"], entry["name"])
    return removed


def _parallel(tasks: list[Callable[[], Any]]) -> list[Any]:
    """Run ``tasks`` concurrently; wait for all, then re-raise the first failure (in task order)."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
    return [f.result() for f in futures]


def kept_hosts(state: StackState, hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A fleet's ``hosts`` as ``create`` made them, then the backends the state still lists beyond them.

    Those are a shrunk fleet's: ``ollastack up`` drains them from the gateway before it removes them
    (``remove_hosts``), so the state keeps listing them until they are gone. A single host keeps none.
    Example: ``kept_hosts(state, [gateway, b1])`` -> [gateway, b1, b2] after a shrink from 2 backends
    """
    if len(hosts) < 2:
        return hosts
    names = {h["name"] for h in hosts}
    return [*hosts, *(h for h in state.hosts if h["name"] not in names and h.get("jump"))]
