"""The systemd units ollastack writes, reviewed offline by ``systemd-analyze security`` (no host needed).

The lab tests (tests/test_lab_firewall.py, tests/test_lab_openwebui.py) show the confined services
still work; these pin the exposure figure and the few lines the confinement must keep.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest

from ollastack.deploy.ollama import STATE_DIR, confinement
from tests.support.repo import REPO

LIMIT = 4.0


def render(template: str, **arguments) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"),
                             undefined=jinja2.StrictUndefined)
    return env.get_template(template).render(**arguments)


def offline_exposure(tmp_path: Path, unit: str, text: str) -> float:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    path = tmp_path / unit
    path.write_text(text)
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
                            capture_output=True, text=True, timeout=60)
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found.group(1))


UNITS = {
    "ollama.service": ("ollama.service.j2", confinement("/usr/share/ollama/.ollama/models")),
    "open-webui.service": ("openwebui-pip.service.j2", {"venv": "/opt/open-webui", "home": "/var/lib/open-webui",
                                                        "port": 8080, "env_files": ["/etc/open-webui/admin.env"]}),
    "ollastack-firewall.service": ("ollastack-firewall.service.j2", {"rules": "/etc/ollastack/firewall.nft"}),
}


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_at_most_four(tmp_path, unit):
    template, arguments = UNITS[unit]
    assert offline_exposure(tmp_path, unit, render(template, **arguments)) <= LIMIT


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", "["))]


def test_ollama_keeps_the_gpu_and_writes_only_its_own_paths():
    lines = directives(render("ollama.service.j2", **confinement("/srv/models%1")))
    assert [line for line in lines if line.startswith(("Device", "ReadWritePaths", "ProtectHome", "ProtectSystem"))] == [
        "ProtectSystem=strict", "ProtectHome=yes", f"ReadWritePaths={STATE_DIR} /srv/models%%1",
        "DevicePolicy=closed", "DeviceAllow=char-nvidia* rw", "DeviceAllow=char-drm rw"]
    assert "CapabilityBoundingSet=" in lines and "NoNewPrivileges=yes" in lines
    assert not [line for line in lines if line.startswith(("MemoryDenyWriteExecute", "PrivateDevices"))]


def test_models_under_a_home_directory_stay_writable():
    assert confinement("/home/ai/models") == {"writable": [STATE_DIR, "/home/ai/models"], "protect_home": "read-only"}
    assert confinement(f"{STATE_DIR}/models") == {"writable": [STATE_DIR], "protect_home": "yes"}
