"""The skeleton both clouds share (``ollastack/cloud/plan.py``, ``ollastack/cloud/errors.py``).

The runner is driven with a stand-in cloud (resources in a dict) whose steps find or create their
resource and record it in a real ``StackState`` file; the clouds' own graphs are checked as data.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from ollastack.cloud import CloudError, alibaba, azure, plan
from ollastack.cloud.errors import RESUME_HINT, hint, one_line
from ollastack.state import StackState

GRAPH = {"network": [], "key": [], "firewall": ["network"], "address": ["network"],
         "server": ["firewall", "address", "key"]}


@pytest.fixture
def state(tmp_path, monkeypatch) -> StackState:
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    return StackState.load("plantest", "stand-in")


class Cloud:
    """A stand-in cloud: each step finds its resource by name or creates it, then records it at once."""

    def __init__(self, recorder: plan.Recorder):
        self.recorder = recorder
        self.resources: dict[str, str] = {}
        self.created: list[str] = []
        self.calls: list[tuple[str, tuple]] = []
        self.hooks: dict[str, object] = {}
        self.lock = threading.Lock()

    def ensure(self, kind: str, needs: tuple) -> str:
        with self.lock:
            self.calls.append((kind, needs))
        if kind in self.hooks:
            self.hooks[kind]()
        with self.lock:
            if kind not in self.resources:
                self.resources[kind] = f"{kind}-{len(self.resources) + 1}"
                self.created.append(kind)
        self.recorder.record(kind, kind, id=self.resources[kind])
        return self.resources[kind]

    def __getattr__(self, kind: str):
        return lambda *needs: self.ensure(kind, needs)


def test_each_step_gets_what_its_needs_returned_after_they_finish(state):
    cloud = Cloud(plan.Recorder(state, print))
    timings: dict = {}
    results = plan.run(GRAPH, cloud, timings)
    assert results == cloud.resources and set(results) == set(GRAPH)
    calls = dict(cloud.calls)
    assert calls["server"] == (results["firewall"], results["address"], results["key"])
    assert calls["firewall"] == (results["network"],) and calls["network"] == ()
    for step, needs in GRAPH.items():
        assert all(timings[step][0] >= timings[need][1] for need in needs)
    assert sorted(r["kind"] for r in StackState.load("plantest").resources) == sorted(GRAPH)


def test_independent_steps_run_at_the_same_time(state):
    cloud = Cloud(plan.Recorder(state, print))
    # Each of the three waits until all three have started: run one after another, the first never returns.
    meet = threading.Barrier(3, timeout=30)
    cloud.hooks = {"firewall": meet.wait, "address": meet.wait, "key": meet.wait}
    plan.run({"network": [], "firewall": ["network"], "address": ["network"], "key": []}, cloud)
    assert sorted(cloud.created) == ["address", "firewall", "key", "network"]


def test_one_worker_runs_the_steps_one_at_a_time_in_graph_order(state):
    cloud = Cloud(plan.Recorder(state, print))
    timings: dict = {}
    plan.run(GRAPH, cloud, timings, workers=1)
    assert cloud.created == plan.order(GRAPH) == ["network", "key", "firewall", "address", "server"]
    spans = [timings[step] for step in cloud.created]
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))


def test_first_failure_starts_nothing_more_and_the_state_resumes(state):
    cloud = Cloud(plan.Recorder(state, print))
    timings: dict = {}
    key_started, network_failing = threading.Event(), threading.Event()

    def network_fails():
        key_started.wait(30)
        network_failing.set()
        raise CloudError("network: quota reached")

    def key_outlives_the_failure():
        key_started.set()
        network_failing.wait(30)
        while "network" not in timings:      # the failed step has returned
            threading.Event().wait(0.001)

    cloud.hooks = {"network": network_fails, "key": key_outlives_the_failure}
    graph = {"network": [], "key": [], "signing": ["key"], "server": ["network", "signing"]}
    with pytest.raises(CloudError, match="network: quota reached"):
        plan.run(graph, cloud, timings)
    # The step already running finished and is recorded; the one that needed it never started.
    assert cloud.created == ["key"] and set(timings) == {"network", "key"}
    assert [(r["kind"], r["id"]) for r in StackState.load("plantest").resources] == [("key", "key-1")]

    resumed = Cloud(plan.Recorder(StackState.load("plantest"), print))
    resumed.resources = {r["kind"]: r["id"] for r in StackState.load("plantest").resources}
    results = plan.run(graph, resumed)
    assert resumed.created == ["network", "signing", "server"] and results["key"] == "key-1"

    again = Cloud(plan.Recorder(StackState.load("plantest"), print))
    again.resources = {r["kind"]: r["id"] for r in StackState.load("plantest").resources}
    assert plan.run(graph, again) == results and again.created == []
    assert [r["kind"] for r in StackState.load("plantest").resources] == ["key", "network", "signing", "server"]


@pytest.mark.parametrize(("graph", "message"), [({"a": ["b"], "b": ["a"]}, "cycle"),
                                                ({"a": ["missing"]}, "'missing', which is not a step")])
def test_a_bad_graph_is_refused_before_any_step_runs(state, graph, message):
    cloud = Cloud(plan.Recorder(state, print))
    with pytest.raises(ValueError, match=message):
        plan.run(graph, cloud)
    assert cloud.calls == []


@pytest.mark.parametrize("module", [azure, alibaba])
def test_each_cloud_graph_is_data_with_a_step_method_each(module):
    steps = azure._Session if module is azure else alibaba.Steps
    assert set(plan.order(module.GRAPH)) == set(module.GRAPH)
    assert all(callable(getattr(steps, name)) for name in module.GRAPH)


def test_azure_graph_is_the_documented_tree():
    assert plan.order(azure.GRAPH) == ["resource_group", "virtual_network", "network_security_group", "public_ip",
                                       "network_interface", "virtual_machine"]
    assert azure.GRAPH["network_interface"] == ["virtual_network", "network_security_group", "public_ip"]


def test_destroy_targets_are_recorded_and_tagged_once_each():
    recorded = [{"kind": "vpc", "name": "ollastack-demo", "id": "vpc-1"},
                {"kind": "vswitch", "name": "ollastack-demo", "id": None, "client_token": "t"}]
    tagged = [{"kind": "vpc", "name": "VPC-1", "id": "VPC-1"}, {"kind": "vpc", "name": "vpc-2", "id": "vpc-2"}]
    assert plan.targets(recorded, tagged) == [
        {"kind": "vpc", "name": "ollastack-demo", "id": "vpc-1", "tagged": True},
        {"kind": "vpc", "name": "vpc-2", "id": "vpc-2", "tagged": True}]
    assert plan.targets(recorded, [])[0]["tagged"] is False


def test_teardown_goes_tier_by_tier_and_keeps_the_records_of_what_is_left(state):
    recorder = plan.Recorder(state, print)
    for kind, rid in (("server", "s-1"), ("network", "n-1"), ("firewall", "f-1")):
        recorder.record(kind, kind, id=rid)
    recorder.record("address", "address", id=None, client_token="t")    # asked for, never answered
    entries = plan.targets(state.resources, [{"kind": "server", "name": "s-2", "id": "s-2"}])
    tiers = [("server",), ("address", "firewall"), ("network",)]
    done: list[str] = []

    def remove(entry):
        assert all(k in done for k in ("s-1", "s-2")) or entry["kind"] == "server"
        if entry["id"] == "n-1":
            raise CloudError("network: in use")
        done.append(entry["id"])
        return f"{entry['kind']} {entry['id']}"

    with pytest.raises(CloudError, match="in use"):
        plan.teardown(tiers, entries, remove, recorder)
    assert sorted(done) == ["f-1", "s-1", "s-2"]
    assert [(r["kind"], r["id"]) for r in StackState.load("plantest").resources] == [("network", "n-1")]
    assert plan.teardown(tiers, plan.targets(state.resources, []), lambda e: e["id"], recorder) == ["n-1"]
    assert StackState.load("plantest").resources == []


@pytest.mark.parametrize(("cloud", "code", "message", "expected"), [
    ("alibaba", "QuotaExceed.ElasticQuota", "", "Quota Center"),
    ("alibaba", "Throttling.User", "", "keeps throttling"),
    ("azure", "SkuNotAvailable", "", "azure.vm_size"),
    ("azure", "OperationNotAllowed", "Operation results in exceeding quota limits", "request more quota"),
    ("azure", "OperationNotAllowed", "The VM is deallocating", RESUME_HINT),
    ("azure", "QuotaExceed.ElasticQuota", "", RESUME_HINT),      # another cloud's code
    ("alibaba", "NoSuchCode", "", RESUME_HINT),
])
def test_one_hint_table_serves_both_clouds(cloud, code, message, expected):
    assert expected in hint(cloud, code, message)


def test_one_line():
    assert one_line("Operation\n   failed:\tbusy") == "Operation failed: busy"
    assert one_line("x" * 300) == "x" * 197 + "..." and one_line("abcdef", 5) == "ab..."


def test_poll_interval_comes_from_the_environment_not_the_settings(monkeypatch):
    monkeypatch.delenv(plan.POLL_ENV, raising=False)
    assert plan.poll_interval(5.0) == 5.0 and alibaba.Timing().poll_s == 3.0
    monkeypatch.setenv(plan.POLL_ENV, "0")
    assert plan.poll_interval(5.0) == 0.0 and alibaba.Timing().poll_s == 0.0
    from ollastack.config import AzureSection
    assert "polling_interval" not in AzureSection.model_fields
