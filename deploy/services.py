"""The one way a component applies a changed service: reload systemd, restart, wait until it is healthy.

Example (deploy/openwebui.py)::

    restart_when_changed("Open WebUI", "open-webui", changes=[unit, environment],
                         health_url="http://127.0.0.1:8080/health", wait_s=300)

A component with other work to do meanwhile waits later (deploy/ollama.py)::

    restart = restart_when_changed("Ollama", "ollama", changes=[installed, unit, override],
                                   health_url="http://127.0.0.1:11434/api/version", wait_s=60, wait=False)
    ...                                   # operations that do not need Ollama
    wait_until_healthy("Ollama", "ollama", restart, health_url="http://127.0.0.1:11434/api/version", wait_s=60)
"""

from __future__ import annotations

import shlex

from pyinfra.operations import server, systemd
from pyinfra.operations.util import any_changed

from ollastack.deploy.changes import restart_service
from ollastack.deploy.present import NOTHING, UNCHANGED, Present, may_change, service_running, unit_name


def restart_when_changed(title: str, service: str, changes: list, health_url: str, wait_s: int,
                         unit_changes: list | None = None, enabled: bool | None = True,
                         present: Present | None = None, wait: bool = True):
    """Reload systemd when a unit file changed (``unit_changes``, default ``changes``), restart ``service``
    when anything in ``changes`` did, keep it running (and ``enabled``; None leaves that to a Quadlet's
    [Install]), and after a restart wait up to ``wait_s`` seconds for ``health_url`` to answer (with ``wait``
    False the caller does, with ``wait_until_healthy``). A service the read shows not enabled yet is enabled
    and restarted in one command, with no reload of its own before.

    Nothing runs when nothing changed, so a re-run stays change-free. With ``present``
    (``deploy.present.host_state(services=[service])``) a service that runs already is not asked again.
    Returns the restart operation.
    """
    present = present or NOTHING
    unit_changes = changes if unit_changes is None else unit_changes
    if not may_change(*changes):
        restart = UNCHANGED
    elif enabled is True and present.not_enabled(service):
        # A first converge: the enable before the restart reloads the units itself.
        restart = restart_service(name=f"Restart {title}", service=unit_name(service), enable=True,
                                  _if=any_changed(*changes))
    else:
        if may_change(*unit_changes):
            systemd.daemon_reload(name="Reload systemd units", _if=any_changed(*unit_changes))
        restart = systemd.service(name=f"Restart {title}", service=service, running=True, enabled=enabled,
                                  restarted=True, _if=any_changed(*changes))
    # A restart leaves the service running (and enabled): what was read before it no longer holds.
    service_running(present, name=f"{title} running and enabled", service=service, enabled=enabled,
                    _if=lambda: not restart.did_change())
    if wait:
        wait_until_healthy(title, service, restart, health_url, wait_s)
    return restart


def wait_until_healthy(title: str, service: str, restart, health_url: str, wait_s: int) -> None:
    """When ``restart`` (``restart_when_changed``'s) changed something, wait up to ``wait_s`` seconds for
    ``health_url`` to answer; otherwise fail the converge, pointing to the service's journal."""
    if not may_change(restart):
        return
    silent = shlex.quote(f"{title} did not answer on {health_url} within {wait_s}s: journalctl -u {service}")
    server.shell(name=f"Wait for {title} to be healthy",
                 commands=[f"for i in $(seq {wait_s * 10}); do curl -fsS --max-time 2 {shlex.quote(health_url)} "
                           f">/dev/null && exit 0; sleep 0.1; done; echo {silent} >&2; exit 1"],
                 _if=restart.did_change)
