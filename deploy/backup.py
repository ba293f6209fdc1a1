"""Scheduled backups of Open WebUI's data on the host (``backup.schedule``): a daily systemd timer.

``ollastack-backup.timer`` (``Persistent=true``: a run missed while the host was off happens after
boot) starts ``ollastack-backup.service``, which runs the same snapshot script ``ollastack backup``
runs over SSH and keeps the newest ``backup.keep`` tars in ``/var/backups/ollastack/openwebui`` (0700);
``ollastack backup --fetch`` copies the newest to the control machine. An empty schedule removes both.

Example::

    from ollastack.deploy.backup import backup_timer
    backup_timer()
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from ollastack.backup import HOST_DIR
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.present import host_state, may_change, put, service_running, templated
from ollastack.deploy.units import systemd_quoted
from ollastack.resources import deploy_file, template

SCRIPT = "/usr/local/lib/ollastack/openwebui-backup.py"
SERVICE = "/etc/systemd/system/ollastack-backup.service"
TIMER = "/etc/systemd/system/ollastack-backup.timer"
#: What ``backup_timer`` reads of the host (``deploy.present.host_state`` arguments).
READS = {"paths": [SCRIPT, SERVICE, TIMER], "services": ["ollastack-backup.timer"]}


@deploy("Open WebUI backups", data_defaults=DEFAULTS)
def backup_timer():
    data = host.data
    present = host_state(**READS)
    if data.ollastack_openwebui_install == "none" or not data.ollastack_backup_schedule:
        if not present.absent(TIMER):
            systemd.service(name="Stop the backup timer", service="ollastack-backup.timer", running=False, enabled=False)
        for path in (TIMER, SERVICE):
            if not present.absent(path):
                files.file(name=f"No {path}", path=path, present=False)
        return
    script = put(present, name="Backup script", src=str(deploy_file("files/openwebui-backup.py")), dest=SCRIPT,
                 mode="0755")
    models = data.ollastack_ollama_models_dir if data.ollastack_backup_include_models else ""
    service = templated(present, name="Backup service", src=str(template("ollastack-backup.service.j2")), dest=SERVICE,
                        script=SCRIPT, route=data.ollastack_openwebui_install, port=int(data.ollastack_openwebui_port),
                        email=systemd_quoted(data.ollastack_openwebui_admin_email), directory=HOST_DIR,
                        keep=int(data.ollastack_backup_keep), models=systemd_quoted(models))
    timer = templated(present, name="Backup timer", src=str(template("ollastack-backup.timer.j2")), dest=TIMER,
                      schedule=data.ollastack_backup_schedule)
    if may_change(script, service, timer):
        systemd.daemon_reload(name="Reload systemd units", _if=any_changed(script, service, timer))
    if may_change(timer):
        systemd.service(name="Restart the backup timer", service="ollastack-backup.timer", running=True,
                        enabled=True, restarted=True, _if=timer.did_change)
    service_running(present, name="Backup timer running and enabled", service="ollastack-backup.timer")
