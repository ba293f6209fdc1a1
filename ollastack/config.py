"""Load and validate a stack description (``stack.toml``).

The models below are the single source of every setting: its type, its default and one line of
documentation (the field ``description``). ``deploy/defaults.py`` and the README table are derived
from them, so a setting is documented in exactly one place.

Example::

    from ollastack.config import load_stack
    stack = load_stack("stack.toml")      # raises ConfigError listing every bad field
    print(stack.ollama.host)
"""

from __future__ import annotations

import ipaddress
import json
import os
import posixpath
import re
import tomllib
import typing
import unicodedata
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ollastack.presets import BUILTINS, ModelfileError, parse_modelfile

if TYPE_CHECKING:
    from ollastack.providers import Provider

DEFAULT_CONFIG = "stack.toml"
CONFIG_ENV = "OLLASTACK_CONFIG"

# Ollama model references: name[:tag], optionally namespaced (library/llama3.2:1b) or on a registry.
# Every pattern below is matched whole (re.fullmatch): "$" would also match before a trailing newline.
MODEL_RE = re.compile(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*){0,2}(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?")
# Any negative duration means "forever" to Ollama: -1 says it without a leading "-" on anything else.
DURATION_RE = re.compile(r"-1|0|(\d+(\.\d+)?(ns|us|ms|s|m|h))+")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
DNS_NAME_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
# A host name as a URL or SSH destination may carry it: labels of letters, digits and inner hyphens.
HOST_NAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
# What may follow scheme://host[:port] in a URL: RFC 3986 characters less those a shell, apt's sources
# lines or a unit file could read specially (quotes, "$", ";", "&", "#", "!", "*", brackets, parentheses).
URL_REST_RE = re.compile(r"[A-Za-z0-9._~:/?@+,=%-]*")
SECRET_HINTS = ("password", "secret")


class ConfigError(Exception):
    """A stack description that cannot be used; ``problems`` lists one line per bad field."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s), nothing was touched:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def _provider(name: str) -> Provider:
    """The registered provider ``name`` (``ollastack.providers``); what a provider needs is its own check.

    Imported on use: the providers build on this schema, so they load after it.
    """
    from ollastack import providers

    return providers.get(name)


def control_characters(value: str) -> list[str]:
    """Control, format and line-separator characters in ``value`` (newline, NUL, CR, tab, ESC, DEL, U+2028 ...).

    Example: ``control_characters("a@b.c\\n") == ["U+000A"]``
    """
    return sorted({f"U+{ord(c):04X}" for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")})


class Section(BaseModel):
    """Base of every table of the stack description.

    One rule for every text setting, present and future: no control characters in a string, a
    string list item or a secret, whatever the field's own checks say (a newline is how a value
    grows a second line in a unit file or a shell script).
    """

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            text = text.get_secret_value() if isinstance(text, SecretStr) else text
            if isinstance(text, str) and (found := control_characters(text)):
                raise ValueError(f"control characters are not allowed ({', '.join(found)}); "
                                 "newlines, tabs, NUL and the like end up as extra lines on the hosts")
        return value


class Permits:
    """Marks characters a text setting legitimately holds although shells treat them specially.

    Such values are carried quoted wherever they go; tests read the marker (``permitted``) to tell
    a legitimate value from a hostile one. ``chars`` None: any printable character.
    Example: ``admin_name: Annotated[str, Permits(" ")]``
    """

    def __init__(self, chars: str | None = None):
        self.chars = chars


class LocalPath(Permits):
    """A path on the control machine (a file pushed to the hosts, a key): any printable name is legitimate."""


def permitted(field: Any) -> Permits | None:
    """The ``Permits`` marker of a model field, or None."""
    return next((m for m in field.metadata if isinstance(m, Permits)), None)


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


def _existing_file(value: str) -> str:
    if value and not _expand(value).is_file():
        raise ValueError(f"file not found: {_expand(value)}")
    return value


def _existing_dir(value: str) -> str:
    if value and not _expand(value).is_dir():
        raise ValueError(f"directory not found: {_expand(value)}")
    return value


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """``ADDRESS:PORT`` (IPv6 in brackets) as (address, port); a bare address gets ``default_port``.

    The one parser of such values (``ollama.host``, ``tls.dns_server``). Raises ValueError.
    Example: ``split_host_port("[::1]:11434") == ("::1", 11434)``; ``split_host_port("10.0.0.2", 53)``
    """
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?", value)
    if bracketed:
        host, port = bracketed.group(1), bracketed.group(2)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if port is None:
        if default_port is None or (address.version == 6 and bracketed):
            raise ValueError("expected ADDRESS:PORT, e.g. 127.0.0.1:11434 or [::1]:11434")
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected a port from 1 to 65535, e.g. 127.0.0.1:11434")
    return host, int(port)


def _host_port(value: str) -> str:
    try:
        split_host_port(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (use 127.0.0.1:11434 to keep Ollama private)") from None
    return value


def _resolver(value: str) -> str:
    if value:
        try:
            host, _ = split_host_port(value, default_port=53)
        except ValueError as exc:
            raise ValueError(f"{exc}; expected an IPv4 address, optionally with :PORT, e.g. 10.0.0.2:53") from None
        if ipaddress.ip_address(host).version != 4:
            raise ValueError("expected an IPv4 address, optionally with :PORT, e.g. 10.0.0.2:53")
    return value


def is_host(value: str) -> bool:
    """Whether ``value`` is an IP address or a DNS name (nothing an ssh command line could misread).

    Example: ``is_host("gpu1.example.com") and not is_host("-oProxyCommand=x")``
    """
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return bool(HOST_NAME_RE.fullmatch(value))


def check_url(value: str, schemes: tuple[str, ...] = ("http", "https"), path: bool = True) -> str:
    """Parse ``value`` as a URL (urllib.parse) and refuse anything a shell, a unit or apt could misread.

    The scheme must be one of ``schemes``, the host a DNS name or an IP address; ``path`` False
    allows nothing after the port but "/". No userinfo (``user:password@``): it would be readable on the hosts.
    Example: ``check_url("https://mirror.example.com/debian/")``
    """
    parts = urllib.parse.urlsplit(value)
    shown = "/".join(schemes)
    if parts.scheme not in schemes or not value.startswith(f"{parts.scheme}://"):
        raise ValueError(f"expected a {shown} URL like {schemes[-1]}://host.example.com")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    host = parts.hostname or ""
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user name or password in this URL (it would be readable on the hosts)")
    bracketed = parts.netloc.rpartition("@")[2].startswith("[")
    if not is_host(host) or bracketed != (":" in host):
        raise ValueError(f"{host!r} is not a host name or an IP address")
    rest = value[len(parts.scheme) + 3 + len(parts.netloc):]
    if not URL_REST_RE.fullmatch(rest):
        raise ValueError("after the host only letters, digits and ._~:/?@+,=%- are allowed "
                         "(no spaces, quotes, $, ;, &, #, backticks)")
    if not path and rest not in ("", "/"):
        raise ValueError(f"expected only {shown}://host[:port], no path")
    return value


def _url_check(schemes: tuple[str, ...], path: bool) -> AfterValidator:
    def validate(value: str) -> str:
        return check_url(value, schemes, path) if value else value
    return AfterValidator(validate)


# Optional URL settings ("" allowed), checked by ``check_url``: ``gpu.cuda_repo_url: Url = ...``.
Url = Annotated[str, _url_check(("http", "https"), path=True)]
# scheme://host[:port] and nothing after it (an API endpoint, a proxy).
OriginUrl = Annotated[str, _url_check(("http", "https"), path=False)]
HttpsOriginUrl = Annotated[str, _url_check(("https",), path=False)]


# The host paths a setting must never name: chown/chmod there breaks the system.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/proc",
                "/root", "/run", "/sbin", "/sys", "/tmp", "/var/tmp", "/dev/shm")
SYSTEM_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/srv", "/usr", "/usr/local", "/var")
# Their entries are the system's own (/usr/bin, /var/lib, /usr/local/sbin) or users' homes.
SYSTEM_PARENTS = ("/home", "/usr", "/usr/local", "/var")
HOST_PATH_RE = re.compile(r"(/[A-Za-z0-9._+@-]+)+")


def _host_path(value: str) -> str:
    if not HOST_PATH_RE.fullmatch(value) or posixpath.normpath(value) != value:
        raise ValueError("expected an absolute, normalized path of letters, digits and ._+@- (no .., no spaces), "
                         "e.g. /srv/ollama/models")
    inside = any(value == t or value.startswith(t + "/") for t in SYSTEM_TREES)
    if inside or value in SYSTEM_DIRS or posixpath.dirname(value) in SYSTEM_PARENTS:
        raise ValueError(f"{value} is a system directory (or inside one); the converge would hand it to another "
                         "user: pick a directory of its own, e.g. /srv/ollama/models")
    return value


ExistingFile = Annotated[str, AfterValidator(_existing_file), LocalPath()]
ExistingDir = Annotated[str, AfterValidator(_existing_dir), LocalPath()]
HostPort = Annotated[str, AfterValidator(_host_port)]
Resolver = Annotated[str, AfterValidator(_resolver)]
HostPath = Annotated[str, AfterValidator(_host_path)]


class StackSection(Section):
    name: str = Field("demo", description="Names cloud resources, the CA, lab hosts and the state file.",
                      pattern=r"^[a-z][a-z0-9-]{0,22}$")
    provider: str = Field(
        "lab", description="Where hosts come from: lab (local Debian hosts), azure, alibaba or static.")

    @field_validator("provider")
    @classmethod
    def _registered(cls, value: str) -> str:
        _provider(value)
        return value


class AccessSection(Section):
    admin_cidrs: list[str] = Field(
        ["127.0.0.1/32"], min_length=1,
        description="Networks allowed to reach SSH (cloud rules and host firewall). Everyone else gets 80/443 only.")
    ssh_from_anywhere: bool = Field(
        False, description="Allow a /0 network (the whole internet) in admin_cidrs; `up` and `validate` then warn.")
    ssh_public_key: ExistingFile = Field("~/.ssh/id_ed25519.pub", description="Public key installed on the hosts.")
    ssh_private_key: ExistingFile = Field("~/.ssh/id_ed25519", description="Private key pyinfra logs in with.")

    @field_validator("admin_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        bad = []
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                bad.append(f"{cidr!r} ({exc})")
        if bad:
            raise ValueError("not a network in CIDR form like 198.51.100.7/32: " + ", ".join(bad))
        return value


class StaticSection(Section):
    hosts: list[str] = Field([], description="Addresses or names of existing Debian hosts (provider = static).",
                             examples=[["192.0.2.10", "gpu1.example.com"]])
    user: str = Field("root", description="SSH user on static hosts (sudo is used when it is not root).",
                      pattern=r"^[a-z_][a-z0-9_-]{0,31}$")

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if not is_host(h)]
        if bad:
            raise ValueError(f"not an IP address or DNS name: {', '.join(map(repr, bad))}")
        return value


class LabSection(Section):
    hosts: int = Field(1, ge=1, le=8, description="How many local Debian hosts `ollastack up` starts.")
    release: Literal["bookworm", "trixie"] = Field("trixie", description="Debian release of the lab hosts: trixie (13) or bookworm (12).")
    subnet: str = Field("10.213.0.0/24", description="Private bridge network of the lab hosts (the control machine is .1).")
    jump_backends: bool = Field(False, description="Reach a fleet's backends through its gateway (an SSH jump host), "
                                "as on a cloud, to rehearse that topology; false: directly over the bridge.")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or not net.is_private or net.prefixlen > 26:
            raise ValueError("expected a private IPv4 network of /26 or larger, e.g. 10.213.0.0/24")
        return value


AZURE_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*){3}")


class AzureSection(Section):
    subscription_id: str = Field("", description="Subscription to create resources in (or AZURE_SUBSCRIPTION_ID).",
                                 pattern=r"^([0-9A-Za-z][0-9A-Za-z-]{0,63})?$",
                                 examples=["00000000-0000-0000-0000-000000000000"])
    location: str = Field("westeurope", description="Azure region.", pattern=r"^[a-z0-9]+$")
    vm_size: str = Field("Standard_NC4as_T4_v3", description="VM size (a GPU size for real models).",
                         pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    dns_label: str = Field("", description="Public IP DNS label: <label>.<location>.cloudapp.azure.com, used as TLS name.",
                           pattern=r"^([a-z][a-z0-9-]{1,61}[a-z0-9])?$", examples=["mychat"])
    cloud: Literal["public", "china", "usgov"] = Field(
        "public", description="Azure cloud: picks the Resource Manager endpoint and the sign-in authority.")
    resource_manager_url: HttpsOriginUrl = Field(
        "", description="Resource Manager URL overriding the cloud's (https; trust comes from REQUESTS_CA_BUNDLE).",
        examples=["https://management.azure.com"])
    resource_group: str = Field("", description="Resource group holding everything; empty: <stack name>-rg.",
                                pattern=r"^([A-Za-z0-9_()][A-Za-z0-9._()-]{0,88}[A-Za-z0-9_()-])?$", examples=["demo-rg"])
    image: str = Field("Debian:debian-13:13-gen2:latest",
                       description="VM image as publisher:offer:sku:version (Debian 12: Debian:debian-12:12-gen2:latest).")
    os_disk_gb: int = Field(64, ge=30, le=4095, description="OS disk size in GiB (models live there).")
    admin_username: str = Field("ollastack", description="Admin user created on the VM (SSH key only).",
                                pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    price_currency: str = Field("USD", description="Currency of the Retail Prices API's list prices `plan` shows "
                                                   "(e.g. EUR, GBP, JPY: your account's).", pattern=r"^[A-Z]{3}$")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not AZURE_IMAGE_RE.fullmatch(value):
            raise ValueError("expected publisher:offer:sku:version, e.g. Debian:debian-12:12-gen2:latest")
        return value

    @field_validator("resource_manager_url")
    @classmethod
    def _arm_url(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("admin_username")
    @classmethod
    def _admin(cls, value: str) -> str:
        if value in ("root", "admin", "administrator", "guest", "user", "test"):
            raise ValueError("Azure reserves this name; pick another one, e.g. ollastack")
        return value

    def subscription(self) -> str:
        """The subscription id: ``subscription_id``, else ``$AZURE_SUBSCRIPTION_ID``, else ""."""
        return self.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID", "")




class AlibabaSection(Section):
    region: str = Field("cn-hangzhou", description="Alibaba Cloud region id.", pattern=r"^[a-z]+(-[a-z0-9]+)+$")
    instance_type: str = Field("ecs.gn7i-c8g1.2xlarge", description="ECS instance type (a GPU type for real models).",
                               pattern=r"^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$")
    zone: str = Field("", description="Zone for the vSwitch and instance; empty: the first zone offering instance_type.",
                      pattern=r"^([a-z]+(-[a-z0-9]+)+)?$", examples=["cn-hangzhou-h"])
    image_pattern: str = Field("debian_13*x64*",
                               description="Pattern (fnmatch) of the system image name; the newest match is used (Debian 12: debian_12*x64*).",
                               pattern=r"^[A-Za-z0-9_*?\[][A-Za-z0-9._*?\[\]-]{0,127}$")
    image_id: str = Field("", description="Pin an exact image id instead of the newest image matching image_pattern.",
                          pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})?$", examples=["debian_12_9_x64_20G_alibase_20250117.vhd"])
    system_disk_gb: int = Field(100, ge=20, le=2048, description="System disk size in GiB (models live there).")
    system_disk_category: str = Field("cloud_essd", description="System disk category (cloud_essd, cloud_auto, cloud_efficiency).",
                                      pattern=r"^[a-z][a-z0-9_]{0,31}$")
    bandwidth_mbps: int = Field(10, ge=1, le=200, description="Public IP outbound bandwidth (pay by traffic); gives the instance its public address.")
    admin_username: str = Field("root", description="User pyinfra logs in as (Alibaba's Debian images allow only root with the key pair).",
                                pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ecs_endpoint: OriginUrl = Field("", description="ECS API URL (http:// allowed); empty: the SDK's endpoint for the region.",
                                      examples=["https://ecs.cn-hangzhou.aliyuncs.com"])
    vpc_endpoint: OriginUrl = Field("", description="VPC API URL (http:// allowed); empty: the SDK's endpoint for the region.",
                                      examples=["https://vpc.cn-hangzhou.aliyuncs.com"])


class CloudSection(Section):
    max_hourly_price: float = Field(
        0.0, ge=0, description="azure/alibaba: `up` refuses before creating anything when the plan's hourly price "
                               "(VM, disk, public IP; in the price source's currency, see `ollastack plan`) is higher, "
                               "or cannot be found; 0: no limit.")


class OllamaSection(Section):
    version: str = Field("0.13.3", description="Pinned Ollama release; `ollastack pin ollama VERSION` sets it and its sha256.", pattern=r"^\d+\.\d+\.\d+$")
    sha256: str = Field("70a3d0f4cccd003641c5531d564a3494ed9a422e397c437d40f802ec1003c6eb",
                        description="sha256 of the release archive; checked before anything is replaced.")
    url: Url = Field("", description="Download URL of the archive; empty: the official GitHub release (ollama-linux-amd64: .tgz before 0.14.0, .tar.zst from 0.14.0 on).",
                       examples=["https://mirror.example.com/ollama/v0.13.3/ollama-linux-amd64.tgz"])
    archive: ExistingFile = Field("", description="Local archive (.tgz or .tar.zst) pushed from the control machine instead of a download.")
    host: HostPort = Field("127.0.0.1:11434", description="OLLAMA_HOST; keep it on loopback: Ollama has no authentication.")
    listen_beyond_loopback: bool = Field(
        False, description="Allow ollama.host off loopback (e.g. 0.0.0.0:11434); the host firewall still drops the port from outside.")
    models: list[str] = Field(["llama3.2:1b"], description="Models pulled when missing.")
    models_dir: HostPath = Field("/usr/share/ollama/.ollama/models", description="OLLAMA_MODELS, owned by the ollama user.")
    keep_alive: str = Field("5m", description="OLLAMA_KEEP_ALIVE: how long a model stays loaded (-1: forever).")
    num_parallel: int = Field(1, ge=1, le=64, description="OLLAMA_NUM_PARALLEL: requests served at once per model.")
    max_loaded_models: int = Field(1, ge=1, le=16, description="OLLAMA_MAX_LOADED_MODELS.")
    max_queue: int = Field(512, ge=1, description="OLLAMA_MAX_QUEUE: requests queued before 503.")
    context_length: int = Field(4096, ge=256, le=1048576, description="OLLAMA_CONTEXT_LENGTH.")
    flash_attention: bool = Field(False, description="OLLAMA_FLASH_ATTENTION.")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="OLLAMA_KV_CACHE_TYPE.")
    https_proxy: OriginUrl = Field("", description="HTTPS_PROXY for model pulls (http(s)://host:port, no password); empty: none.",
                                         examples=["http://proxy.example.com:3128"])
    pull_retries: int = Field(2, ge=0, le=10, description="Further tries of a model pull after a passing failure (connection lost, HTTP 5xx, stall, stream cut); an unknown model or another permanent error fails at once.")
    pull_idle_timeout: int = Field(120, ge=10, le=3600, description="Seconds a model pull may go without progress before that try is given up.")
    pull_deadline: int = Field(3600, ge=60, le=86400, description="Overall seconds per model pull, every try included; past it the converge fails naming the model.")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not SHA256_RE.fullmatch(value):
            raise ValueError("expected 64 lowercase hexadecimal characters (from the release's sha256sum.txt)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.endswith((".tgz", ".tar.zst")):
            raise ValueError("expected an http(s) URL ending in .tgz or .tar.zst")
        return value

    @field_validator("archive")
    @classmethod
    def _archive(cls, value: str) -> str:
        if value and not value.endswith((".tgz", ".tar.zst")):
            raise ValueError("expected a .tgz or .tar.zst file")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not MODEL_RE.fullmatch(m)]
        if bad:
            raise ValueError(f"not a model reference like llama3.2:1b: {', '.join(map(repr, bad))}")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not DURATION_RE.fullmatch(value):
            raise ValueError("expected a duration like 5m, 1h30m, 0 or -1")
        return value


EMAIL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")
IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9.-]*(:\d+)?/[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@sha256:[0-9a-f]{64})")
# A display name: letters (any script), digits, inner spaces, dots and hyphens.
DISPLAY_NAME_RE = re.compile(r"[^\W_]([\w .-]{0,62}[\w.])?")


class OpenWebUISection(Section):
    port: int = Field(8080, ge=1024, le=65535, description="Loopback port Open WebUI listens on; nginx proxies to it.")
    install: Literal["container", "pip", "none"] = Field(
        "container", description="How Open WebUI runs: container (Podman, systemd unit), pip (venv installed with uv) or none.")
    image: str = Field("ghcr.io/open-webui/open-webui:v0.12.4",
                       description="Container image, fully qualified, pinned by tag or (best, with autoupdate off) by digest `name@sha256:…`.")
    image_archive: ExistingFile = Field("", description="Local `podman save` archive pushed to the host and loaded instead of pulling `image`.")
    autoupdate: bool = Field(False, description="Container route: label the container and enable podman-auto-update.timer, which pulls whatever the tag points to daily and restarts on it; off by default so that only a converge changes the image. Needs a tag (podman auto-update refuses digests).")
    version: str = Field("0.12.4", description="pip route: pinned open-webui release from the package index.",
                         pattern=r"^\d+\.\d+\.\d+$")
    index_url: Url = Field("", description="pip route: package index (a mirror); empty: PyPI.",
                             examples=["https://pypi.example.com/simple"])
    torch_index_url: Url = Field("https://download.pytorch.org/whl/cpu",
                                   description="pip route: where the CPU build of torch comes from when find_links has none.")
    find_links: ExistingDir = Field("", description="pip route: local wheel directory pushed to the host and searched first when Open WebUI is installed or upgraded (air-gapped installs).")
    admin_email: str = Field("admin@example.com", description="Admin account created on first start.")
    admin_password: SecretStr = Field(
        SecretStr(""), description="Admin password; empty: generated once, kept 0600 on the control machine (`ollastack admin-password`).")
    admin_name: Annotated[str, Permits(" ")] = Field("Admin", description="Display name of the admin account (letters, digits, spaces, . and -).")
    enable_signup: bool = Field(False, description="Let visitors create accounts (they wait as default_user_role).")
    default_user_role: Literal["pending", "user", "admin"] = Field("pending", description="Role of new accounts.")
    offline: bool = Field(False, description="OFFLINE_MODE: no update checks or model downloads from the internet.")
    openai_api_base_url: Url = Field("", description="OpenAI-compatible API to offer besides Ollama; empty: ENABLE_OPENAI_API off.",
                                       examples=["https://api.example.com/v1"])
    ollama_url: Url = Field("", description="OLLAMA_BASE_URL; empty: the host's own Ollama (from ollama.host).",
                              examples=["http://10.0.0.5:11434"])
    build_image: bool = Field(False, description="Container route: build the image on the control machine from the package index instead of pulling `image` (hosts that cannot reach ghcr.io): a Debian 12 root filesystem (debootstrap from build_mirror) with open-webui==version installed from index_url/find_links (CPU torch from find_links or torch_index_url), pushed and loaded like image_archive. Needs root and debootstrap on the control machine.")
    build_mirror: Url = Field("", description="build_image: Debian mirror debootstrap makes the image's root filesystem from; empty: the control machine's own (the first non-security URI of its apt sources).",
                              examples=["http://mirror.example.com/debian"])
    build_dir: Annotated[str, LocalPath()] = Field("~/.cache/ollastack/images", description="build_image: where built images are kept on the control machine, one archive per version and inputs (reused by later converges and other stacks).")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE_RE.fullmatch(value):
            raise ValueError("expected a fully qualified, pinned image like ghcr.io/open-webui/open-webui:v0.12.4")
        return value

    @field_validator("index_url", "torch_index_url", "openai_api_base_url", "ollama_url", "build_mirror")
    @classmethod
    def _url(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("admin_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DISPLAY_NAME_RE.fullmatch(value):
            raise ValueError("expected a display name of letters, digits, spaces, . and - (up to 64), e.g. Jane Doe")
        return value

    @field_validator("admin_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL_RE.fullmatch(value):
            raise ValueError("expected an e-mail address like admin@example.com")
        return value.lower()

    @model_validator(mode="after")
    def _build_image(self) -> OpenWebUISection:
        if self.build_image and self.install != "container":
            raise ValueError("build_image builds the container route's image: set install = \"container\" or build_image = false")
        if self.build_image and self.image_archive:
            raise ValueError("build_image and image_archive both name where the image comes from: keep one")
        if self.build_image and not self.build_dir:
            raise ValueError("build_image needs build_dir, a directory on the control machine for the built images")
        return self


# ACME accounts need a mailbox on a real domain: Let's Encrypt refuses addresses like root@localhost.
ACME_EMAIL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,63}@(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
ACME_SERVERS = {
    "": "https://acme-v02.api.letsencrypt.org/directory",
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}


def acme_directory(acme_server: str) -> str:
    """The ACME directory URL of ``tls.acme_server``: ``acme_directory("staging")`` is Let's Encrypt staging's."""
    return ACME_SERVERS.get(acme_server, acme_server)


class TLSSection(Section):
    mode: Literal["self-signed", "letsencrypt"] = Field("self-signed", description="Where the certificate comes from.")
    domain: str = Field("", description="Server name; empty: the host's address (letsencrypt: the provider's DNS name, e.g. azure.dns_label).",
                        examples=["chat.example.com"])
    days: int = Field(397, ge=30, le=825, description="Validity of self-signed server certificates.")
    renew_before_days: int = Field(30, ge=1, le=365, description="Re-issue a self-signed certificate this long before expiry.")
    email: str = Field("", description="letsencrypt: ACME account e-mail (expiry notices); required in that mode.",
                       examples=["admin@example.com"])
    acme_server: str = Field("", description="letsencrypt: ACME directory: empty or production (Let's Encrypt), staging, or an https URL.",
                             examples=["https://acme.example.com/directory"])
    acme_ca_bundle: ExistingFile = Field("", description="letsencrypt: CA file certbot trusts for a private ACME server (REQUESTS_CA_BUNDLE); empty: the system's.")
    check_dns: bool = Field(True, description="letsencrypt: check from the control machine that the domain resolves to the host before requesting.")
    dns_server: Resolver = Field("", description="Resolver (ADDRESS or ADDRESS:PORT) for the DNS check; empty: the control machine's own.",
                                 examples=["10.0.0.2:53"])

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if value and not DNS_NAME_RE.fullmatch(value):
            raise ValueError("expected a DNS name like chat.example.com")
        return value

    @field_validator("email")
    @classmethod
    def _acme_email(cls, value: str) -> str:
        if value and not ACME_EMAIL_RE.fullmatch(value):
            raise ValueError("expected an e-mail address on a public domain, like admin@example.com")
        return value

    @field_validator("acme_server")
    @classmethod
    def _acme_server(cls, value: str) -> str:
        if value in ACME_SERVERS:
            return value
        try:
            return check_url(value, ("https",))
        except ValueError as exc:
            raise ValueError(f"expected production, staging or an https URL of an ACME directory ({exc})") from None


NVIDIA_CUDA_KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"


class GpuSection(Section):
    mode: Literal["auto", "off", "required"] = Field(
        "auto", description="NVIDIA driver: auto (install when an NVIDIA GPU is present), off, or required (fail without one).")
    driver_branch: str = Field("570", description="Pinned NVIDIA driver branch (current Ollama needs 550 or newer).",
                               pattern=r"^\d{3}$")
    cuda_repo_url: Url = Field("", description="NVIDIA CUDA apt repository; empty: NVIDIA's for the host's Debian release (a mirror may be given).",
                                 examples=["https://mirror.example.com/cuda/repos/debian12/x86_64/"])
    cuda_key_url: Url = Field("", description="Signing key of the repository (ASCII armored); empty: <cuda_repo_url>3bf863cc.pub.",
                                examples=["https://mirror.example.com/cuda/3bf863cc.pub"])
    cuda_key_fingerprint: Annotated[str, Permits(" ")] = Field(NVIDIA_CUDA_KEY_FINGERPRINT,
                                      description="Fingerprint the downloaded signing key must have; anything else is refused.")
    secure_boot_signing: bool = Field(
        False, description="Secure Boot is on and a MOK for DKMS module signing is enrolled: install anyway instead of stopping.")

    @field_validator("driver_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if int(value) < 550:
            raise ValueError("current Ollama needs driver 550 or newer; pick a branch like 570")
        return value

    @field_validator("cuda_key_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        value = value.replace(" ", "").upper()
        if not re.fullmatch(r"[0-9A-F]{40}", value):
            raise ValueError("expected the key's 40 hexadecimal digit fingerprint (gpg --show-keys)")
        return value


PRESET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# What a system prompt may hold beyond printable text: it travels in a JSON body, never through a shell.
SYSTEM_PROMPT_CONTROLS = ("U+000A", "U+0009")


class PresetParameters(Section):
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature; unset: the base model's.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling threshold; unset: the base model's.")
    top_k: int | None = Field(None, ge=1, le=1000, description="Sample from the k likeliest tokens; unset: the base model's.")
    repeat_penalty: float | None = Field(None, ge=0, le=2, description="Penalty on repeated tokens; unset: the base model's.")
    num_predict: int | None = Field(None, ge=-1, le=131072, description="Most new tokens per answer (-1: no limit); unset: the base model's.")
    num_ctx: int | None = Field(None, ge=256, le=1048576, description="Context length in tokens; unset: the base model's (else ollama.context_length).")


class CustomPreset(Section):
    """One ``[[presets.custom]]`` table: either base/system/parameters, or a Modelfile holding them."""

    name: str = Field(description="Ollama model name of the preset (lower case letters, digits, ._-), listed as NAME:latest.")
    base: str = Field("", description="Model the preset is made from (`from`); one of ollama.models, so it is pulled first.")
    system: Annotated[str, Permits()] = Field("", description="System prompt; any text, newlines included (sent as JSON, never through a shell).")
    parameters: PresetParameters = Field(default_factory=PresetParameters, description="Generation parameters.")
    modelfile: ExistingFile = Field("", description="Modelfile (FROM, PARAMETER, SYSTEM) instead of base/system/parameters.")

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:  # type: ignore[override]
        if info.field_name == "system" and isinstance(value, str):
            found = [c for c in control_characters(value) if c not in SYSTEM_PROMPT_CONTROLS]
            if found:
                raise ValueError(f"control characters other than newline and tab are not allowed ({', '.join(found)})")
            return value
        return Section._no_control_characters.__func__(cls, value)  # type: ignore[attr-defined]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PRESET_NAME_RE.fullmatch(value):
            raise ValueError("expected an Ollama model name of lower case letters, digits and ._- (up to 64), "
                             "e.g. support-bot")
        return value

    @model_validator(mode="after")
    def _from_modelfile(self) -> "CustomPreset":
        if self.modelfile:
            if self.base or self.system or self.parameters.model_dump(exclude_none=True):
                raise ValueError("modelfile: give either a Modelfile or base/system/parameters, not both")
            try:
                found = parse_modelfile(_expand(self.modelfile).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"modelfile: cannot read {self.modelfile}: {exc}") from None
            except ModelfileError as exc:
                raise ValueError(f"modelfile {self.modelfile}: {exc}") from None
            try:
                parsed = CustomPreset(name=self.name, base=found["base"], system=found["system"],
                                      parameters=PresetParameters(**found["parameters"]))
            except ValidationError as exc:
                shown = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                                  for e in exc.errors())
                raise ValueError(f"modelfile {self.modelfile}: {shown}") from None
            self.base, self.system, self.parameters = parsed.base, parsed.system, parsed.parameters
        if not self.base:
            raise ValueError("base: a preset needs the model it is made from (base), or a modelfile")
        if not MODEL_RE.fullmatch(self.base):
            raise ValueError(f"base: {self.base!r} is not a model reference like llama3.2:1b")
        return self


class PresetsSection(Section):
    use: list[Literal[tuple(BUILTINS)]] = Field(  # type: ignore[valid-type]
        [], description="Built-in presets to create on the hosts: " + ", ".join(BUILTINS) + " (see the README for their values).",
        examples=[["factual", "concise"]])
    base: str = Field("", description="Model the built-in presets are made from; empty: the first of ollama.models.",
                      examples=["llama3.2:1b"])
    custom: list[CustomPreset] = Field(
        [], description="Own presets, as [[presets.custom]] tables: name, base, system, parameters "
                        "(temperature, top_p, top_k, repeat_penalty, num_predict, num_ctx), or modelfile instead.")

    @field_validator("base")
    @classmethod
    def _base(cls, value: str) -> str:
        if value and not MODEL_RE.fullmatch(value):
            raise ValueError("expected a model reference like llama3.2:1b")
        return value


# Names of groups and users in the stack: they name files on the control machine and CLI arguments.
AccountName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


def _model_names(value: list[str]) -> list[str]:
    """Model references like ``ollama.models``, each once by the name Ollama lists it under (``tagged``)."""
    from ollastack.ollama_names import tagged

    bad = [m for m in value if not MODEL_RE.fullmatch(m)]
    if bad:
        raise ValueError(f"not a model reference like llama3.2:1b: {', '.join(map(repr, bad))}")
    names = [tagged(m) for m in value]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"listed twice: {', '.join(twice)}")
    return value


ModelNames = Annotated[list[str], AfterValidator(_model_names)]


def _permission_names(value: list[str]) -> list[str]:
    from ollastack.webui_permissions import NAMES

    bad = [p for p in value if p not in NAMES]
    if bad:
        raise ValueError(f"not an Open WebUI permission: {', '.join(map(repr, bad))} "
                         "(section.name, e.g. workspace.models, chat.controls, features.api_keys)")
    return value


def table_doc(model: type[BaseModel]) -> str:
    """One line naming each setting of a table kept per name (a group, a user), with its default."""
    parts = []
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else f"default {json.dumps(field.get_default())}"
        parts.append(f"`{name}` ({default}): {(field.description or '').rstrip('.')}")
    return "; ".join(parts)


class GroupSettings(Section):
    description: Annotated[str, Permits()] = Field(
        "", max_length=200, description="Shown in Open WebUI's admin panel.")
    models: ModelNames = Field(
        [], description="Models its members may use (read grants); a model no group of a user lists stays hidden from "
                        "that user (the admin sees every model).")
    default_models: ModelNames = Field(
        [], description="Models preselected in a new chat for its members (instead of accounts.default_models); "
                        "each must be among its models.")
    permissions: Annotated[list[str], AfterValidator(_permission_names)] = Field(
        [], description="Open WebUI permissions it grants on top of everyone's (accounts.permissions), as section.name: "
                        "e.g. workspace.models, chat.controls or features.api_keys (for `ollastack api-key`).")


class UserSettings(Section):
    email: str = Field(description="Sign-in e-mail address.")
    name: Annotated[str, Permits(" ")] = Field("", description="Display name; empty: the user's name in the stack.")
    role: Literal["user", "admin"] = Field("user", description="user or admin.")
    groups: list[str] = Field([], description="Groups (accounts.groups) the user is a member of.")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL_RE.fullmatch(value):
            raise ValueError("expected an e-mail address like jane@example.com")
        return value.lower()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not DISPLAY_NAME_RE.fullmatch(value):
            raise ValueError("expected a display name of letters, digits, spaces, . and - (up to 64), e.g. Jane Doe")
        return value


class AccountsSection(Section):
    default_models: ModelNames = Field(
        [], description="DEFAULT_MODELS: models preselected in a new chat for everyone; empty: left as Open WebUI has it.",
        examples=[["llama3.2:1b"]])
    permissions: dict[str, dict[str, bool]] = Field(
        {}, description="Everyone's permissions where they differ from Open WebUI's defaults, e.g. "
                        "`permissions.chat.controls = false` (a group can only grant more); empty: left as they are.")
    api_keys: bool = Field(
        False, description="ENABLE_API_KEYS, for the admin's key (`ollastack api-key`); on by itself when a group or "
                           "accounts.permissions grants features.api_keys.")
    groups: dict[AccountName, GroupSettings] = Field(
        {}, description="Open WebUI groups by name, `[accounts.groups.NAME]`, reconciled on every `up`: "
                        + table_doc(GroupSettings) + ". Groups the stack does not list are left alone.")
    users: dict[AccountName, UserSettings] = Field(
        {}, description="Open WebUI accounts by name, `[accounts.users.NAME]`, created with a password generated once "
                        "and kept 0600 beside the stack (`ollastack password NAME`); role and groups reconciled on "
                        "every `up`: " + table_doc(UserSettings) + ". Accounts the stack does not list are left alone "
                        "(`ollastack status` lists them).")

    @field_validator("permissions")
    @classmethod
    def _permissions(cls, value: dict[str, dict[str, bool]]) -> dict[str, dict[str, bool]]:
        _permission_names([f"{section}.{name}" for section, names in value.items() for name in names])
        return value

    @property
    def managed(self) -> bool:
        """Whether the stack says anything about accounts (only then does `up` reconcile them)."""
        return bool(self.default_models or self.permissions or self.api_keys or self.groups or self.users)


class BackupSection(Section):
    keep: int = Field(7, ge=1, le=1000, description="Backups of Open WebUI's data kept per host, on the control machine (`ollastack backup`) and in the host's scheduled backup directory; older ones are removed.")
    include_models: bool = Field(False, description="Back up Ollama's models directory too (large; by default models are pulled again instead).")
    schedule: str = Field("", description="Daily time (HH:MM, host's clock) of the host's own backup timer into /var/backups/ollastack/openwebui (`ollastack backup --fetch` copies the newest here); empty: no timer.",
                          examples=["02:00"],
                          pattern=r"^(([01]\d|2[0-3]):[0-5]\d)?$")


class FleetSection(Section):
    backends: int = Field(0, ge=0, le=7, description="Ollama backend hosts behind the first host (the gateway: nginx, Open WebUI, TLS, the only public host); each backend serves every model in ollama.models unless fleet.placement says otherwise; 0: one host runs everything.")
    max_fails: int = Field(1, ge=1, le=100, description="Failed connections to a backend within fail_timeout after which the gateway's nginx skips it (passive health check).")
    fail_timeout: int = Field(10, ge=1, le=3600, description="Seconds a failed backend is skipped before nginx tries it again, and the window max_fails counts in.")
    connect_timeout: int = Field(3, ge=1, le=60, description="Seconds the gateway waits for a backend to accept a connection before it tries the next one.")
    placement: list[ModelNames] = Field([], description="Models per backend, one list per backend in order (each backend pulls and serves only its own, every model of ollama.models on at least one); backends with the same models form a group, balanced by its own nginx upstream on the gateway's loopback (ollama.host's port, then the next ports), and Open WebUI asks every group; empty: every model on every backend.",
                                       examples=[[["llama3.2:1b", "qwen2.5:7b"], ["llama3.2:1b", "mistral:7b"]]])

    @field_validator("placement")
    @classmethod
    def _placed(cls, value: list[list[str]]) -> list[list[str]]:
        if any(not models for models in value):
            raise ValueError("every backend needs at least one model")
        return value


# Claim names as Open WebUI reads them (a dotted path reaches into nested claims, e.g. realm_access.roles).
CLAIM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_:/-]{0,63}(\.[A-Za-z_][A-Za-z0-9_:/-]{0,63}){0,7}")
# Values of a role claim: Open WebUI splits OAUTH_*_ROLES at commas, so none may hold one.
ROLE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/@-]{0,127}")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@/-]{0,254}")
ENV_NAME_RE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
SCOPE_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
DISCOVERY = "/.well-known/openid-configuration"


def _claim(value: str) -> str:
    if value and not CLAIM_RE.fullmatch(value):
        raise ValueError("expected a claim name of letters, digits and _:/- (dots between nested names), e.g. groups")
    return value


def _roles(values: list[str]) -> list[str]:
    if bad := [v for v in values if not ROLE_RE.fullmatch(v)]:
        raise ValueError(f"expected role names of letters, digits and _.:/@- (no commas, no spaces): {bad}")
    return values


def _domains(values: list[str]) -> list[str]:
    if bad := [v for v in values if not DNS_NAME_RE.fullmatch(v)]:
        raise ValueError(f"expected e-mail domains in lower case like example.org: {bad}")
    return values


def _discovery_url(value: str) -> str:
    if value and not urllib.parse.urlsplit(value).path.endswith(DISCOVERY):
        raise ValueError(f"expected the issuer's discovery document, e.g. https://id.example.org/realms/x{DISCOVERY}")
    return value


ClaimName = Annotated[str, AfterValidator(_claim)]
RoleNames = Annotated[list[str], AfterValidator(_roles)]


class SsoSection(Section):
    """Single sign-on through an OpenID Connect provider (Open WebUI's OIDC login, as its Helm chart sets it)."""

    provider_url: Annotated[Url, AfterValidator(_discovery_url)] = Field(
        "", description="OPENID_PROVIDER_URL: the issuer's discovery document, e.g. "
                        f"https://id.example.org/realms/staff{DISCOVERY}; empty: no single sign-on (the other "
                        "sso settings are then unused).")
    client_id: str = Field("", description="OAUTH_CLIENT_ID: this Open WebUI's client id at the provider.")
    client_secret_file: Annotated[str, AfterValidator(_existing_file), LocalPath()] = Field(
        "", description="OAUTH_CLIENT_SECRET from this 0600 file on the control machine; it reaches the host only in a "
                        "0600 root-owned environment file (/etc/open-webui/oidc.env), never in host data or output.")
    client_secret_env: str = Field(
        "", description="Or: the name of an environment variable of `ollastack up` holding the client secret.",
        examples=["OLLASTACK_OIDC_SECRET"])
    provider_name: Annotated[str, Permits(" ")] = Field(
        "SSO", description="OAUTH_PROVIDER_NAME: the sign-in button's label (\"Continue with ...\").")
    scopes: list[str] = Field(["openid", "email", "profile"], description="OAUTH_SCOPES requested.")
    allowed_domains: Annotated[list[str], AfterValidator(_domains)] = Field(
        [], description="OAUTH_ALLOWED_DOMAINS: e-mail domains that may sign in; empty: any.", examples=[["example.org"]])
    signup: bool = Field(True, description="ENABLE_OAUTH_SIGNUP: make an account at a person's first sign-in "
                                           "(else only accounts that exist may sign in).")
    merge_accounts_by_email: bool = Field(
        False, description="OAUTH_MERGE_ACCOUNTS_BY_EMAIL: a first sign-in takes over the account with the same e-mail "
                           "(e.g. one from accounts.users); only for a provider that verifies addresses.")
    role_claim: ClaimName = Field(
        "", description="OAUTH_ROLES_CLAIM, and ENABLE_OAUTH_ROLE_MANAGEMENT on: the claim whose values set the role "
                        "at each sign-in; empty: new accounts get openwebui.default_user_role.", examples=["roles"])
    allowed_roles: RoleNames = Field(
        ["user", "admin"], description="OAUTH_ALLOWED_ROLES: claim values that make a user (others are refused).")
    admin_roles: RoleNames = Field(["admin"], description="OAUTH_ADMIN_ROLES: claim values that make an admin.")
    group_claim: ClaimName = Field(
        "", description="OAUTH_GROUPS_CLAIM, and ENABLE_OAUTH_GROUP_MANAGEMENT on: the claim listing a person's groups; "
                        "at each sign-in the account joins those of Open WebUI's groups (e.g. accounts.groups) and "
                        "leaves the others; empty: membership is left to the stack.", examples=["groups"])
    create_groups: bool = Field(False, description="ENABLE_OAUTH_GROUP_CREATION: make groups named in the claim "
                                                   "that Open WebUI lacks.")

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        if value and not CLIENT_ID_RE.fullmatch(value):
            raise ValueError("expected a client id of letters, digits and _.:@/- (up to 255)")
        return value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if value and not ENV_NAME_RE.fullmatch(value):
            raise ValueError("expected an environment variable name like OLLASTACK_OIDC_SECRET")
        return value

    @field_validator("provider_name")
    @classmethod
    def _provider_name(cls, value: str) -> str:
        if not DISPLAY_NAME_RE.fullmatch(value):
            raise ValueError("expected a label of letters, digits, spaces, . and - (up to 64), e.g. Company SSO")
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: list[str]) -> list[str]:
        if bad := [s for s in value if not SCOPE_RE.fullmatch(s)]:
            raise ValueError(f"expected scope names of letters, digits and _.:/-: {bad}")
        if "openid" not in value:
            raise ValueError("the scopes must include openid")
        return value

    @model_validator(mode="after")
    def _complete(self) -> "SsoSection":
        if not self.provider_url:
            return self
        if not self.client_id:
            raise ValueError("single sign-on (sso.provider_url) needs sso.client_id too")
        if bool(self.client_secret_file) == bool(self.client_secret_env):
            raise ValueError("name the client secret once: client_secret_file or client_secret_env")
        if self.client_secret_file and _expand(self.client_secret_file).stat().st_mode & 0o077:
            raise ValueError(f"sso.client_secret_file {_expand(self.client_secret_file)} is readable by others: "
                             "chmod 600 it (it holds the client secret)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.provider_url)


class Stack(Section):
    """A whole stack description. Sections mirror the TOML tables."""

    stack: StackSection = StackSection()
    access: AccessSection = Field(default_factory=AccessSection)
    static: StaticSection = StaticSection()
    lab: LabSection = LabSection()
    azure: AzureSection = AzureSection()
    alibaba: AlibabaSection = AlibabaSection()
    cloud: CloudSection = CloudSection()
    ollama: OllamaSection = OllamaSection()
    openwebui: OpenWebUISection = OpenWebUISection()
    tls: TLSSection = TLSSection()
    gpu: GpuSection = GpuSection()
    presets: PresetsSection = PresetsSection()
    accounts: AccountsSection = AccountsSection()
    backup: BackupSection = BackupSection()
    fleet: FleetSection = FleetSection()
    sso: SsoSection = SsoSection()

    @model_validator(mode="before")
    @classmethod
    def _every_section_given(cls, data: Any) -> Any:
        """Validate missing tables as empty ones, so that errors in their defaults carry the section name."""
        if isinstance(data, dict):
            return {**{name: {} for name in cls.model_fields}, **data}
        return data

    @model_validator(mode="after")
    def _provider_needs(self) -> "Stack":
        _provider(self.stack.provider).check(self)
        return self

    @model_validator(mode="after")
    def _letsencrypt_needs(self) -> "Stack":
        if self.tls.mode != "letsencrypt":
            return self
        if not self.tls.email:
            raise ValueError("tls.email: tls.mode = \"letsencrypt\" needs an ACME account e-mail, e.g. admin@example.com")
        if not self.tls.domain and not _provider(self.stack.provider).names_hosts(self):
            raise ValueError("tls.domain: tls.mode = \"letsencrypt\" needs a DNS name pointing at the host "
                             "(or azure.dns_label); certificates are never issued for bare IP addresses")
        return self

    @model_validator(mode="after")
    def _release_can(self) -> "Stack":
        release, setting = self.requested_release()
        if release == "trixie" and self.openwebui.install == "pip":
            raise ValueError(
                f"openwebui.install: the pip route needs Python 3.11 or 3.12 and Debian 13 (trixie, from {setting}) "
                "ships 3.13; use openwebui.install = \"container\" (Podman with Quadlet on Debian 13), "
                f"or Debian 12 by setting {setting}")
        return self

    @model_validator(mode="after")
    def _exposure(self) -> "Stack":
        """Settings that would re-open what the stack exists to close."""
        ollama_address, ollama_port = split_host_port(self.ollama.host)
        if self.openwebui.install != "none" and self.openwebui.port in (ollama_port, 22, 80, 443):
            raise ValueError(f"openwebui.port: {self.openwebui.port} is taken (Ollama listens on {ollama_port}; "
                             "22, 80 and 443 are SSH and nginx): nginx would serve that instead; pick e.g. 8080")
        if not ipaddress.ip_address(ollama_address).is_loopback and not self.ollama.listen_beyond_loopback:
            raise ValueError(f"ollama.host: {self.ollama.host} is off loopback, and Ollama has no authentication; "
                             "keep 127.0.0.1:11434, or set ollama.listen_beyond_loopback = true")
        if self.openwebui.enable_signup and self.openwebui.default_user_role == "admin":
            raise ValueError("openwebui.default_user_role: \"admin\" with enable_signup = true makes every visitor "
                             "an administrator; use \"pending\" or \"user\"")
        if self.whole_internet_cidrs() and not self.access.ssh_from_anywhere:
            raise ValueError(f"access.admin_cidrs: {', '.join(self.whole_internet_cidrs())} opens SSH to the whole "
                             "internet; name your networks, or set access.ssh_from_anywhere = true")
        return self

    def whole_internet_cidrs(self) -> list[str]:
        """The /0 networks in ``access.admin_cidrs``: ``["0.0.0.0/0"]``."""
        return [c for c in self.access.admin_cidrs if ipaddress.ip_network(c).prefixlen == 0]

    def warnings(self) -> list[str]:
        """Lines ``validate`` and ``up`` print to stderr for a valid but risky stack."""
        if cidrs := self.whole_internet_cidrs():
            return [f"warning: SSH is open to the whole internet (access.admin_cidrs {', '.join(cidrs)}, "
                    "access.ssh_from_anywhere = true)"]
        return []

    @model_validator(mode="after")
    def _autoupdate_needs_tag(self) -> "Stack":
        if self.openwebui.autoupdate and "@sha256:" in self.openwebui.image:
            raise ValueError(f"openwebui.autoupdate: podman auto-update follows a tag and refuses an image pinned by "
                             f"digest ({self.openwebui.image}); set openwebui.autoupdate = false to keep the digest, "
                             "or pin openwebui.image by tag")
        return self

    def requested_release(self) -> tuple[str | None, str]:
        """The Debian release this stack's hosts will run, and the setting that decides it (None: unknown)."""
        return _provider(self.stack.provider).release(self)

    def key_paths(self) -> tuple[Path, Path]:
        return _expand(self.access.ssh_public_key), _expand(self.access.ssh_private_key)

    @model_validator(mode="after")
    def _presets_fit(self) -> "Stack":
        """Presets are made from pulled models and never take a pulled model's or another preset's name."""
        from ollastack.ollama_names import tagged

        pulled = {tagged(m) for m in self.ollama.models}
        if self.presets.use and not (self.presets.base or self.ollama.models):
            raise ValueError("presets.base: the built-in presets need a model to be made from; "
                             "set presets.base or list one in ollama.models")
        bases = [("presets.base", self.presets.base)] if self.presets.use else []
        bases += [(f"presets.custom.{i}.base", p.base) for i, p in enumerate(self.presets.custom)]
        for where, base in bases:
            if base and tagged(base) not in pulled:
                raise ValueError(f"{where}: {base} is not in ollama.models; add it there so it is pulled "
                                 "before the preset is made from it")
        names = [*self.presets.use, *(p.name for p in self.presets.custom)]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"presets: {name} is named twice (built-in presets are {', '.join(BUILTINS)})")
            if tagged(name) in pulled:
                raise ValueError(f"presets: {name} is a model in ollama.models; the preset would replace it")
        return self

    @model_validator(mode="after")
    def _accounts_refer(self) -> "Stack":
        """Users name groups the stack lists; e-mails are unique and none is the admin's; group defaults are granted."""
        from ollastack.ollama_names import tagged

        accounts, problems = self.accounts, []
        for name, group in accounts.groups.items():
            extra = sorted({tagged(m) for m in group.default_models} - {tagged(m) for m in group.models})
            if extra:
                problems.append(f"accounts.groups.{name}.default_models: {', '.join(extra)} not among its models")
        emails: dict[str, str] = {}
        for name, user in accounts.users.items():
            if unknown := [g for g in user.groups if g not in accounts.groups]:
                problems.append(f"accounts.users.{name}.groups: {', '.join(map(repr, unknown))} not in accounts.groups")
            if user.email == self.openwebui.admin_email:
                problems.append(f"accounts.users.{name}.email: {user.email} is openwebui.admin_email (the admin account)")
            elif user.email in emails:
                problems.append(f"accounts.users.{name}.email: {user.email} is also accounts.users.{emails[user.email]}'s")
            emails.setdefault(user.email, name)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _fleet_fits(self) -> "Stack":
        """A fleet is one gateway plus backends the provider makes, with Ollama reached on the gateway's loopback."""
        if not self.fleet.backends:
            return self
        if not _provider(self.stack.provider).makes_fleets:
            raise ValueError(f"fleet.backends: provider \"{self.stack.provider}\" does not create backend hosts yet; "
                             "use provider = \"lab\", \"azure\" or \"alibaba\", or fleet.backends = 0")
        if self.lab.hosts != 1:
            raise ValueError(f"lab.hosts: a fleet has one gateway (lab.hosts = 1) and fleet.backends = "
                             f"{self.fleet.backends} Ollama hosts; set lab.hosts = 1")
        if not ipaddress.ip_address(split_host_port(self.ollama.host)[0]).is_loopback:
            raise ValueError(f"ollama.host: {self.ollama.host} is where the gateway's nginx balances the backends "
                             "and must stay on loopback (each backend listens on its private address by itself)")
        return self

    @model_validator(mode="after")
    def _placement_fits(self) -> "Stack":
        """Each backend's models come from ollama.models, and every model of it is served somewhere."""
        from ollastack.ollama_names import tagged

        placement = self.fleet.placement
        if not placement:
            return self
        if len(placement) != self.fleet.backends:
            raise ValueError(f"fleet.placement: {len(placement)} list(s) of models for fleet.backends = "
                             f"{self.fleet.backends}; give one list per backend, in order")
        wanted = {tagged(m): m for m in self.ollama.models}
        placed = [{tagged(m) for m in models} for models in placement]
        problems = [f"backend {i}: {', '.join(sorted(extra))} not in ollama.models (add it there)"
                    for i, models in enumerate(placed, 1) if (extra := models - set(wanted))]
        if unplaced := [m for t, m in wanted.items() if not any(t in models for models in placed)]:
            problems.append(f"{', '.join(unplaced)} of ollama.models on no backend (place it on at least one)")
        bases = {tagged(self.presets.base or self.ollama.models[0])} if self.presets.use and self.ollama.models else set()
        bases |= {tagged(p.base) for p in self.presets.custom if p.base}
        if partial := sorted(b for b in bases if not all(b in models for models in placed)):
            problems.append(f"{', '.join(partial)}: a preset's base model must be on every backend (each backend "
                            "makes the presets)")
        groups = len({frozenset(models) for models in placed})
        port = split_host_port(self.ollama.host)[1]
        if port < self.openwebui.port < port + groups:
            problems.append(f"openwebui.port {self.openwebui.port}: the gateway's upstreams of {groups} groups listen "
                            f"on ports {port}-{port + groups - 1}; pick another port")
        if self.openwebui.ollama_url:
            problems.append("openwebui.ollama_url: with a placement Open WebUI asks the gateway's upstream of each "
                            "group; leave it empty")
        if problems:
            raise ValueError("fleet.placement: " + "; ".join(problems))
        return self


# Settings that never travel in host data or output.
SECRETS = ("openwebui.admin_password",)


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _field(loc: tuple) -> Any:
    """The model field at a validation error's location, or None."""
    model: Any = Stack
    field = None
    for part in loc:
        fields = getattr(model, "model_fields", None)
        field = fields.get(str(part)) if fields else None
        if field is None:
            return None
        model = field.annotation
    return field


def _shown(loc: tuple, value: Any) -> str:
    field = _field(loc)
    if any(h in str(part) for part in loc for h in SECRET_HINTS) or (field is not None and field.annotation is SecretStr):
        return "<hidden>"
    # A URL's user:password@ is a secret too, whichever field it was typed into.
    text = re.sub(r"(://)[^/@]*@", r"\1<hidden>@", repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Stack
    parts = iter(loc[:-1])
    for part in parts:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if typing.get_origin(annotation) is dict:
            # A table kept per name (accounts.groups.NAME): the name is the next part of the location.
            annotation = typing.get_args(annotation)[1]
            next(parts, None)
        if not isinstance(annotation, type) or not issubclass(annotation, BaseModel):
            return []
        model = annotation
    return sorted(model.model_fields)


def _problem(err: Mapping[str, Any]) -> str:
    loc = tuple(err["loc"])
    # A key can hold a newline too: shown as repr, it stays on its line.
    where = ".".join(repr(str(p)) if control_characters(str(p)) else str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        return f"{where}: unknown setting (allowed here: {', '.join(allowed)})"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not loc:
        return msg
    return f"{where} = {_shown(loc, err.get('input'))}: {msg}"


def parse_stack(data: dict, source: str = "<stack>") -> Stack:
    """Validate an already-parsed stack description; raise ConfigError naming every bad field."""
    try:
        return Stack.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_problem(e) for e in exc.errors()]) from None


def load_stack(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Stack:
    """Read and validate ``stack.toml`` (``--config``, then ``$OLLASTACK_CONFIG``, then ./stack.toml).

    ``overrides`` (e.g. ``{"lab": {"hosts": 2}}`` from a command-line flag) replace settings before
    validation, so a bad flag is reported like a bad field.
    """
    path = config_path(str(path) if path else None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the stack description: {exc.strerror}; "
                                      "copy stack.example.toml to stack.toml or pass --config"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {exc.start}): save the stack description as UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    for section, values in (overrides or {}).items():
        # A section that is not a table stays as written: validation reports it.
        if isinstance(data.setdefault(section, {}), dict):
            data[section].update(values)
    return parse_stack(data, str(path))


def iter_settings(model: type[BaseModel] = Stack, prefix: str = ""):
    """Yield (dotted name, default, description) for every setting, in declaration order."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_settings(annotation, f"{prefix}{name}.")
        else:
            default = field.get_default(call_default_factory=True)
            if isinstance(default, SecretStr):
                default = default.get_secret_value()
            yield f"{prefix}{name}", default, field.description or ""
