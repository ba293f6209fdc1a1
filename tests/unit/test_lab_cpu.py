"""lab.cpu_seconds: the lab hosts' CPU time from their cgroups' cpu.stat (what benchmarks/converge.py reports)."""

from __future__ import annotations

from ollastack import lab


def test_sums_the_hosts_usage_and_counts_a_host_without_a_cgroup_as_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "_cgroup_roots", lambda: [tmp_path / "unified" / "ollastack"])
    for name, usec in (("demo-1", 1_500_000), ("demo-2", 250_000)):
        group = tmp_path / "unified" / "ollastack" / name
        group.mkdir(parents=True)
        (group / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n")
    assert lab.cpu_seconds(["demo-1", "demo-2", "demo-3"]) == 1.75
    assert lab.cpu_seconds([]) == 0
