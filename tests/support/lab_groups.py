"""pytest plugin: under pytest-xdist (``make test`` runs two workers), one worker runs a lab module whole.

A lab module's hosts belong to its module-scoped stack, and two workers setting up the same stack would
share and then remove each other's hosts; the spine's session-scoped stack (``lab_stack``, one host per
Debian release) is shared by every module that asks for it, so those modules make one group. Tests
without the ``lab`` marker are left to xdist to spread one by one.

Example::

    python -m pytest -n 2 --dist loadgroup      # as `make test` runs it
"""

from __future__ import annotations

import pytest

SPINE_GROUP = "lab-spine"
# The modules that install the real Open WebUI take 5-12 minutes each, the image build first: they start
# first and the quick tests come last, so that the two workers end near each other (`make test` passes
# --no-loadscope-reorder, so xdist hands out the groups in this order).
SLOW_FIRST = ("test_lab_webui_image", "test_lab_backup", "test_lab_upgrade", "test_lab_accounts", "test_lab_openwebui")


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_Order(), "ollastack-lab-order")


def _is_lab(item: pytest.Item) -> bool:
    return item.get_closest_marker("lab") is not None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    lab = [item for item in items if _is_lab(item)]
    spine = {item.path for item in lab if "lab_stack" in getattr(item, "fixturenames", ())}
    for item in lab:
        group = SPINE_GROUP if item.path in spine else f"lab-{item.path.stem}"
        item.add_marker(pytest.mark.xdist_group(group))


class _Order:
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """After pytest's own reordering (which keeps the spine's releases together): a stable sort."""
        def rank(item: pytest.Item) -> int:
            if item.path.stem in SLOW_FIRST:
                return SLOW_FIRST.index(item.path.stem)
            return len(SLOW_FIRST) + (0 if _is_lab(item) else 1 if "integration" in item.path.parts else 2)

        items.sort(key=rank)
