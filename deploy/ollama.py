"""Ollama as a systemd service: pinned release, settings in a drop-in, models pulled when missing.

deploy/site.py runs it in two steps with the rest of the site between them: ``ollama(models=False)`` installs
and (re)starts the service, ``ollama_models`` waits until it answers and pulls the models. Ollama starts up
meanwhile, and the site answers before a long model download.
"""

from __future__ import annotations

import posixpath
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from ollastack.deploy.base import ensure_packages
from ollastack.deploy.defaults import DEFAULTS
from ollastack.deploy.facts import InstalledRelease, OllamaModels
from ollastack.deploy.nvidia import check_gpu_offload, ollama_after_driver
from ollastack.deploy.presets import create_presets
from ollastack.deploy.present import NOTHING, Present, directory, fact, host_state, put, templated, user
from ollastack.deploy.services import restart_when_changed, wait_until_healthy
from ollastack.deploy.units import systemd_quoted
from ollastack.resources import deploy_file, template
from ollastack.ollama_names import client_address, tagged
from ollastack.ollama_release import archive_url

CACHE = "/var/cache/ollastack"
PULL_SCRIPT = "/usr/local/lib/ollastack/ollama-pull.py"
UNIT = "/etc/systemd/system/ollama.service"
OVERRIDE = "/etc/systemd/system/ollama.service.d/override.conf"
# Written by the install script: the archive's sha256, and sha256sum's line for the binary it installed.
STAMP = "/var/lib/ollastack/ollama.sha256"
BINARY_SUMS = "/var/lib/ollastack/ollama.binary.sha256"
HOME = "/usr/share/ollama"
# Ollama keeps its key pair (made on first start) here, and by default its models.
STATE_DIR = f"{HOME}/.ollama"
HOME_DIRS = ("/home", "/root", "/run/user")
# How long a (re)started Ollama may take to answer.
HEALTH_WAIT_S = 60


def facts(data) -> list:
    """What ``ollama`` asks ``deploy.present.fact`` (for ``prefetch``): the installed release, the models."""
    return [(InstalledRelease, {"stamp": STAMP, "binary_sums": BINARY_SUMS}),
            (OllamaModels, {"address": client_address(data.ollastack_ollama_host)})]


def reads(data) -> dict[str, list[str]]:
    """What ``ollama`` reads of the host (``deploy.present.host_state`` arguments)."""
    return {"paths": [HOME, STATE_DIR, data.ollastack_ollama_models_dir, UNIT, OVERRIDE, PULL_SCRIPT],
            "services": ["ollama"], "users": ["ollama"], "texts": [OVERRIDE]}


def confinement(models_dir: str) -> dict[str, object]:
    """The unit's writable paths and ``ProtectHome``: models under a home directory stay reachable.

    Example: ``confinement("/srv/models") == {"writable": [STATE_DIR, "/srv/models"], "protect_home": "yes"}``
    """
    inside_state = models_dir == STATE_DIR or models_dir.startswith(f"{STATE_DIR}/")
    under_home = any(models_dir == d or models_dir.startswith(f"{d}/") for d in HOME_DIRS)
    return {"writable": [STATE_DIR] if inside_state else [STATE_DIR, models_dir],
            "protect_home": "read-only" if under_home else "yes"}


def environment(data) -> dict[str, str]:
    """The Ollama environment written to the drop-in, from the ``ollastack_ollama_*`` host data."""
    env = {
        "OLLAMA_HOST": data.ollastack_ollama_host,
        "OLLAMA_MODELS": data.ollastack_ollama_models_dir,
        "OLLAMA_KEEP_ALIVE": data.ollastack_ollama_keep_alive,
        "OLLAMA_NUM_PARALLEL": str(data.ollastack_ollama_num_parallel),
        "OLLAMA_MAX_LOADED_MODELS": str(data.ollastack_ollama_max_loaded_models),
        "OLLAMA_MAX_QUEUE": str(data.ollastack_ollama_max_queue),
        "OLLAMA_CONTEXT_LENGTH": str(data.ollastack_ollama_context_length),
        "OLLAMA_FLASH_ATTENTION": "1" if data.ollastack_ollama_flash_attention else "0",
        "OLLAMA_KV_CACHE_TYPE": data.ollastack_ollama_kv_cache_type,
    }
    if data.ollastack_ollama_https_proxy:
        env["HTTPS_PROXY"] = data.ollastack_ollama_https_proxy
    return env


def _archive_source(data) -> tuple[str, str]:
    """(source, file name on the host) of the release archive: a local file or a URL."""
    source = data.ollastack_ollama_archive or data.ollastack_ollama_url or archive_url(data.ollastack_ollama_version)
    suffix = ".tar.zst" if source.endswith(".tar.zst") else ".tgz"
    return source, f"ollama-{data.ollastack_ollama_version}-{data.ollastack_ollama_sha256[:16]}{suffix}"


def install_release(data):
    """Put the pinned archive on the host and swap it in, unless that exact release is installed, binary unchanged."""
    if fact(InstalledRelease, stamp=STAMP, binary_sums=BINARY_SUMS) == data.ollastack_ollama_sha256:
        return None
    source, name = _archive_source(data)
    remote = posixpath.join(CACHE, name)
    if name.endswith(".tar.zst"):
        # Only .tar.zst releases (0.14.0 on) need zstd: the install script's tar --zstd runs it.
        ensure_packages(["zstd"], "Install zstd to unpack the Ollama archive", host_state(packages=["zstd"]))
    script = posixpath.join(CACHE, "install-ollama.sh")
    # Read here, when installing, not in every converge's read: the cached archive's sha1 costs seconds.
    cache = host_state(paths=[CACHE, script, *([remote] if data.ollastack_ollama_archive else [])])
    directory(cache, name="Ollama download cache", path=CACHE, mode="0755")
    if data.ollastack_ollama_archive:
        put(cache, name=f"Push Ollama {data.ollastack_ollama_version} archive", src=source, dest=remote)
    else:
        files.download(name=f"Download Ollama {data.ollastack_ollama_version}", src=source, dest=remote,
                       sha256sum=data.ollastack_ollama_sha256, _retries=2, _retry_delay=5)
    templated(cache, name="Ollama install script", src=str(template("ollama-install.sh.j2")), dest=script,
              mode="0755", archive=shlex.quote(remote), sha256=shlex.quote(data.ollastack_ollama_sha256))
    return server.shell(name=f"Verify and install Ollama {data.ollastack_ollama_version}", commands=[script])


def models_may_have_moved(data, current: str | None) -> bool:
    """Whether Ollama comes back from a restart with another models directory or address than the live
    override.conf (``current``) gives it, so that what it lists before the restart says nothing.

    Example: ``models_may_have_moved(host.data, None)`` is True (no override yet).
    """
    lines = {line.strip() for line in (current or "").splitlines()}
    env = environment(data)
    return any(f'Environment="{key}={systemd_quoted(env[key])}"' not in lines for key in ("OLLAMA_MODELS", "OLLAMA_HOST"))


def pull_models(data, on_host: Present = NOTHING) -> None:
    """Pull every configured model that ``/api/tags`` does not list yet.

    When the converge moves Ollama to another models directory or address, what it lists now cannot be
    trusted: every model goes to the helper, which asks Ollama again after the restart (``--if-missing``).
    """
    address = client_address(data.ollastack_ollama_host)
    present = set(fact(OllamaModels, address=address) or [])
    recheck = models_may_have_moved(data, on_host.text(OVERRIDE))
    put(on_host, name="Model pull helper", src=str(deploy_file("files/ollama-pull.py")), dest=PULL_SCRIPT, mode="0755")
    for model in data.ollastack_ollama_models:
        if recheck or tagged(model) not in present:
            # The helper retries passing failures itself: pyinfra's _retries would retry an unknown model too.
            command = shlex.join(["python3", PULL_SCRIPT, "--idle-timeout", str(data.ollastack_ollama_pull_idle_timeout),
                                  "--deadline", str(data.ollastack_ollama_pull_deadline),
                                  "--retries", str(data.ollastack_ollama_pull_retries),
                                  *(["--if-missing"] if recheck else []), address, model])
            server.shell(name=f"Pull model {model}", commands=[command])


@deploy("Ollama", data_defaults=DEFAULTS)
def ollama(gpu_changes=(), models: bool = True):
    """Install, configure and (re)start Ollama, then, with ``models``, what ``ollama_models`` does. Returns the
    restart operation. deploy/site.py passes ``models=False`` and calls ``ollama_models`` last.

    Example (another project's deploy): ``ollama()``
    """
    data = host.data
    present = host_state(**reads(data))
    user(present, name="ollama system user", user="ollama", system=True, home=HOME, shell="/bin/false")
    directory(present, name="Ollama state directory", path=STATE_DIR, user="ollama", group="ollama", mode="0755")
    directory(present, name="Ollama models directory", path=data.ollastack_ollama_models_dir, user="ollama",
              group="ollama", mode="0755")
    installed = install_release(data)
    unit = templated(present, name="Ollama unit", src=str(template("ollama.service.j2")), dest=UNIT, mode="0644",
                     **confinement(data.ollastack_ollama_models_dir))
    # The mode is part of the file: whoever can write a unit or drop-in runs code as root.
    override = templated(present, name="Ollama settings (override.conf)", src=str(template("ollama-override.conf.j2")),
                         dest=OVERRIDE, mode="0644",
                         environment={k: systemd_quoted(v) for k, v in environment(data).items()})
    after_driver = ollama_after_driver()
    unit_changes = [op for op in (unit, override, after_driver) if op is not None]
    changes = [op for op in (installed, *unit_changes) if op is not None]
    restart = restart_when_changed("Ollama", "ollama", changes=changes, unit_changes=unit_changes,
                                   health_url=health_url(data), wait_s=HEALTH_WAIT_S, present=present, wait=False)
    if models:
        _models(data, present, restart, gpu_changes)
    return restart


@deploy("Ollama", data_defaults=DEFAULTS)
def ollama_models(restart, gpu_changes=()):
    """After ``ollama(models=False)`` (``restart``: what it returned) and other components: wait until a restarted
    Ollama answers, pull the missing models, create the presets and, with a GPU, check that a model runs on it.

    Example (deploy/site.py): ``restart = ollama(models=False)``, the other components, then
    ``ollama_models(restart, gpu_changes)``
    """
    _models(host.data, host_state(**reads(host.data)), restart, gpu_changes)


def _models(data, present: Present, restart, gpu_changes) -> None:
    wait_until_healthy("Ollama", "ollama", restart, health_url=health_url(data), wait_s=HEALTH_WAIT_S)
    pull_models(data, present)
    create_presets(data, models_may_have_moved(data, present.text(OVERRIDE)))
    check_gpu_offload(data, client_address(data.ollastack_ollama_host), [restart, *gpu_changes])


def health_url(data) -> str:
    """What answers once Ollama is up: ``http://127.0.0.1:11434/api/version``."""
    return f"http://{client_address(data.ollastack_ollama_host)}/api/version"
