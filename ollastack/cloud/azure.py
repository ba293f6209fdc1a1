"""Azure provider: one Debian VM with a static public IP, locked down by a network security group.

Resources, all in one resource group and tagged ``ollastack-stack=<stack name>``::

    resource group
      ├── virtual network + subnet ─┐
      ├── network security group ───┼── NIC ── VM (+ its OS disk, deleted with it)
      └── public IP (+ DNS label) ──┘

``GRAPH`` declares that tree as data; ``ollastack.cloud.plan.run`` creates the three in the middle
concurrently once the resource group exists. Each resource is recorded in the state file before
its create request is sent, so a run that is interrupted at any point leaves a trace: ``create`` again finishes the job (it GETs each resource and creates only
what is missing), ``destroy`` removes what exists. Inbound traffic: SSH only from
``access.admin_cidrs``, HTTP/HTTPS from anywhere, everything else denied (Ollama's port included).
A fleet (``fleet.backends``) adds, per backend, a NIC without a public IP in the same subnet and a VM,
behind one more NSG admitting SSH and Ollama's port from the gateway's private address alone (``graph``).

Credentials come from ``DefaultAzureCredential``: environment variables (``AZURE_CLIENT_ID``,
``AZURE_TENANT_ID``, ``AZURE_CLIENT_SECRET``), ``az login``, a managed identity, ...

Example::

    from ollastack.cloud import Progress, azure
    hosts = azure.create(stack, StackState.load(stack.stack.name, "azure"), Progress("azure: "))
    removed = azure.destroy(stack, StackState.load(stack.stack.name), Progress("azure: "))
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from azure.core import AzureClouds
from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError, ResourceNotFoundError,
                                   ServiceRequestError)
from azure.identity import AzureAuthorityHosts, DefaultAzureCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core.tools import get_arm_endpoints
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.resource.resources import ResourceManagementClient

from ollastack.cloud import CloudError, plan
from ollastack.cloud.errors import AZURE_SIGN_IN, RESUME_HINT, hint, one_line
from ollastack.config import Stack, split_host_port
from ollastack.host import Host
from ollastack.state import StackState

TAG = "ollastack-stack"
VNET_PREFIX = "10.0.0.0/16"
SUBNET_PREFIX = "10.0.0.0/24"
OS_DISK_TYPE = "StandardSSD_LRS"
# Azure's N-series (NC, ND, NV, NG...) are the GPU sizes.
GPU_SIZE_RE = re.compile(r"^Standard_N[A-Z]", re.IGNORECASE)
ID_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)(/providers/.+/(?P<name>[^/]+))?$",
                   re.IGNORECASE)
CLOUDS = {
    "public": (AzureClouds.AZURE_PUBLIC_CLOUD, AzureAuthorityHosts.AZURE_PUBLIC_CLOUD),
    "china": (AzureClouds.AZURE_CHINA_CLOUD, AzureAuthorityHosts.AZURE_CHINA),
    "usgov": (AzureClouds.AZURE_US_GOVERNMENT, AzureAuthorityHosts.AZURE_GOVERNMENT),
}
KNOWN_AUTHORITIES = {host for _, host in CLOUDS.values()}
# Throttling (429, honouring Retry-After) and 5xx are retried by the SDK's retry policy; with a
# backoff factor of 1 s the waits are 0, 2, 4, 8, 16 s: about half a minute before giving up.
RETRY = {"retry_total": 6, "retry_backoff_factor": 1.0, "retry_backoff_max": 60}
# What each resource needs: the methods of _Session by these names create them, with what their needs returned.
GRAPH = {
    "resource_group": [],
    "virtual_network": ["resource_group"],
    "network_security_group": ["resource_group"],
    "public_ip": ["resource_group"],
    "network_interface": ["virtual_network", "network_security_group", "public_ip"],
    "virtual_machine": ["network_interface"],
}
# A fleet's backends (``fleet.backends``): one NSG for them all, made once the gateway's NIC has its
# private address (their only source of SSH and Ollama's port), then a NIC without a public IP and a
# VM per backend; ``graph`` adds these steps, and every backend's chain runs beside the others.
BACKEND_NSG = "backend_network_security_group"
# Seconds between polls of a long-running operation (the SDK's own default is 30).
POLL_S = 5.0
# Destroy order: each tier only after the one before is gone (Azure refuses to delete what is in use).
DESTROY_TIERS = (("virtual_machine",), ("network_interface",),
                 ("public_ip", "network_security_group", "virtual_network"), ("resource_group",))
# What ``destroy`` finds by tag, by ARM type (lower case): the kinds ``create`` makes.
KINDS = {"microsoft.resources/resourcegroups": "resource_group",
         "microsoft.network/virtualnetworks": "virtual_network",
         "microsoft.network/networksecuritygroups": "network_security_group",
         "microsoft.network/publicipaddresses": "public_ip",
         "microsoft.network/networkinterfaces": "network_interface",
         "microsoft.compute/virtualmachines": "virtual_machine"}
# The SDK's own loggers: azure-identity reports a failed sign-in in a multi-line WARNING block that
# Python prints on stderr when nothing configured logging; cloud_error() says it in one line.
SDK_LOGGERS = ("azure.identity", "azure.core")
LABELS = {"resource_group": "resource group", "virtual_network": "virtual network",
          "network_security_group": "network security group", "public_ip": "public IP",
          "network_interface": "network interface", "virtual_machine": "virtual machine"}
# Sign-in failures are ClientAuthenticationError, a subclass of HttpResponseError (without a response).
SDK_ERRORS = (HttpResponseError, ServiceRequestError)


def backend_steps(index: int) -> tuple[str, str]:
    """The graph's (NIC step, VM step) of backend ``index`` (1, 2, ...)."""
    return f"backend_network_interface_{index}", f"backend_virtual_machine_{index}"


def graph(stack: Stack) -> dict[str, list[str]]:
    """``GRAPH``, and with ``fleet.backends`` the backends' NSG and each backend's NIC and VM.

    Example: ``graph(stack)["backend_virtual_machine_2"] == ["backend_network_interface_2"]``
    """
    steps = {step: list(needs) for step, needs in GRAPH.items()}
    if stack.fleet.backends:
        steps[BACKEND_NSG] = ["network_interface"]
        for index in range(1, stack.fleet.backends + 1):
            nic, vm = backend_steps(index)
            steps[nic] = ["virtual_network", BACKEND_NSG]
            steps[vm] = [nic]
    return steps


def private_address(nic: dict) -> str:
    """The first private address of a NIC as Azure returns it."""
    return nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]


def create(stack: Stack, state: StackState, progress: Callable[[str], None],
           timings: dict[str, tuple[float, float]] | None = None) -> list[dict]:
    """Create (or finish creating) the stack's resources and return its hosts: the one host, or a
    fleet's gateway (public IP) and then its backends (private addresses, reached through the gateway).

    Example::

        [host] = create(stack, state, Progress())
        host["address"], host["tls_names"]   # public IP, ["<label>.<location>.cloudapp.azure.com"]

    ``timings`` (optional) receives each step's (start, end) monotonic times.
    """
    session = _Session(stack, state, progress)
    if not state.provider:
        state.data["provider"] = "azure"
    found = plan.run(graph(stack), session, timings)
    pip = found["public_ip"]["properties"]
    fqdn = pip.get("dnsSettings", {}).get("fqdn")
    host = {"name": session.names["virtual_machine"], "address": pip["ipAddress"],
            "user": stack.azure.admin_username, "tls_names": [fqdn] if fqdn else []}
    hosts = [host]
    if stack.fleet.backends:
        host["private_address"] = private_address(found["network_interface"])
        gateway = Host.from_record(host)
        for index in range(1, stack.fleet.backends + 1):
            nic, _ = backend_steps(index)
            hosts.append(Host(session.backend_name(index, "vm"), private_address(found[nic]),
                              user=stack.azure.admin_username, jump=gateway).to_record())
    state.set_hosts(plan.kept_hosts(state, hosts))
    return hosts


def destroy(stack: Stack, state: StackState, progress: Callable[[str], None]) -> list[str]:
    """Delete what ``state`` records and what is tagged as this stack's, tier by tier; return the ids removed.

    The tag look-up covers the whole subscription, so ``down`` removes everything even when the
    state file is lost or was written elsewhere. Resources not tagged as this stack's are left in
    place; ones already gone are skipped.

    Example::

        removed = destroy(stack, state, Progress())   # ["/subscriptions/.../virtualMachines/demo-vm", ...]
    """
    session = _Session(stack, state, progress)
    entries = session.targets()
    for entry in entries:
        # Before any delete: a state file of another subscription must not leave this one half-removed.
        session.check_subscription(entry)
    removed = plan.teardown(DESTROY_TIERS, entries, session.delete, session.recorder)
    state.set_hosts([])
    return removed


def is_gpu_size(vm_size: str) -> bool:
    """True for N-series (GPU) sizes such as ``Standard_NC4as_T4_v3``."""
    return bool(GPU_SIZE_RE.match(vm_size))


def credential(section) -> DefaultAzureCredential:
    """``DefaultAzureCredential`` for the configured cloud; ``AZURE_AUTHORITY_HOST`` still wins.

    Instance discovery asks login.microsoftonline.com to vouch for the authority; an authority
    that is not one of Azure's own (Azure Stack, a test emulator) cannot be vouched for, and the
    user named it explicitly, so discovery is skipped for it.
    """
    for name in SDK_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    authority = os.environ.get("AZURE_AUTHORITY_HOST") or CLOUDS[section.cloud][1]
    host = urlsplit(authority if "//" in authority else f"https://{authority}").hostname
    extra = {} if host in KNOWN_AUTHORITIES else {"disable_instance_discovery": True}
    return DefaultAzureCredential(authority=authority, **extra)


def _seconds(started: float) -> str:
    return f"{time.monotonic() - started:.1f}s"


def _sign_in_reason(exc: Exception) -> str:
    """The useful part of a credential chain's multi-line report (Entra's AADSTS line if any)."""
    text = " ".join(str(getattr(exc, "message", "") or exc).split())
    entra = re.search(r"AADSTS\d+:[^.]*", text)
    if entra:
        return entra.group(0)
    if "unavailable" in text.lower():
        return "no credential found"
    return one_line(text.split(". ")[0], 120)


def cloud_error(exc: Exception, doing: str) -> CloudError:
    """Turn an SDK exception into a one-line ``CloudError`` with the Azure code and a next step."""
    if isinstance(exc, ClientAuthenticationError) and exc.response is None:
        return CloudError(f"azure: sign-in failed while {doing} ({_sign_in_reason(exc)}); {AZURE_SIGN_IN}")
    if isinstance(exc, ServiceRequestError):
        return CloudError(f"azure: cannot reach Azure while {doing} ({one_line(exc, 120)}); "
                          "check the network and azure.resource_manager_url")
    if isinstance(exc, HttpResponseError):
        code = (exc.error.code if exc.error and exc.error.code else "") or f"HTTP{exc.status_code}"
        message = (exc.error.message if exc.error and exc.error.message else "") or exc.reason or ""
        advice = AZURE_SIGN_IN if exc.status_code == 401 else hint("azure", code, message)
        return CloudError(f"azure: {doing} failed: {code}: {one_line(message)}; {advice}")
    return CloudError(f"azure: {doing} failed: {one_line(exc)}; {RESUME_HINT}")


class _Session:
    """Clients, names and bookkeeping of one create/destroy run."""

    def __init__(self, stack: Stack, state: StackState, progress: Callable[[str], None]):
        self.stack = stack
        self.recorder = plan.Recorder(state, progress)
        self.progress = self.recorder.progress
        self.sub = stack.azure.subscription()
        if not self.sub:
            raise CloudError("azure: no subscription; set azure.subscription_id or AZURE_SUBSCRIPTION_ID")
        name = stack.stack.name
        self.group = stack.azure.resource_group or f"{name}-rg"
        self.names = {"virtual_network": f"{name}-vnet", "network_security_group": f"{name}-nsg",
                      "public_ip": f"{name}-ip", "network_interface": f"{name}-nic",
                      "virtual_machine": f"{name}-vm"}
        self.tags = {TAG: name}
        if stack.fleet.backends:
            self.names[BACKEND_NSG] = f"{name}-backend-nsg"
        for index in range(1, stack.fleet.backends + 1):
            nic, vm = backend_steps(index)
            self.names[nic], self.names[vm] = self.backend_name(index, "nic"), self.backend_name(index, "vm")
            # plan.run calls a step by its name: each backend's steps are the shared ones with its number.
            setattr(self, nic, functools.partial(self.backend_network_interface, index))
            setattr(self, vm, functools.partial(self.backend_virtual_machine, index))
        cloud, _ = CLOUDS[stack.azure.cloud]
        endpoints = get_arm_endpoints(cloud)
        options = dict(credential=credential(stack.azure), subscription_id=self.sub,
                       base_url=stack.azure.resource_manager_url or endpoints["resource_manager"],
                       credential_scopes=endpoints["credential_scopes"], cloud_setting=cloud,
                       polling_interval=plan.poll_interval(POLL_S), **RETRY)
        self.resources = ResourceManagementClient(**options)
        self.network = NetworkManagementClient(**options)
        self.compute = ComputeManagementClient(**options)

    def backend_name(self, index: int, suffix: str) -> str:
        """``demo-backend2-vm``: the name of backend ``index``'s ``suffix`` resource."""
        return f"{self.stack.stack.name}-backend{index}-{suffix}"

    def resource(self, step: str) -> tuple[str, str]:
        """(kind, name) of the resource a graph step other than the resource group makes.

        Example: ``session.resource("backend_virtual_machine_1")`` -> ("virtual_machine", "demo-backend1-vm")
        """
        kind = "network_security_group" if step == BACKEND_NSG else step.removeprefix("backend_").rstrip("0123456789_")
        return kind, self.names[step]

    # -- bookkeeping ----------------------------------------------------------------------------
    def record(self, kind: str, name: str, rid: str) -> None:
        self.recorder.record(kind, name, id=rid, type=kind)

    def rid(self, provider_path: str = "") -> str:
        base = f"/subscriptions/{self.sub}/resourceGroups/{self.group}"
        return f"{base}/providers/{provider_path}" if provider_path else base

    def _ops(self, kind: str) -> tuple[Any, Any]:
        """(get, begin_delete) operations of a resource kind."""
        net, vm = self.network, self.compute
        return {"virtual_network": (net.virtual_networks.get, net.virtual_networks.begin_delete),
                "network_security_group": (net.network_security_groups.get, net.network_security_groups.begin_delete),
                "public_ip": (net.public_ip_addresses.get, net.public_ip_addresses.begin_delete),
                "network_interface": (net.network_interfaces.get, net.network_interfaces.begin_delete),
                "virtual_machine": (vm.virtual_machines.get, vm.virtual_machines.begin_delete)}[kind]

    # -- create steps ---------------------------------------------------------------------------
    def _ensure(self, kind: str, rid: str, body: dict, put: Callable[[dict], Any],
                drift: Callable[[dict], None] | None = None) -> dict:
        """GET the resource; create it if missing or failed; fix drift in place; remember it."""
        name = rid.rsplit("/", 1)[-1]
        label = f"{LABELS[kind]} {name}"
        started = time.monotonic()
        get, _ = self._ops(kind)
        try:
            existing = self._get(get, name)
            if existing is not None and existing.get("tags", {}).get(TAG) != self.stack.stack.name:
                raise CloudError(f"azure: {label} in resource group {self.group} exists but is not tagged "
                                 f"{TAG}={self.stack.stack.name}; pick another stack.name or azure.resource_group")
            if existing is not None and existing["properties"].get("provisioningState") == "Succeeded":
                self.record(kind, name, rid)
                if drift:
                    drift(existing)
                self.progress(f"{label}: found ({_seconds(started)})")
                return existing
            self.record(kind, name, rid)
            result = put(body).as_dict()
        except SDK_ERRORS as exc:
            raise cloud_error(exc, f"creating {label}") from None
        if existing is None:
            self.progress(f"{label}: created ({_seconds(started)})")
        else:
            was = existing["properties"].get("provisioningState")
            self.progress(f"{label}: created again, it was {was} ({_seconds(started)})")
        return result

    def _get(self, get: Callable, name: str) -> dict | None:
        try:
            return get(self.group, name).as_dict()
        except ResourceNotFoundError:
            return None

    def resource_group(self) -> str:
        """The resource group's name; one that exists without this stack's tag is used but never deleted."""
        started = time.monotonic()
        label = f"resource group {self.group}"
        groups = self.resources.resource_groups
        try:
            try:
                existing = groups.get(self.group).as_dict()
            except ResourceNotFoundError:
                existing = None
            if existing is not None:
                ours = existing.get("tags", {}).get(TAG) == self.stack.stack.name
                if ours:
                    self.record("resource_group", self.group, self.rid())
                self.progress(f"{label}: found{'' if ours else ' (not created by ollastack: kept on destroy)'} "
                              f"({_seconds(started)})")
                return self.group
            self.record("resource_group", self.group, self.rid())
            groups.create_or_update(self.group, {"location": self.stack.azure.location, "tags": self.tags})
        except SDK_ERRORS as exc:
            raise cloud_error(exc, f"creating {label}") from None
        self.progress(f"{label}: created ({_seconds(started)})")
        return self.group

    def virtual_network(self, group: str) -> dict:
        name = self.names["virtual_network"]
        body = {"location": self.stack.azure.location, "tags": self.tags,
                "properties": {"addressSpace": {"addressPrefixes": [VNET_PREFIX]},
                               "subnets": [{"name": "default", "properties": {"addressPrefix": SUBNET_PREFIX}}]}}
        return self._ensure("virtual_network", self.rid(f"Microsoft.Network/virtualNetworks/{name}"), body,
                            lambda b: self.network.virtual_networks.begin_create_or_update(group, name, b).result())

    def security_rules(self) -> dict[str, dict]:
        """Inbound rules: SSH from the admin networks, web from anywhere, nothing else (not 11434)."""
        def rule(priority: int, access: str, protocol: str, sources: dict, ports: dict) -> dict:
            return {"priority": priority, "direction": "Inbound", "access": access, "protocol": protocol,
                    "sourcePortRange": "*", "destinationAddressPrefix": "*", **sources, **ports}
        anywhere = {"sourceAddressPrefix": "*"}
        return {
            "allow-ssh-admin": rule(100, "Allow", "Tcp", {"sourceAddressPrefixes": list(self.stack.access.admin_cidrs)},
                                    {"destinationPortRange": "22"}),
            "allow-web": rule(110, "Allow", "Tcp", anywhere, {"destinationPortRanges": ["80", "443"]}),
            # Overrides Azure's default AllowVnetInBound / AllowAzureLoadBalancerInBound rules too.
            "deny-other-inbound": rule(4096, "Deny", "*", anywhere, {"destinationPortRange": "*"}),
        }

    def network_security_group(self, group: str) -> dict:
        name = self.names["network_security_group"]
        rules = self.security_rules()
        body = {"location": self.stack.azure.location, "tags": self.tags,
                "properties": {"securityRules": [{"name": n, "properties": p} for n, p in rules.items()]}}
        return self._ensure("network_security_group", self.rid(f"Microsoft.Network/networkSecurityGroups/{name}"),
                            body, lambda b: self.network.network_security_groups.begin_create_or_update(
                                group, name, b).result(),
                            drift=lambda existing: self._fix_rules(name, existing, rules))

    def backend_rules(self, gateway: str) -> dict[str, dict]:
        """A fleet backend's inbound rules: SSH (the jump) and Ollama's port from the gateway's private address alone."""
        port = str(split_host_port(self.stack.ollama.host)[1])

        def rule(priority: int, access: str, protocol: str, source: str, port: str) -> dict:
            return {"priority": priority, "direction": "Inbound", "access": access, "protocol": protocol,
                    "sourcePortRange": "*", "destinationAddressPrefix": "*", "sourceAddressPrefix": source,
                    "destinationPortRange": port}
        return {"allow-ssh-gateway": rule(100, "Allow", "Tcp", gateway, "22"),
                "allow-ollama-gateway": rule(110, "Allow", "Tcp", gateway, port),
                # Overrides AllowVnetInBound: one backend does not reach another.
                "deny-other-inbound": rule(4096, "Deny", "*", "*", "*")}

    def backend_network_security_group(self, gateway_nic: dict) -> dict:
        name = self.names[BACKEND_NSG]
        rules = self.backend_rules(private_address(gateway_nic))
        body = {"location": self.stack.azure.location, "tags": self.tags,
                "properties": {"securityRules": [{"name": n, "properties": p} for n, p in rules.items()]}}
        return self._ensure("network_security_group", self.rid(f"Microsoft.Network/networkSecurityGroups/{name}"),
                            body, lambda b: self.network.network_security_groups.begin_create_or_update(
                                self.group, name, b).result(),
                            drift=lambda existing: self._fix_rules(name, existing, rules))

    def backend_network_interface(self, index: int, vnet: dict, nsg: dict) -> dict:
        """Backend ``index``'s NIC: in the gateway's subnet, the backends' NSG, no public IP."""
        name = self.names[backend_steps(index)[0]]
        subnet_id = next(s["id"] for s in vnet["properties"]["subnets"] if s["name"] == "default")
        body = {"location": self.stack.azure.location, "tags": self.tags,
                "properties": {
                    "networkSecurityGroup": {"id": nsg["id"]},
                    "ipConfigurations": [{"name": "ipconfig1", "properties": {
                        "privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet_id}}}]}}
        return self._ensure("network_interface", self.rid(f"Microsoft.Network/networkInterfaces/{name}"), body,
                            lambda b: self.network.network_interfaces.begin_create_or_update(
                                self.group, name, b).result())

    def backend_virtual_machine(self, index: int, nic: dict) -> dict:
        name = self.names[backend_steps(index)[1]]
        body = self.vm_body(nic["id"], name, f"{self.stack.stack.name}-backend{index}")
        return self._ensure("virtual_machine", self.rid(f"Microsoft.Compute/virtualMachines/{name}"), body,
                            lambda b: self.compute.virtual_machines.begin_create_or_update(
                                self.group, name, b).result())

    def _fix_rules(self, nsg: str, existing: dict, rules: dict[str, dict]) -> None:
        """Converge the group's rules to ours: update each that differs from the settings (e.g. new admin
        CIDRs) in place, and remove any other rule, which could open a port (Ollama's) to the internet."""
        extra, changed = rule_changes(existing, rules)
        for name in extra:
            started = time.monotonic()
            self.network.security_rules.begin_delete(self.group, nsg, name).result()
            self.progress(f"security rule {nsg}/{name}: not one of ollastack's, removed ({_seconds(started)})")
        for name in changed:
            wanted = rules[name]
            started = time.monotonic()
            self.network.security_rules.begin_create_or_update(
                self.group, nsg, name, {"properties": wanted}).result()
            self.progress(f"security rule {nsg}/{name}: updated in place ({_seconds(started)})")

    def public_ip(self, group: str) -> dict:
        name = self.names["public_ip"]
        label = self.stack.azure.dns_label
        props: dict[str, Any] = {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"}
        if label:
            props["dnsSettings"] = {"domainNameLabel": label}
        body = {"location": self.stack.azure.location, "tags": self.tags, "sku": {"name": "Standard"},
                "properties": props}

        def put(b):
            return self.network.public_ip_addresses.begin_create_or_update(group, name, b).result()

        def relabel(existing):
            if existing["properties"].get("dnsSettings", {}).get("domainNameLabel", "") != label:
                started = time.monotonic()
                existing.update(put(body).as_dict())
                self.progress(f"public IP {name}: DNS label updated in place ({_seconds(started)})")

        return self._ensure("public_ip", self.rid(f"Microsoft.Network/publicIPAddresses/{name}"), body, put,
                            drift=relabel)

    def network_interface(self, vnet: dict, nsg: dict, pip: dict) -> dict:
        name = self.names["network_interface"]
        subnet_id = next(s["id"] for s in vnet["properties"]["subnets"] if s["name"] == "default")
        body = {"location": self.stack.azure.location, "tags": self.tags,
                "properties": {
                    "networkSecurityGroup": {"id": nsg["id"]},
                    "ipConfigurations": [{"name": "ipconfig1", "properties": {
                        "privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet_id},
                        "publicIPAddress": {"id": pip["id"]}}}]}}
        return self._ensure("network_interface", self.rid(f"Microsoft.Network/networkInterfaces/{name}"), body,
                            lambda b: self.network.network_interfaces.begin_create_or_update(
                                self.group, name, b).result())

    def vm_body(self, nic_id: str, name: str = "", computer: str = "") -> dict:
        """The VM request: SSH key only, the configured image/size/disk, and a boot mode for GPUs.

        Gen2 images boot as Trusted Launch (Secure Boot on) by default on Azure, and Secure Boot
        refuses kernel modules not signed by a trusted key, which is what NVIDIA's DKMS driver
        builds on the VM are. GPU sizes are therefore created with security type ``Standard``
        (no Secure Boot) so the driver can load; other sizes keep Azure's default. ``name`` and
        ``computer`` (a fleet's backend) default to the one VM's.
        """
        az = self.stack.azure
        name = name or self.names["virtual_machine"]
        public_key = self.stack.key_paths()[0].read_text().strip()
        publisher, offer, sku, version = az.image.split(":")
        props: dict[str, Any] = {
            "hardwareProfile": {"vmSize": az.vm_size},
            "storageProfile": {
                "imageReference": {"publisher": publisher, "offer": offer, "sku": sku, "version": version},
                "osDisk": {"name": f"{name}-osdisk", "createOption": "FromImage",
                           "diskSizeGB": az.os_disk_gb, "deleteOption": "Delete",
                           "managedDisk": {"storageAccountType": OS_DISK_TYPE}}},
            "osProfile": {
                "computerName": computer or self.stack.stack.name, "adminUsername": az.admin_username,
                "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                    {"path": f"/home/{az.admin_username}/.ssh/authorized_keys", "keyData": public_key}]}}},
            "networkProfile": {"networkInterfaces": [
                {"id": nic_id, "properties": {"primary": True}}]},
        }
        if is_gpu_size(az.vm_size):
            props["securityProfile"] = {"securityType": "Standard"}
        return {"location": az.location, "tags": self.tags, "properties": props}

    def virtual_machine(self, nic: dict) -> dict:
        name = self.names["virtual_machine"]
        size = self.stack.azure.vm_size

        def resize_note(existing):
            have = existing["properties"].get("hardwareProfile", {}).get("vmSize")
            if have != size:
                self.progress(f"virtual machine {name}: is {have}, azure.vm_size says {size}; "
                              "not resized (run `ollastack down` and `up` to change it)")

        return self._ensure("virtual_machine", self.rid(f"Microsoft.Compute/virtualMachines/{name}"),
                            self.vm_body(nic["id"]), lambda b: self.compute.virtual_machines.begin_create_or_update(
                                self.group, name, b).result(), drift=resize_note)

    # -- destroy --------------------------------------------------------------------------------
    def targets(self) -> list[dict]:
        """What ``plan.targets`` makes of the recorded resources and those found by this stack's tag."""
        query = f"tagName eq '{TAG}' and tagValue eq '{self.stack.stack.name}'"
        try:
            found = [g.as_dict() | {"type": "Microsoft.Resources/resourceGroups"}
                     for g in self.resources.resource_groups.list(filter=query)]
            found += [r.as_dict() for r in self.resources.resources.list(filter=query)]
        except SDK_ERRORS as exc:
            raise cloud_error(exc, f"listing resources tagged {TAG}={self.stack.stack.name}") from None
        tagged = []
        for resource in found:
            kind = KINDS.get(resource.get("type", "").lower())
            if kind is None:
                self.progress(f"{resource['id']}: tagged {TAG}={self.stack.stack.name} but not made by "
                              "ollastack, left in place")
                continue
            tagged.append({"kind": kind, "name": resource["name"], "id": resource["id"]})
        return plan.targets(self.recorder.state.resources, tagged)

    def check_subscription(self, entry: dict) -> str:
        """The entry's label; raises CloudError when the state records it in another subscription."""
        label = f"{LABELS.get(entry['kind'], entry['kind'])} {entry['name']}"
        m = ID_RE.match(entry["id"])
        if m is None or m["sub"].lower() != self.sub.lower():
            raise CloudError(f"azure: state records {label} in another subscription ({entry['id']}); "
                             "set azure.subscription_id to that subscription and run `ollastack down` again")
        return label

    def delete(self, entry: dict) -> str | None:
        """Delete one resource if it still exists and is ours (the tag is read again); return its id if deleted."""
        kind, rid = entry["kind"], entry["id"]
        label = self.check_subscription(entry)
        m = ID_RE.match(rid)
        if m is None:
            raise CloudError(f"azure: {label}: {rid!r} in the state file is not an Azure resource id; remove that record")
        started = time.monotonic()
        try:
            if kind == "resource_group":
                get, delete = self.resources.resource_groups.get, self.resources.resource_groups.begin_delete
                args: tuple = (m["rg"],)
            else:
                get, delete = self._ops(kind)
                args = (m["rg"], m["name"])
            try:
                existing = get(*args).as_dict()
            except ResourceNotFoundError:
                self.progress(f"{label}: already gone ({_seconds(started)})")
                return None
            if existing.get("tags", {}).get(TAG) != self.stack.stack.name:
                self.progress(f"{label}: not tagged {TAG}={self.stack.stack.name}, left in place")
                return None
            if kind == "resource_group":
                self._refuse_if_shared(m["rg"], label)
            delete(*args).result()
        except SDK_ERRORS as exc:
            raise cloud_error(exc, f"deleting {label}") from None
        self.progress(f"{label}: deleted ({_seconds(started)})")
        return rid

    def _refuse_if_shared(self, group: str, label: str) -> None:
        """Deleting a group deletes all it holds: refuse while it holds what this stack did not create."""
        others = [r.name or r.id or "?" for r in self.resources.resources.list_by_resource_group(group)
                  if (r.tags or {}).get(TAG) != self.stack.stack.name]
        if others:
            raise CloudError(f"azure: {label} was kept: it also holds {', '.join(sorted(others))}, not created by "
                             "ollastack; move or delete those, then run `ollastack down` again")


def rule_changes(existing: dict, rules: dict[str, dict]) -> tuple[list[str], list[str]]:
    """(rules of the group that are not ollastack's, ollastack's rules missing or differing): what
    ``create`` removes and what it updates in place (``plan`` reports the same without doing it).

    Example: ``rule_changes(nsg, session.security_rules())`` -> ([], ["allow-ssh-admin"]) after a CIDR change
    """
    current = {r["name"]: r.get("properties", {}) for r in existing["properties"].get("securityRules", [])}
    changed = [name for name, wanted in rules.items()
               if not all(_same(current.get(name, {}).get(k), v) for k, v in wanted.items())]
    return sorted(set(current) - set(rules)), changed


def _same(have: Any, wanted: Any) -> bool:
    if isinstance(wanted, list):
        return sorted(map(str, have or [])) == sorted(map(str, wanted))
    return str(have).lower() == str(wanted).lower()


def fleet_names(stack: Stack) -> list[str]:
    """The VM names of a fleet's gateway and backends, as ``create`` names its hosts."""
    name = stack.stack.name
    return [f"{name}-vm", *(f"{name}-backend{index}-vm" for index in range(1, stack.fleet.backends + 1))]


def remove_hosts(stack: Stack, state: StackState, names: list[str], progress: Callable[[str], None]) -> list[str]:
    """Delete the named backends' VMs (their OS disks go with them) and NICs, nothing else; return the ids removed.

    Example: ``remove_hosts(stack, state, ["demo-backend2-vm"], print)`` -> [".../virtualMachines/demo-backend2-vm", ...]
    """
    session = _Session(stack, state, progress)
    mine = {f"{vm.removesuffix('-vm')}-{suffix}" for vm in names for suffix in ("vm", "nic")}
    entries = [e for e in session.targets() if e["kind"] in ("virtual_machine", "network_interface") and e["name"] in mine]
    for entry in entries:
        session.check_subscription(entry)
    return plan.teardown(DESTROY_TIERS, entries, session.delete, session.recorder, sweep=False)
