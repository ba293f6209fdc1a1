"""pytest plugin: under ``CI=true`` a skipped lab test is a failed one, so CI cannot pass with the lab off.

Lab tests apply to one Debian release or both; one that applies only to some says so with
``@pytest.mark.releases("trixie")`` and is deselected (not skipped) for the others.

Example::

    CI=true python -m pytest -m lab      # fails, naming the reason, if any lab test would skip
"""

from __future__ import annotations

import os

import pytest

RELEASES = ("bookworm", "trixie")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "releases(*names): lab test that applies only to these Debian releases")


def _release(item: pytest.Item) -> str | None:
    params = getattr(item, "callspec", None)
    values = params.params.values() if params else ()
    return next((v for v in values if isinstance(v, str) and v in RELEASES), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("releases")
        release = _release(item)
        (drop if marker and release and release not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and item.get_closest_marker("lab") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"lab test skipped under CI=true (CI runs every lab test): {reason}"
