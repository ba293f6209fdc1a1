"""Open WebUI on loopback behind nginx, owned and connected to Ollama from its first start.

Two routes (``openwebui.install``):

- ``container``: the pinned image (pulled, or loaded from ``openwebui.image_archive``) run with
  Podman on the host network, bound to 127.0.0.1, data in the named volume ``open-webui``; from a
  Quadlet file where the release's Podman reads them (Debian 13), else from a hand-written unit.
- ``pip``: a venv with the release's Python 3.11 installed with uv (CPU torch first, from
  ``openwebui.find_links`` or ``openwebui.torch_index_url``), run as the ``open-webui`` user with
  ``DATA_DIR=/var/lib/open-webui/data``. Refused on releases without such a Python (Debian 13).

Both get the same settings from a systemd drop-in (admin e-mail, signup off, Ollama URL,
``ENABLE_PERSISTENT_CONFIG=false`` so that a changed setting applies on the next converge) and two
0600 environment files: the admin password from the control machine, and ``WEBUI_SECRET_KEY``
generated once on the host and never read back.

Example::

    from ollastack.deploy.openwebui import openwebui
    openwebui()
"""

from __future__ import annotations

import shlex
from io import StringIO
from pathlib import Path
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.podman import ensure_image, image_reads, podman
from ollastack.deploy.present import NOTHING, Present, absent, directory, host_state, put, templated, user
from ollastack.deploy.guards import plan_check
from ollastack.deploy.release import host_release
from ollastack.deploy.services import restart_when_changed
from ollastack.deploy.tls import server_names
from ollastack.deploy.units import systemd_quoted
from ollastack import accounts, sso
from ollastack.config import AccountsSection, SsoSection
from ollastack.fleet import GATEWAY, group_listen
from ollastack.hostdata import key
from ollastack.resources import template
from ollastack.ollama_names import client_address

UNIT = "/etc/systemd/system/open-webui.service"
QUADLET = "/etc/containers/systemd/open-webui.container"
DROP_IN = "/etc/systemd/system/open-webui.service.d/override.conf"
CONF_DIR = "/etc/open-webui"
SECRET_KEY_ENV = f"{CONF_DIR}/secret-key.env"
ADMIN_ENV = f"{CONF_DIR}/admin.env"
OIDC_ENV = f"{CONF_DIR}/oidc.env"
HOME = "/var/lib/open-webui"
VENV = "/opt/open-webui"
UV_VENV = "/opt/ollastack/uv"
UV_VERSION = "0.13.9"
WHEELS = "/var/cache/ollastack/wheels"
INSTALLED_MARKER = f"{VENV}/.ollastack-installed"
# Variables passed from the unit's environment into the container (values never on the command line).
SECRET_NAMES = ("WEBUI_SECRET_KEY", "WEBUI_ADMIN_PASSWORD")
OIDC_SECRET_NAME = "OAUTH_CLIENT_SECRET"


def ollama_url(data) -> str:
    """``openwebui.ollama_url``, else the host's own Ollama: ``http://127.0.0.1:11434``."""
    return data.ollastack_openwebui_ollama_url or f"http://{client_address(data.ollastack_ollama_host)}"


def ollama_urls(data) -> list[str]:
    """Open WebUI's Ollama URLs: ``ollama_url``, or on a fleet gateway with a placement the loopback upstream of
    each group (``deploy.nginx.upstream_groups``): ``["http://127.0.0.1:11434", "http://127.0.0.1:11435"]``."""
    groups = data.ollastack_fleet_groups if data.ollastack_fleet_role == GATEWAY else []
    if len(groups) < 2:
        return [ollama_url(data)]
    return [f"http://{group_listen(data.ollastack_ollama_host, i)}" for i in range(len(groups))]


def environment(data) -> dict[str, str]:
    """The settings Open WebUI reads from its environment, from the ``ollastack_openwebui_*`` host data."""
    urls = [f"https://{name}" for name in server_names(data)]
    env = {
        "HOST": "127.0.0.1",
        "PORT": str(data.ollastack_openwebui_port),
        "WEBUI_URL": urls[0],
        "CORS_ALLOW_ORIGIN": ";".join(urls),
        "OLLAMA_BASE_URL": ollama_url(data),
        "ENABLE_OLLAMA_API": "true",
        "ENABLE_OPENAI_API": "true" if data.ollastack_openwebui_openai_api_base_url else "false",
        "ENABLE_PERSISTENT_CONFIG": "false",
        "WEBUI_ADMIN_EMAIL": data.ollastack_openwebui_admin_email,
        "WEBUI_ADMIN_NAME": data.ollastack_openwebui_admin_name,
        "ENABLE_SIGNUP": "true" if data.ollastack_openwebui_enable_signup else "false",
        "DEFAULT_USER_ROLE": data.ollastack_openwebui_default_user_role,
        # Served over HTTPS only (nginx): the session cookies must never travel over plain HTTP.
        "WEBUI_SESSION_COOKIE_SECURE": "true",
        "WEBUI_AUTH_COOKIE_SECURE": "true",
        "OFFLINE_MODE": "true" if data.ollastack_openwebui_offline else "false",
        "ANONYMIZED_TELEMETRY": "false",
        "DO_NOT_TRACK": "true",
        "SCARF_NO_ANALYTICS": "true",
    }
    if len(base_urls := ollama_urls(data)) > 1:
        # Open WebUI asks each URL's /api/tags and sends a model's requests only to URLs that list it.
        del env["OLLAMA_BASE_URL"]
        env["OLLAMA_BASE_URLS"] = ";".join(base_urls)
    if data.ollastack_openwebui_openai_api_base_url:
        env["OPENAI_API_BASE_URL"] = data.ollastack_openwebui_openai_api_base_url
    if data.ollastack_openwebui_offline:
        env["HF_HUB_OFFLINE"] = "1"
    if data.ollastack_openwebui_install == "pip":
        env.update(DATA_DIR=f"{HOME}/data", STATIC_DIR=f"{HOME}/static", HOME=HOME)
    section = {name: getattr(data, key(f"accounts.{name}"), None) for name in AccountsSection.model_fields}
    env.update(accounts.environment(AccountsSection.model_validate({k: v for k, v in section.items() if v is not None})))
    env.update(sso.environment(sso_section(data), urls[0]))
    return env


def sso_section(data) -> SsoSection:
    """The stack's ``[sso]`` from the ``ollastack_sso_*`` host data (paths and names only, never the secret)."""
    section = {name: getattr(data, key(f"sso.{name}"), None) for name in SsoSection.model_fields}
    return SsoSection.model_validate({k: v for k, v in section.items() if v is not None})


def admin_password(data) -> str:
    """The admin password, read from its 0600 file on the control machine (see ``ollastack.hostdata``)."""
    if not data.ollastack_openwebui_admin_password_file:
        raise DeployError(f"{host.name}: no ollastack_openwebui_admin_password_file in host data; build the "
                          "inventory with ollastack.inventory (it keeps the password in a 0600 file on this machine)")
    return Path(data.ollastack_openwebui_admin_password_file).read_text().strip()


def secrets(data, present: Present | None = None) -> list:
    """The two 0600 environment files; returns the operations that changed them. ``present``: ``host_state`` with
    their paths and ``exists=[SECRET_KEY_ENV]`` (read here when not given)."""
    present = present or host_state(paths=[CONF_DIR, ADMIN_ENV, OIDC_ENV], exists=[SECRET_KEY_ENV])
    directory(present, name="Open WebUI settings directory", path=CONF_DIR, mode="0700")
    admin = put(present, name="Open WebUI admin password (0600)", mode="0600", dest=ADMIN_ENV,
                src=StringIO(f'WEBUI_ADMIN_PASSWORD="{systemd_quoted(admin_password(data), specifiers=False)}"\n'))
    changes = [admin, oidc_secret(data, present)]
    if not present.exists(SECRET_KEY_ENV):
        # Made on the host so the key never travels; kept across upgrades and re-installs.
        changes.append(server.shell(
            name="Generate WEBUI_SECRET_KEY (once per host)",
            commands=[f"umask 077 && key=$(head -c 48 /dev/urandom | base64 -w0 | tr '+/' '-_') && "
                      f"printf 'WEBUI_SECRET_KEY=%s\\n' \"$key\" > {SECRET_KEY_ENV}.new && "
                      f"mv {SECRET_KEY_ENV}.new {SECRET_KEY_ENV}"]))
    return changes


def oidc_secret(data, present: Present):
    """The OIDC client secret's 0600 root-owned environment file, or none when single sign-on is off."""
    section = sso_section(data)
    if not section.enabled:
        return absent(present, name="No OIDC client secret", path=OIDC_ENV)
    try:
        secret = sso.client_secret(section)
    except (sso.SsoError, OSError) as error:
        raise DeployError(f"{host.name}: {error}") from None
    return put(present, name="OIDC client secret (0600)", mode="0600", user="root", group="root", dest=OIDC_ENV,
               src=StringIO(f'{OIDC_SECRET_NAME}="{systemd_quoted(secret, specifiers=False)}"\n'))


def local_wheels(data) -> list[Path]:
    return sorted(Path(data.ollastack_openwebui_find_links).expanduser().glob("*.whl")) if data.ollastack_openwebui_find_links else []


@plan_check
def refuse_pip_without_python() -> None:
    """Stop the converge before any change when the pip route cannot work on this host's release.

    Validation refuses it already when the stack names the release; this catches static hosts and custom images.
    """
    if host.data.ollastack_openwebui_install != "pip":
        return
    release = host_release()
    if release.webui_python is None:
        raise DeployError(f"{host.name}: openwebui.install = \"pip\" needs Python 3.11 or 3.12, which Debian "
                          f"{release.version} ({release.codename}) does not ship; set openwebui.install = \"container\" "
                          "(Podman) or use a Debian 12 host")


def pip_reads(data) -> dict[str, list[str]]:
    """What ``install_pip`` reads of the host, as ``host_state`` arguments (the wheelhouse only when it installs:
    ``wheel_reads``)."""
    return {"paths": [HOME, f"{HOME}/data", f"{HOME}/static"],
            "packages": ["python3-venv"], "users": ["open-webui"], "texts": [INSTALLED_MARKER]}


def wheel_reads(wheels: list[Path]) -> dict[str, list[str]]:
    """The host's wheelhouse as ``install_pip`` pushes it (``host_state`` arguments)."""
    return {"paths": [WHEELS, *(f"{WHEELS}/{wheel.name}" for wheel in wheels)]}


def install_pip(data, python: str, present: Present):
    """The venv with the pinned release; returns the install operation, or None when it is in place.
    ``present``: ``host_state`` read with ``pip_reads(data)``."""
    ensure_packages(["python3-venv"], "Install python3-venv", present)
    user(present, name="open-webui system user", user="open-webui", system=True, home=HOME, shell="/usr/sbin/nologin")
    for sub in ("data", "static"):
        directory(present, name=f"Open WebUI {sub} directory", path=f"{HOME}/{sub}", user="open-webui",
                  group="open-webui", mode="0750")
    marker = f"open-webui=={data.ollastack_openwebui_version}"
    if present.text(INSTALLED_MARKER) == marker:
        return None
    # Only an install reads the wheelhouse: checking its wheels (a CPU torch is 190 MB) on every converge
    # would cost each no-op a sha1 of them on both machines, for files nothing else uses.
    wheels = local_wheels(data)
    if wheels:
        in_place = host_state(**wheel_reads(wheels))
        directory(in_place, name="Wheelhouse directory", path=WHEELS, mode="0755")
        for wheel in wheels:
            put(in_place, name=f"Push {wheel.name}", src=str(wheel), dest=f"{WHEELS}/{wheel.name}")
    script = "/var/cache/ollastack/install-open-webui.sh"
    files.template(name="Open WebUI install script", src=str(template("openwebui-install.sh.j2")), dest=script,
                   mode="0755", python=shlex.quote(f"/usr/bin/{python}"), **install_arguments(data, [w.name for w in wheels], marker))
    return server.shell(name=f"Install Open WebUI {data.ollastack_openwebui_version} with uv", commands=[script])


def install_arguments(data, wheel_names: list[str], marker: str) -> dict[str, Any]:
    """Index options of the install script; torch comes from the wheelhouse when it holds one.

    Example: ``install_arguments(host.data, ["torch-2.13.0+cpu-cp311-....whl"], "open-webui==0.12.4")``
    """
    local = ["--find-links", WHEELS] if wheel_names else []
    index = ["--index-url", data.ollastack_openwebui_index_url] if data.ollastack_openwebui_index_url else []
    has_torch = any(name.startswith("torch-") for name in wheel_names)
    torch = ["--no-index", *local] if has_torch else ["--index-url", data.ollastack_openwebui_torch_index_url]
    # Every value is shell-quoted: the template is a shell script run as root.
    q = shlex.quote
    return {
        "venv": q(VENV), "uv_venv": q(UV_VENV), "uv_spec": q(f"uv=={UV_VERSION}"), "version": q(data.ollastack_openwebui_version),
        "spec": q(f"open-webui=={data.ollastack_openwebui_version}"), "marker": q(marker),
        "pip_args": shlex.join(index + local), "torch_args": shlex.join(torch), "index_args": shlex.join(index + local),
    }


def unit(data, quadlet: bool, image: str = "", present: Present = NOTHING) -> list:
    """The route's unit (a Quadlet file when ``quadlet``) and the settings drop-in; returns the operations.

    ``image``: the container's image when it is not ``openwebui.image`` (``openwebui.build_image``).
    """
    route = data.ollastack_openwebui_install
    env = environment(data)
    oidc = sso_section(data).enabled
    arguments = dict(venv=VENV, home=HOME, port=data.ollastack_openwebui_port, image=image or data.ollastack_openwebui_image,
                     autoupdate=data.ollastack_openwebui_autoupdate,
                     env_names=[*env, *SECRET_NAMES, *([OIDC_SECRET_NAME] if oidc else [])],
                     env_files=[SECRET_KEY_ENV, ADMIN_ENV, *([OIDC_ENV] if oidc else [])])
    if quadlet:
        services = [
            templated(present, name="Open WebUI Quadlet (container)", dest=QUADLET,
                      src=str(template("openwebui-container.container.j2")), **arguments),
            # A unit in /etc/systemd/system would hide the generated one (e.g. after an upgrade from Debian 12).
            absent(present, name="No hand-written Open WebUI unit", path=UNIT),
        ]
    else:
        services = [templated(present, name=f"Open WebUI unit ({route})", dest=UNIT,
                              src=str(template(f"openwebui-{route}.service.j2")), **arguments)]
    drop_in = templated(present, name="Open WebUI settings (override.conf)",
                        src=str(template("openwebui-override.conf.j2")), dest=DROP_IN,
                        environment={k: systemd_quoted(v) for k, v in env.items()})
    return [*services, drop_in]


def reads(data, image: str = "", archive: str = "") -> dict[str, list[str]]:
    """What ``openwebui`` reads of the host (``deploy.present.host_state`` arguments): the route's own files and
    every file, unit and secret of both routes; ``image``/``archive`` when not the ``openwebui`` settings'."""
    if data.ollastack_openwebui_install == "none":
        return {}
    route = (image_reads(image or data.ollastack_openwebui_image, archive or data.ollastack_openwebui_image_archive)
             if data.ollastack_openwebui_install == "container" else pip_reads(data))
    return {**route, "paths": [CONF_DIR, ADMIN_ENV, OIDC_ENV, UNIT, QUADLET, DROP_IN, *route["paths"]],
            "services": ["open-webui"], "exists": [SECRET_KEY_ENV]}


@deploy("Open WebUI", data_defaults=DEFAULTS)
def openwebui():
    data = host.data
    if data.ollastack_openwebui_install == "none":
        return
    refuse_pip_without_python()
    release = host_release()
    quadlet = data.ollastack_openwebui_install == "container" and release.quadlet
    image, archive = data.ollastack_openwebui_image, data.ollastack_openwebui_image_archive
    if data.ollastack_openwebui_install == "container":
        podman()
        if data.ollastack_openwebui_build_image:
            # Imported here: the build reuses this module's install recipe.
            from ollastack.deploy.webui_image import ensure_built

            image, built = ensure_built(data)
            archive = str(built)
    present = host_state(**reads(data, image, archive))
    if data.ollastack_openwebui_install == "container":
        installed = ensure_image(image, archive, present)
    else:
        installed = install_pip(data, release.webui_python, present)
    changes = [op for op in (installed, *secrets(data, present), *unit(data, quadlet, image, present)) if op is not None]
    # A generated unit cannot be enabled with systemctl: the Quadlet's [Install] section does it.
    restart_when_changed("Open WebUI", "open-webui", changes=changes, enabled=None if quadlet else True,
                         health_url=f"http://127.0.0.1:{data.ollastack_openwebui_port}/health", wait_s=300,
                         present=present)
