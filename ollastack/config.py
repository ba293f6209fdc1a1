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
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG = "stack.toml"
CONFIG_ENV = "OLLASTACK_CONFIG"

# Ollama model references: name[:tag], optionally namespaced (library/llama3.2:1b) or on a registry.
MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*){0,2}(:[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")
DURATION_RE = re.compile(r"^(-1|0|-?(\d+(\.\d+)?(ns|us|ms|s|m|h))+)$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DNS_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
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


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _expand(path: str) -> Path:
    return Path(os.path.expanduser(path))


def _existing_file(value: str) -> str:
    if value and not _expand(value).is_file():
        raise ValueError(f"file not found: {_expand(value)}")
    return value


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected ADDRESS:PORT with a port from 1 to 65535, e.g. 127.0.0.1:11434")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (use 127.0.0.1 to keep Ollama private)") from None
    return value


ExistingFile = Annotated[str, AfterValidator(_existing_file)]
HostPort = Annotated[str, AfterValidator(_host_port)]


class StackSection(Section):
    name: str = Field("demo", description="Names cloud resources, the CA, lab hosts and the state file.",
                      pattern=r"^[a-z][a-z0-9-]{0,22}$")
    provider: Literal["lab", "azure", "alibaba", "static"] = Field(
        "lab", description="Where hosts come from: lab (local Debian hosts), azure, alibaba or static.")


class AccessSection(Section):
    admin_cidrs: list[str] = Field(
        ["127.0.0.1/32"], min_length=1,
        description="Networks allowed to reach SSH (cloud rules and host firewall). Everyone else gets 80/443 only.")
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
    hosts: list[str] = Field([], description="Addresses or names of existing Debian hosts (provider = static).")
    user: str = Field("root", description="SSH user on static hosts (sudo is used when it is not root).")


class LabSection(Section):
    hosts: int = Field(1, ge=1, le=8, description="How many local Debian hosts `ollastack up` starts.")
    release: Literal["bookworm", "trixie"] = Field("trixie", description="Debian release of the lab hosts: trixie (13) or bookworm (12).")
    subnet: str = Field("10.213.0.0/24", description="Private bridge network of the lab hosts (the control machine is .1).")

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str) -> str:
        net = ipaddress.ip_network(value, strict=True)
        if net.version != 4 or not net.is_private or net.prefixlen > 26:
            raise ValueError("expected a private IPv4 network of /26 or larger, e.g. 10.213.0.0/24")
        return value


AZURE_IMAGE_RE = re.compile(r"^[A-Za-z0-9._-]+:[A-Za-z0-9._-]+:[A-Za-z0-9._-]+:[A-Za-z0-9._-]+$")
HTTPS_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?/?$")


class AzureSection(Section):
    subscription_id: str = Field("", description="Subscription to create resources in (or AZURE_SUBSCRIPTION_ID).")
    location: str = Field("westeurope", description="Azure region.", pattern=r"^[a-z0-9]+$")
    vm_size: str = Field("Standard_NC4as_T4_v3", description="VM size (a GPU size for real models).")
    dns_label: str = Field("", description="Public IP DNS label: <label>.<location>.cloudapp.azure.com, used as TLS name.",
                           pattern=r"^([a-z][a-z0-9-]{1,61}[a-z0-9])?$")
    cloud: Literal["public", "china", "usgov"] = Field(
        "public", description="Azure cloud: picks the Resource Manager endpoint and the sign-in authority.")
    resource_manager_url: str = Field(
        "", description="Resource Manager URL overriding the cloud's (https; trust comes from REQUESTS_CA_BUNDLE).")
    resource_group: str = Field("", description="Resource group holding everything; empty: <stack name>-rg.",
                                pattern=r"^([A-Za-z0-9._()-]{0,89}[A-Za-z0-9_()-])?$")
    image: str = Field("Debian:debian-13:13-gen2:latest",
                       description="VM image as publisher:offer:sku:version (Debian 12: Debian:debian-12:12-gen2:latest).")
    os_disk_gb: int = Field(64, ge=30, le=4095, description="OS disk size in GiB (models live there).")
    admin_username: str = Field("ollastack", description="Admin user created on the VM (SSH key only).",
                                pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    polling_interval: float = Field(5.0, ge=0, le=60,
                                    description="Seconds between polls of long-running operations (tests use 0).")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not AZURE_IMAGE_RE.match(value):
            raise ValueError("expected publisher:offer:sku:version, e.g. Debian:debian-12:12-gen2:latest")
        return value

    @field_validator("resource_manager_url")
    @classmethod
    def _arm_url(cls, value: str) -> str:
        if value and not HTTPS_URL_RE.match(value):
            raise ValueError("expected an https URL like https://management.azure.com (Azure refuses tokens over http)")
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


ENDPOINT_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$")


def _endpoint_url(value: str) -> str:
    if value and not ENDPOINT_RE.match(value):
        raise ValueError("expected a URL like https://ecs-vpc.cn-hangzhou.aliyuncs.com (scheme, host, optional port)")
    return value


EndpointUrl = Annotated[str, AfterValidator(_endpoint_url)]


# Key types Alibaba's ImportKeyPair accepts (its API reference: rsa, dsa and ecdsa, with their OpenSSH
# certificate forms); ed25519 is refused, and no conversion from it to another type exists.
ALIBABA_KEY_TYPES = ("ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                     "ssh-rsa-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
                     "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
                     "ecdsa-sha2-nistp521-cert-v01@openssh.com")


class AlibabaSection(Section):
    region: str = Field("cn-hangzhou", description="Alibaba Cloud region id.", pattern=r"^[a-z]+(-[a-z0-9]+)+$")
    instance_type: str = Field("ecs.gn7i-c8g1.2xlarge", description="ECS instance type (a GPU type for real models).")
    zone: str = Field("", description="Zone for the vSwitch and instance; empty: the first zone offering instance_type.",
                      pattern=r"^([a-z]+(-[a-z0-9]+)+)?$")
    image_pattern: str = Field("debian_13*x64*",
                               description="Pattern (fnmatch) of the system image name; the newest match is used (Debian 12: debian_12*x64*).")
    image_id: str = Field("", description="Pin an exact image id instead of the newest image matching image_pattern.")
    system_disk_gb: int = Field(100, ge=20, le=2048, description="System disk size in GiB (models live there).")
    system_disk_category: str = Field("cloud_essd", description="System disk category (cloud_essd, cloud_auto, cloud_efficiency).")
    bandwidth_mbps: int = Field(10, ge=1, le=200, description="Public IP outbound bandwidth (pay by traffic); gives the instance its public address.")
    admin_username: str = Field("root", description="User pyinfra logs in as (Alibaba's Debian images allow only root with the key pair).",
                                pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    ecs_endpoint: EndpointUrl = Field("", description="ECS API URL (http:// allowed); empty: the SDK's endpoint for the region.")
    vpc_endpoint: EndpointUrl = Field("", description="VPC API URL (http:// allowed); empty: the SDK's endpoint for the region.")

    def icp_warning(self, domain: str) -> str:
        """A line to show before ``up`` when a domain is served from mainland China, else "".

        Example::

            if line := stack.alibaba.icp_warning(stack.tls.domain):
                print(line, file=sys.stderr)
        """
        mainland = self.region.startswith("cn-") and not self.region.startswith("cn-hongkong")
        if not (mainland and domain):
            return ""
        return (f"warning: alibaba.region {self.region} is in mainland China: serving {domain} needs an ICP filing, "
                "or Alibaba blocks HTTP(S) to it; pick a region outside the mainland (e.g. cn-hongkong) if it has none")


class OllamaSection(Section):
    version: str = Field("0.13.3", description="Pinned Ollama release.", pattern=r"^\d+\.\d+\.\d+$")
    sha256: str = Field("70a3d0f4cccd003641c5531d564a3494ed9a422e397c437d40f802ec1003c6eb",
                        description="sha256 of the release archive; checked before anything is replaced.")
    url: str = Field("", description="Download URL of the archive; empty: the official GitHub release (amd64 .tgz).")
    archive: str = Field("", description="Local archive (.tgz or .tar.zst) pushed from the control machine instead of a download.")
    host: HostPort = Field("127.0.0.1:11434", description="OLLAMA_HOST; keep it on loopback: Ollama has no authentication.")
    models: list[str] = Field(["llama3.2:1b"], description="Models pulled when missing.")
    models_dir: str = Field("/usr/share/ollama/.ollama/models", description="OLLAMA_MODELS, owned by the ollama user.",
                            pattern=r"^/[^\s'\"]*$")
    keep_alive: str = Field("5m", description="OLLAMA_KEEP_ALIVE: how long a model stays loaded (-1: forever).")
    num_parallel: int = Field(1, ge=1, le=64, description="OLLAMA_NUM_PARALLEL: requests served at once per model.")
    max_loaded_models: int = Field(1, ge=1, le=16, description="OLLAMA_MAX_LOADED_MODELS.")
    max_queue: int = Field(512, ge=1, description="OLLAMA_MAX_QUEUE: requests queued before 503.")
    context_length: int = Field(4096, ge=256, le=1048576, description="OLLAMA_CONTEXT_LENGTH.")
    flash_attention: bool = Field(False, description="OLLAMA_FLASH_ATTENTION.")
    kv_cache_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="OLLAMA_KV_CACHE_TYPE.")
    https_proxy: str = Field("", description="HTTPS_PROXY for model pulls; empty: none.")
    pull_retries: int = Field(2, ge=0, le=10, description="Retries of a failed model pull.")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, value: str) -> str:
        if not SHA256_RE.match(value):
            raise ValueError("expected 64 lowercase hexadecimal characters (from the release's sha256sum.txt)")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+/\S+\.(tgz|tar\.zst)$", value):
            raise ValueError("expected an http(s) URL ending in .tgz or .tar.zst")
        return value

    @field_validator("archive")
    @classmethod
    def _archive(cls, value: str) -> str:
        if value and not re.search(r"\.(tgz|tar\.zst)$", value):
            raise ValueError("expected a .tgz or .tar.zst file")
        return _existing_file(value)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not MODEL_RE.match(m)]
        if bad:
            raise ValueError(f"not a model reference like llama3.2:1b: {', '.join(map(repr, bad))}")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _duration(cls, value: str) -> str:
        if not DURATION_RE.match(value):
            raise ValueError("expected a duration like 5m, 1h30m, 0 or -1")
        return value


EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")
IMAGE_RE = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]{1,128}|@sha256:[0-9a-f]{64})$")
INDEX_URL_RE = re.compile(r"^https?://\S+$")


class OpenWebUISection(Section):
    port: int = Field(8080, ge=1024, le=65535, description="Loopback port Open WebUI listens on; nginx proxies to it.")
    install: Literal["container", "pip", "none"] = Field(
        "container", description="How Open WebUI runs: container (Podman, systemd unit), pip (venv installed with uv) or none.")
    image: str = Field("ghcr.io/open-webui/open-webui:v0.12.4",
                       description="Container image, fully qualified and pinned by tag or digest (podman auto-update needs it).")
    image_archive: str = Field("", description="Local `podman save` archive pushed to the host and loaded instead of pulling `image`.")
    autoupdate: bool = Field(True, description="Container route: label the container and enable podman-auto-update.timer (daily).")
    version: str = Field("0.12.4", description="pip route: pinned open-webui release from the package index.",
                         pattern=r"^\d+\.\d+\.\d+$")
    index_url: str = Field("", description="pip route: package index (a mirror); empty: PyPI.")
    torch_index_url: str = Field("https://download.pytorch.org/whl/cpu",
                                 description="pip route: where the CPU build of torch comes from when find_links has none.")
    find_links: str = Field("", description="pip route: local wheel directory pushed to the host and searched first (air-gapped installs).")
    admin_email: str = Field("admin@example.com", description="Admin account created on first start.")
    admin_password: SecretStr = Field(
        SecretStr(""), description="Admin password; empty: generated once, kept 0600 on the control machine (`ollastack admin-password`).")
    admin_name: str = Field("Admin", description="Display name of the admin account.")
    enable_signup: bool = Field(False, description="Let visitors create accounts (they wait as default_user_role).")
    default_user_role: Literal["pending", "user", "admin"] = Field("pending", description="Role of new accounts.")
    offline: bool = Field(False, description="OFFLINE_MODE: no update checks or model downloads from the internet.")
    openai_api_base_url: str = Field("", description="OpenAI-compatible API to offer besides Ollama; empty: ENABLE_OPENAI_API off.")
    ollama_url: str = Field("", description="OLLAMA_BASE_URL; empty: the host's own Ollama (from ollama.host).")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not IMAGE_RE.match(value):
            raise ValueError("expected a fully qualified, pinned image like ghcr.io/open-webui/open-webui:v0.12.4")
        return value

    @field_validator("image_archive")
    @classmethod
    def _image_archive(cls, value: str) -> str:
        return _existing_file(value)

    @field_validator("find_links")
    @classmethod
    def _find_links(cls, value: str) -> str:
        if value and not _expand(value).is_dir():
            raise ValueError(f"directory not found: {_expand(value)}")
        return value

    @field_validator("index_url", "torch_index_url", "openai_api_base_url", "ollama_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not INDEX_URL_RE.match(value):
            raise ValueError("expected an http(s) URL")
        return value.rstrip("/")

    @field_validator("admin_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not EMAIL_RE.match(value):
            raise ValueError("expected an e-mail address like admin@example.com")
        return value.lower()

    def admin_password_file(self, stack_name: str) -> Path:
        """The 0600 file on the control machine holding the admin password: the configured one, else
        one generated once. Deploys read the password from here, so it never travels in host data.

        Example::

            password = stack.openwebui.admin_password_file(stack.stack.name).read_text().strip()
        """
        from ollastack.state import state_dir, write_atomic

        path = state_dir() / f"{stack_name}.openwebui-admin-password"
        configured = self.admin_password.get_secret_value()
        current = path.read_text().strip() if path.exists() else None
        if configured and configured != current:
            write_atomic(path, configured + "\n", mode=0o600)
        elif not configured and current is None:
            import secrets

            write_atomic(path, secrets.token_urlsafe(18) + "\n", mode=0o600)
        return path.resolve()


# ACME accounts need a mailbox on a real domain: Let's Encrypt refuses addresses like root@localhost.
ACME_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
ACME_SERVER_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?(/\S*)?$")
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
    domain: str = Field("", description="Server name; empty: the host's address (letsencrypt: the provider's DNS name, e.g. azure.dns_label).")
    days: int = Field(397, ge=30, le=825, description="Validity of self-signed server certificates.")
    renew_before_days: int = Field(30, ge=1, le=365, description="Re-issue a self-signed certificate this long before expiry.")
    email: str = Field("", description="letsencrypt: ACME account e-mail (expiry notices); required in that mode.")
    acme_server: str = Field("", description="letsencrypt: ACME directory: empty or production (Let's Encrypt), staging, or an https URL.")
    acme_ca_bundle: ExistingFile = Field("", description="letsencrypt: CA file certbot trusts for a private ACME server (REQUESTS_CA_BUNDLE); empty: the system's.")
    check_dns: bool = Field(True, description="letsencrypt: check from the control machine that the domain resolves to the host before requesting.")
    dns_server: str = Field("", description="Resolver (ADDRESS or ADDRESS:PORT) for the DNS check; empty: the control machine's own.")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if value and not DNS_NAME_RE.match(value):
            raise ValueError("expected a DNS name like chat.example.com")
        return value

    @field_validator("email")
    @classmethod
    def _acme_email(cls, value: str) -> str:
        if value and not ACME_EMAIL_RE.match(value):
            raise ValueError("expected an e-mail address on a public domain, like admin@example.com")
        return value

    @field_validator("acme_server")
    @classmethod
    def _acme_server(cls, value: str) -> str:
        if value not in ACME_SERVERS and not ACME_SERVER_URL_RE.match(value):
            raise ValueError("expected production, staging or an https URL of an ACME directory")
        return value

    @field_validator("dns_server")
    @classmethod
    def _dns_server(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "53")
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError("expected an IPv4 address, optionally with :PORT, e.g. 10.0.0.2:53") from None
            if not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError("expected a port from 1 to 65535, e.g. 10.0.0.2:53")
        return value


NVIDIA_CUDA_KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"


class GpuSection(Section):
    mode: Literal["auto", "off", "required"] = Field(
        "auto", description="NVIDIA driver: auto (install when an NVIDIA GPU is present), off, or required (fail without one).")
    driver_branch: str = Field("570", description="Pinned NVIDIA driver branch (current Ollama needs 550 or newer).",
                               pattern=r"^\d{3}$")
    cuda_repo_url: str = Field("", description="NVIDIA CUDA apt repository; empty: NVIDIA's for the host's Debian release (a mirror may be given).")
    cuda_key_url: str = Field("", description="Signing key of the repository (ASCII armored); empty: <cuda_repo_url>3bf863cc.pub.")
    cuda_key_fingerprint: str = Field(NVIDIA_CUDA_KEY_FINGERPRINT,
                                      description="Fingerprint the downloaded signing key must have; anything else is refused.")
    secure_boot_signing: bool = Field(
        False, description="Secure Boot is on and a MOK for DKMS module signing is enrolled: install anyway instead of stopping.")

    @field_validator("driver_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if int(value) < 550:
            raise ValueError("current Ollama needs driver 550 or newer; pick a branch like 570")
        return value

    @field_validator("cuda_repo_url", "cuda_key_url")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
            raise ValueError("expected an http(s) URL")
        return value

    @field_validator("cuda_key_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str) -> str:
        value = value.replace(" ", "").upper()
        if not re.match(r"^[0-9A-F]{40}$", value):
            raise ValueError("expected the key's 40 hexadecimal digit fingerprint (gpg --show-keys)")
        return value


class Stack(Section):
    """A whole stack description. Sections mirror the TOML tables."""

    stack: StackSection = StackSection()
    access: AccessSection = Field(default_factory=AccessSection)
    static: StaticSection = StaticSection()
    lab: LabSection = LabSection()
    azure: AzureSection = AzureSection()
    alibaba: AlibabaSection = AlibabaSection()
    ollama: OllamaSection = OllamaSection()
    openwebui: OpenWebUISection = OpenWebUISection()
    tls: TLSSection = TLSSection()
    gpu: GpuSection = GpuSection()

    @model_validator(mode="after")
    def _provider_needs(self) -> "Stack":
        if self.stack.provider == "static" and not self.static.hosts:
            raise ValueError("static.hosts: provider = \"static\" needs at least one host")
        if self.stack.provider == "azure" and not self.azure.subscription():
            raise ValueError("azure.subscription_id: provider = \"azure\" needs a subscription; "
                             "set azure.subscription_id or AZURE_SUBSCRIPTION_ID")
        return self

    @model_validator(mode="after")
    def _alibaba_key_type(self) -> "Stack":
        if self.stack.provider != "alibaba":
            return self
        public, _ = self.key_paths()
        try:
            kind = (public.read_text(errors="replace").split() or ["(empty file)"])[0]
        except OSError as exc:
            raise ValueError(f"access.ssh_public_key: cannot read {public}: {exc.strerror}") from None
        if kind not in ALIBABA_KEY_TYPES:
            raise ValueError(
                f"access.ssh_public_key: Alibaba Cloud imports RSA, DSA or ECDSA keys only, and {public} is "
                f"{kind[:40]!r}; make one with `ssh-keygen -t rsa -b 4096 -f ~/.ssh/ollastack_rsa` and set "
                "access.ssh_public_key = \"~/.ssh/ollastack_rsa.pub\", "
                "access.ssh_private_key = \"~/.ssh/ollastack_rsa\"")
        return self

    @model_validator(mode="after")
    def _letsencrypt_needs(self) -> "Stack":
        if self.tls.mode != "letsencrypt":
            return self
        if not self.tls.email:
            raise ValueError("tls.email: tls.mode = \"letsencrypt\" needs an ACME account e-mail, e.g. admin@example.com")
        if not self.tls.domain and not (self.stack.provider == "azure" and self.azure.dns_label):
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

    def requested_release(self) -> tuple[str | None, str]:
        """The Debian release this stack's hosts will run, and the setting that decides it (None: unknown)."""
        provider = self.stack.provider
        if provider == "lab":
            return self.lab.release, "lab.release"
        image = {"azure": self.azure.image, "alibaba": self.alibaba.image_pattern}.get(provider, "")
        setting = {"azure": "azure.image", "alibaba": "alibaba.image_pattern"}.get(provider, "")
        for version, codename in (("13", "trixie"), ("12", "bookworm")):
            if re.search(rf"debian[-_]{version}(?!\d)", image):
                return codename, setting
        return None, setting

    def key_paths(self) -> tuple[Path, Path]:
        return _expand(self.access.ssh_public_key), _expand(self.access.ssh_private_key)


# Settings that never travel in host data or output.
SECRETS = ("openwebui.admin_password",)
# Sections whose settings travel to the hosts as pyinfra host data (``<section>_<field>``).
HOST_SECTIONS = ("stack", "access", "ollama", "openwebui", "tls", "gpu")


def config_path(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _shown(loc: tuple, value: Any) -> str:
    if any(h in str(part) for part in loc for h in SECRET_HINTS):
        return "<hidden>"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _allowed_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = Stack
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _problem(err: dict) -> str:
    loc = tuple(err["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
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
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the stack description: {exc.strerror}; "
                                      "copy stack.example.toml to stack.toml or pass --config"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
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


def host_data(stack: Stack) -> dict[str, Any]:
    """Flatten the host-side sections into pyinfra host data keys like ``ollama_host``.

    Secrets stay out: the admin password travels as the path of its 0600 file on the control machine.
    """
    data: dict[str, Any] = {}
    for section in HOST_SECTIONS:
        for key, value in getattr(stack, section).model_dump().items():
            if not isinstance(value, SecretStr):
                data[f"{section}_{key}"] = value
    if stack.openwebui.install != "none":
        data["openwebui_admin_password_file"] = str(stack.openwebui.admin_password_file(stack.stack.name))
    return data
