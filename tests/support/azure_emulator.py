"""A stand-in for Azure Resource Manager and the Entra ID token endpoint, served on 127.0.0.1.

Azure itself cannot be reached from the test machines, so this emulator speaks the subset of ARM
that ``ollastack.cloud.azure`` uses, over real HTTPS, to the real Azure SDK clients:

- ``/{tenant}/v2.0/.well-known/openid-configuration`` and ``/{tenant}/oauth2/v2.0/token``
  (client-credentials grant) so ``DefaultAzureCredential`` signs in through EnvironmentCredential;
- resource groups (synchronous PUT, DELETE with ``202`` + ``Location`` polling, listing what they hold);
- subscription-wide listings of resource groups and of resources, filtered by one tag
  (``$filter=tagName eq 'k' and tagValue eq 'v'``, the only filter ARM allows with a tag value);
- virtual networks (+ subnets), network security groups (+ security rules), public IPs, NICs,
  virtual machines (+ their managed OS disk): PUT answers ``201``/``200`` with an
  ``Azure-AsyncOperation`` header, DELETE answers ``202`` with a ``Location`` header;
- the compute resource SKUs of a location (``skus``: paged with ``nextLink``, location restrictions
  such as ``NotAvailableForSubscription``) and its vCPU usages per family (``usages``), for ``plan``;
- ``{"error": {"code", "message"}}`` envelopes, references checked on create, "in use" refusals on
  delete (so deleting in the wrong order fails as it does on Azure);
- what ARM refuses, refused the same way: a missing or unknown ``api-version``, a token issued for
  another audience (``scope``), a tracked resource without ``location``, enum values Azure does not
  know (rule access/direction/protocol, allocation methods, SKUs, disk types), NSG rule priorities
  out of range or shared by two rules of one direction;
- :meth:`AzureEmulator.inbound` evaluates the network security groups in front of a public IP as
  Azure does (lowest priority number first, first match wins, Azure's default rules at 65000+),
  so tests ask "is TCP port P from source S allowed" instead of reading rule texts;
- fault injection per step (:meth:`AzureEmulator.inject`): an error response, throttling (``429``
  with ``Retry-After``), server errors, an operation ending ``Failed``, or a request held until
  the test releases it (to kill a client mid-create).

Public IP addresses are allocated on loopback (127.0.0.10, .11, ...) or set to ``public_ip`` —
the emulator never reports any other address, because callers connect to what it reports.

Example::

    ca = trustme.CA()
    with AzureEmulator(ca) as arm:
        arm.inject("PUT", "virtualMachines", "error", code="SkuNotAvailable")
        ...  # point AZURE_AUTHORITY_HOST and azure.resource_manager_url at arm.url
        assert arm.stack_resources("demo") == []
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import re
import secrets
import socket
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.serve import Server, ca_context, serve_tls

TAG = "ollastack-stack"
OPS_PREFIX = "/providers/Microsoft.Emulator"
RESOURCE_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)"
    r"(?:/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)(?:/(?P<child>[^/]+)/(?P<cname>[^/]+))?)?$",
    re.IGNORECASE)
SUB_LIST_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/(?P<what>resourcegroups|resources)$", re.IGNORECASE)
TAG_FILTER_RE = re.compile(r"^tagName eq '(?P<name>[^']*)' and tagValue eq '(?P<value>[^']*)'$")
LIST_RE = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/resources$", re.IGNORECASE)
OP_RE = re.compile(r"^/subscriptions/[^/]+" + OPS_PREFIX + r"/(asyncOperations|operationResults)/(?P<op>[^/]+)$",
                   re.IGNORECASE)
SKUS_RE = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/skus$", re.IGNORECASE)
USAGES_RE = re.compile(r"^/subscriptions/[^/]+/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/usages$",
                       re.IGNORECASE)
LOCATION_FILTER_RE = re.compile(r"^location eq '(?P<loc>[^']+)'$")
# Compute SKUs of the location the tests use, as the Resource SKUs API lists them: GPU sizes, a
# general-purpose one, and one the subscription may not use there.
DEFAULT_SKUS = [
    ("Standard_NC4as_T4_v3", "standardNCASv3_T4Family", 4, 1, []),
    ("Standard_NC8as_T4_v3", "standardNCASv3_T4Family", 8, 1, []),
    ("Standard_NC24ads_A100_v4", "StandardNCADSA100v4Family", 24, 1, ["NotAvailableForSubscription"]),
    ("Standard_NV6ads_A10_v5", "StandardNVADSA10v5Family", 6, 1, []),
    ("Standard_D2s_v5", "standardDSv5Family", 2, 0, []),
]
# (family, vCPUs in use, limit) of the location.
DEFAULT_USAGES = [("standardNCASv3_T4Family", 0, 16), ("StandardNCADSA100v4Family", 0, 0),
                  ("StandardNVADSA10v5Family", 0, 12), ("standardDSv5Family", 0, 10), ("cores", 0, 100)]
CHILD_TYPES = {"subnets": "virtualNetworks", "securityrules": "networkSecurityGroups"}
# What the SDK clients in use send (azure-mgmt-resource 26, -network 33, -compute 39) and ARM
# accepts; the emulator's own operation URLs carry its version. Anything else is refused, as ARM
# refuses a version a resource provider does not offer.
API_VERSIONS = {"microsoft.resources": {"2025-04-01"}, "microsoft.network": {"2026-03-01"},
                "microsoft.compute": {"2026-04-01"}, "microsoft.emulator": {"2025-01-01"},
                "microsoft.compute/skus": {"2021-07-01"}}
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
# Audiences public-cloud ARM accepts in a token (``aud``), without the trailing slash.
PUBLIC_AUDIENCES = ("https://management.azure.com", "https://management.core.windows.net")
# Enum values ARM accepts (case-insensitively) per resource type: (path in the body, allowed values).
ENUMS = {
    "publicipaddresses": [(("properties", "publicIPAllocationMethod"), {"Static", "Dynamic"}),
                          (("properties", "publicIPAddressVersion"), {"IPv4", "IPv6"}),
                          (("sku", "name"), {"Basic", "Standard"}),
                          (("sku", "tier"), {"Regional", "Global"})],
    "virtualmachines": [(("properties", "storageProfile", "osDisk", "managedDisk", "storageAccountType"),
                         {"Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS",
                          "StandardSSD_ZRS", "PremiumV2_LRS"}),
                        (("properties", "storageProfile", "osDisk", "createOption"),
                         {"FromImage", "Empty", "Attach", "Copy", "Restore"}),
                        (("properties", "storageProfile", "osDisk", "deleteOption"), {"Delete", "Detach"}),
                        (("properties", "securityProfile", "securityType"),
                         {"TrustedLaunch", "ConfidentialVM", "Standard"})],
}
RULE_ENUMS = {"protocol": {"Tcp", "Udp", "Icmp", "Esp", "Ah", "*"}, "access": {"Allow", "Deny"},
              "direction": {"Inbound", "Outbound"}}
# SSH key types Azure accepts for Linux VMs (RSA of 2048 bits or more, Ed25519).
SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519")
IP_CONFIG_ENUMS = {"privateIPAllocationMethod": {"Static", "Dynamic"}}
# Azure's own inbound rules, after every custom rule (priorities 100-4096).
DEFAULT_INBOUND = [
    ("AllowVnetInBound", 65000, "Allow", "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", 65001, "Allow", "AzureLoadBalancer"),
    ("DenyAllInBound", 65500, "Deny", "*"),
]
AZURE_LOAD_BALANCER = "168.63.129.16"


@dataclass
class Fault:
    """One injected misbehaviour: ``kind`` is error | throttle | server | failed | hold."""

    method: str
    rtype: str
    kind: str
    times: int = 1
    status: int = 0
    code: str = ""
    message: str = ""
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)


@dataclass
class Operation:
    """A long-running operation; it completes ``delay`` seconds after it started, polled or not."""

    op_id: str
    verb: str
    resource_id: str
    started: float
    delay: float
    error: dict | None = None
    status: str = "InProgress"


@dataclass
class Request:
    """What the emulator received: used by tests to assert on what the client sent."""

    method: str
    path: str
    rtype: str
    body: Any
    started: float
    ended: float = 0.0
    status: int = 0


class AzureEmulator:
    """ARM + token endpoint on ``https://127.0.0.1:<port>``; a context manager that starts/stops it."""

    def __init__(self, ca, *, client_id: str = "emulator-client", client_secret: str = "emulator-secret",
                 latency: float = 0.0, lro_delay: float = 0.0, retry_after: float = 0.01,
                 public_ip: str | None = None, audiences: tuple[str, ...] = PUBLIC_AUDIENCES):
        if public_ip is not None and not ipaddress.ip_address(public_ip).is_loopback and \
                not ipaddress.ip_address(public_ip).is_private:
            raise ValueError("the emulator only reports loopback or private (lab) addresses")
        self.ca = ca
        self.client_id = client_id
        self.client_secret = client_secret
        self.latency = latency
        self.lro_delay = lro_delay
        self.retry_after = retry_after
        self.public_ip = public_ip
        self.skus = [_sku(*sku, location="westeurope") for sku in DEFAULT_SKUS]
        self.usages = {family: [used, limit] for family, used, limit in DEFAULT_USAGES}
        self.sku_page_size = 2
        self.resources: dict[str, dict] = {}
        self.operations: dict[str, Operation] = {}
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.audiences = {a.rstrip("/") for a in audiences}
        self.tokens: dict[str, str] = {}          # access token -> the audience it was issued for
        self.lock = threading.RLock()
        self._addresses = (f"127.0.0.{n}" for n in itertools.count(10))
        self._server: Server | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="azure-emulator-")

    # -- life cycle -----------------------------------------------------------------------------
    def __enter__(self) -> "AzureEmulator":
        self._server = serve_tls(type("Handler", (_Handler,), {"emulator": self}), ca_context(self.ca))
        return self

    def __exit__(self, *exc) -> None:
        for fault in self.faults:
            fault.released.set()
        self._server.stop()
        self._tmp.cleanup()

    @property
    def url(self) -> str:
        return self._server.url

    def ca_bundle(self) -> str:
        """Path of a PEM file with the test CA, for ``REQUESTS_CA_BUNDLE``."""
        path = Path(self._tmp.name) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return str(path)

    # -- test controls --------------------------------------------------------------------------
    def inject(self, method: str, rtype: str, kind: str, times: int = 1, status: int = 0,
               code: str = "", message: str = "") -> Fault:
        """Make the next ``times`` ``method`` requests on ``rtype`` (e.g. ``virtualMachines``) misbehave."""
        fault = Fault(method.upper(), rtype.lower(), kind, times, status, code, message)
        with self.lock:
            self.faults.append(fault)
        return fault

    def seen(self, method: str | None = None, rtype: str | None = None) -> list[Request]:
        """Requests received, optionally only one method and/or resource type (case-insensitive)."""
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (rtype is None or r.rtype == rtype.lower())]

    def stack_resources(self, stack: str) -> list[str]:
        """Ids of every resource tagged as ``stack``'s, plus anything inside its resource groups."""
        with self.lock:
            self._advance()
            groups = [rid for rid, r in self.resources.items()
                      if r["type"] == "Microsoft.Resources/resourceGroups" and r.get("tags", {}).get(TAG) == stack]
            return sorted(r["id"] for rid, r in self.resources.items()
                          if r.get("tags", {}).get(TAG) == stack
                          or any(rid.startswith(g + "/") for g in groups))

    def find(self, rtype: str) -> list[dict]:
        """Stored resources of one type (the short name, e.g. ``publicIPAddresses``)."""
        with self.lock:
            self._advance()
            return [copy.deepcopy(r) for r in self.resources.values()
                    if r["type"].split("/")[-1].lower() == rtype.lower()]

    def remove(self, resource_id: str) -> None:
        """Delete a resource behind the client's back (someone used the portal)."""
        with self.lock:
            self._delete_now(resource_id.lower())

    def add(self, resource_id: str, body: dict) -> None:
        """Create a resource directly (one that was not made by ollastack)."""
        with self.lock:
            m = RESOURCE_RE.match(resource_id)
            rtype = (f"{m['ns']}/{m['type']}" if m["type"] else "Microsoft.Resources/resourceGroups")
            self.resources[resource_id.lower()] = {
                "id": resource_id, "name": resource_id.rsplit("/", 1)[-1], "type": rtype,
                "location": body.get("location", "westeurope"), "tags": body.get("tags", {}),
                "properties": {**body.get("properties", {}), "provisioningState": "Succeeded"}}

    def inbound(self, address: str, port: int, source: str, protocol: str = "Tcp") -> tuple[bool, str]:
        """Would Azure let ``protocol`` traffic from ``source`` to ``address``:``port`` in?

        ``address`` is a public IP the emulator allocated, or a NIC's private address (traffic from
        inside the virtual network); ``source`` an IP address. The NSGs of
        the subnet and of the NIC behind that IP are evaluated as Azure does: rules sorted by
        priority (lowest number first), the first matching rule decides, Azure's default rules
        come last; both NSGs must allow. A Standard SKU public IP with no NSG at all lets nothing
        in. Returns (allowed, the deciding ``nsg/rule``).

        Example::

            arm.inbound(host["address"], 22, "198.51.100.7")   # (True, "demo-nsg/allow-ssh-admin")
        """
        with self.lock:
            self._advance()
            pip = next((r for r in self.resources.values() if r["type"].endswith("/publicIPAddresses")
                        and r["properties"].get("ipAddress") == address), None)
            if pip is None:
                nic, conf = self._nic_with(address)
                if nic is None:
                    raise LookupError(f"no public IP {address}")
                pip = {}
            else:
                nic, conf = self._nic_of(pip["id"])
            if nic is None:
                return False, "no network interface behind the public IP"
            subnet_id = conf["properties"]["subnet"]["id"].lower()
            vnet = self.resources[subnet_id.split("/subnets/")[0]]
            subnet = _Handler._child(vnet, "subnets", subnet_id.rsplit("/", 1)[-1])
            space = [ipaddress.ip_network(p) for p in vnet["properties"]["addressSpace"]["addressPrefixes"]]
            private = conf["properties"].get("privateIPAddress", "")
            nsg_ids = [x.get("networkSecurityGroup", {}).get("id") for x in (subnet["properties"], nic["properties"])]
            nsgs = [self.resources[i.lower()] for i in nsg_ids if i]
            if not nsgs:
                basic = pip.get("sku", {}).get("name", "Basic").lower() == "basic"
                return basic, "no network security group" + ("" if basic else " (Standard SKU: closed)")
            for nsg in nsgs:
                allowed, rule = self._evaluate(nsg, port, source, protocol, space, private)
                if not allowed:
                    return False, rule
            return True, rule

    def _nic_with(self, private: str) -> tuple[dict | None, dict | None]:
        """The NIC holding private address ``private`` (traffic from inside the virtual network)."""
        for res in self.resources.values():
            for conf in res["properties"].get("ipConfigurations", []) if res["type"].endswith("/networkInterfaces") else []:
                if conf["properties"].get("privateIPAddress") == private:
                    return res, conf
        return None, None

    def _nic_of(self, pip_id: str) -> tuple[dict | None, dict | None]:
        for res in self.resources.values():
            for conf in res["properties"].get("ipConfigurations", []) if res["type"].endswith("/networkInterfaces") else []:
                if conf["properties"].get("publicIPAddress", {}).get("id", "").lower() == pip_id.lower():
                    return res, conf
        return None, None

    @staticmethod
    def _evaluate(nsg: dict, port: int, source: str, protocol: str, space: list, private: str) -> tuple[bool, str]:
        rules = [(r["properties"], r["name"]) for r in nsg["properties"].get("securityRules", [])
                 if r["properties"]["direction"].lower() == "inbound"]
        rules += [({"priority": pri, "access": access, "protocol": "*", "sourceAddressPrefix": src,
                    "destinationAddressPrefix": "VirtualNetwork" if src == "VirtualNetwork" else "*",
                    "destinationPortRange": "*"}, name) for name, pri, access, src in DEFAULT_INBOUND]
        ip = ipaddress.ip_address(source)
        in_vnet = any(ip in net for net in space)

        def address_matches(prefix: str, addr, vnet_member: bool) -> bool:
            tag = prefix.lower()
            if tag in ("*", "any"):
                return True
            if tag == "virtualnetwork":
                return vnet_member
            if tag == "internet":
                return not vnet_member and not addr.is_private
            if tag == "azureloadbalancer":
                return str(addr) == AZURE_LOAD_BALANCER
            return addr in ipaddress.ip_network(prefix, strict=False)

        def port_matches(ranges: list[str]) -> bool:
            for text in ranges:
                low, _, high = text.partition("-")
                if text == "*" or int(low) <= port <= int(high or low):
                    return True
            return False

        def listed(props: dict, key: str, plural: str) -> list[str]:
            return props.get(plural) or [props.get(key, "*")]

        dest = ipaddress.ip_address(private) if private else None
        for props, name in sorted(rules, key=lambda r: int(r[0]["priority"])):
            if props["protocol"] != "*" and props["protocol"].lower() != protocol.lower():
                continue
            if not any(address_matches(p, ip, in_vnet) for p in listed(props, "sourceAddressPrefix", "sourceAddressPrefixes")):
                continue
            if dest and not any(address_matches(p, dest, True) for p in listed(props, "destinationAddressPrefix", "destinationAddressPrefixes")):
                continue
            if not port_matches(listed(props, "destinationPortRange", "destinationPortRanges")):
                continue
            return props["access"].lower() == "allow", f"{nsg['name']}/{name}"
        raise AssertionError("DenyAllInBound matches everything")

    # -- operations -----------------------------------------------------------------------------
    def _advance(self) -> None:
        """Finish every operation whose time has come, whether or not anyone polls it."""
        now = time.monotonic()
        for op in self.operations.values():
            if op.status == "InProgress" and now - op.started >= op.delay:
                self._finish(op)

    def _finish(self, op: Operation) -> None:
        resource = self.resources.get(op.resource_id)
        if op.verb == "DELETE":
            op.status = "Succeeded"
            self._delete_now(op.resource_id)
            return
        op.status = "Failed" if op.error else "Succeeded"
        if resource is not None:
            resource["properties"]["provisioningState"] = op.status
            for child in ("subnets", "securityRules"):
                for item in resource["properties"].get(child, []):
                    item["properties"]["provisioningState"] = op.status

    def _delete_now(self, resource_id: str) -> None:
        gone = self.resources.pop(resource_id, None)
        if gone is None:
            return
        if gone["type"] == "Microsoft.Resources/resourceGroups":
            for rid in [rid for rid in self.resources if rid.startswith(resource_id + "/")]:
                del self.resources[rid]
        os_disk = gone.get("properties", {}).get("storageProfile", {}).get("osDisk", {})
        if os_disk.get("deleteOption") == "Delete":
            self.resources.pop(os_disk.get("managedDisk", {}).get("id", "").lower(), None)

    def _start(self, verb: str, resource_id: str, error: dict | None = None) -> Operation:
        op = Operation(secrets.token_hex(8), verb, resource_id, time.monotonic(), self.lro_delay, error)
        self.operations[op.op_id] = op
        return op


def _sku(name: str, family: str, vcpus: int, gpus: int, reasons: list[str], location: str) -> dict:
    """One virtual machine size as the Resource SKUs API lists it (``reasons``: its location restrictions)."""
    return {"resourceType": "virtualMachines", "name": name, "tier": "Standard", "size": name.split("_", 1)[1],
            "family": family, "locations": [location],
            "locationInfo": [{"location": location, "zones": ["1", "2", "3"], "zoneDetails": []}],
            "capabilities": [{"name": "vCPUs", "value": str(vcpus)}, {"name": "GPUs", "value": str(gpus)}],
            "restrictions": [{"type": "Location", "values": [location], "reasonCode": reason,
                              "restrictionInfo": {"locations": [location]}} for reason in reasons]}


def _rsa_bits(blob: bytes) -> int:
    """Modulus size of an OpenSSH ``ssh-rsa`` key blob (string type, mpint e, mpint n)."""
    fields, at = [], 0
    while at + 4 <= len(blob) and len(fields) < 3:
        size = int.from_bytes(blob[at:at + 4], "big")
        fields.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    return int.from_bytes(fields[2], "big").bit_length() if len(fields) == 3 else 0


def loopback_only(setattr_=setattr) -> list[str]:
    """Refuse every IP connection that is not to loopback: tests must never reach a real address.

    Returns the list of refused addresses, so a test can check that nothing even tried (a
    credential probing 169.254.169.254 would otherwise just fail quietly). ``setattr_`` lets
    pytest undo it (``loopback_only(monkeypatch.setattr)``); a child process calls it plainly.
    """
    real_connect = socket.socket.connect
    refused: list[str] = []

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            try:
                allowed = ipaddress.ip_address(address[0]).is_loopback
            except ValueError:
                allowed = False
            if not allowed:
                refused.append(str(address[0]))
                raise ConnectionRefusedError(f"test network guard: {address[0]} is not a loopback address")
        return real_connect(self, address)

    setattr_(socket.socket, "connect", connect)
    return refused


class _Handler(BaseHTTPRequestHandler):
    emulator: AzureEmulator
    _record: Request | None = None
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without this, Nagle + delayed ACK add ~40 ms each.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def _reply(self, status: int, body: Any = None, headers: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", secrets.token_hex(8))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        if self._record is not None:
            self._record.ended = time.monotonic()
            self._record.status = status

    def _error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        self._reply(status, {"error": {"code": code, "message": message}}, headers)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        return json.loads(raw) if raw else None

    def _op_url(self, kind: str, op: Operation, sub: str) -> str:
        return f"{self.emulator.url}/subscriptions/{sub}{OPS_PREFIX}/{kind}/{op.op_id}?api-version=2025-01-01"

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        emu = self.emulator
        path = urlsplit(self.path).path.rstrip("/")
        body = self._body()
        match = RESOURCE_RE.match(path)
        rtype = ""
        if match:
            rtype = (match["child"] or match["type"] or "resourceGroups").lower()
        elif OP_RE.match(path):
            rtype = "operations"
        elif SKUS_RE.match(path):
            rtype = "skus"
        elif USAGES_RE.match(path):
            rtype = "usages"
        self._record = Request(method, path, rtype, body, time.monotonic())
        with emu.lock:
            emu.requests.append(self._record)
        if emu.latency:
            time.sleep(emu.latency)
        if "/oauth2/" in path or "/.well-known/" in path:
            return self._identity(method, path, body)
        auth = self.headers.get("Authorization", "")
        audience = emu.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if audience is None:
            return self._error(401, "InvalidAuthenticationToken", "The access token is invalid.",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if audience not in emu.audiences:
            return self._error(401, "InvalidAuthenticationToken",
                               f"The access token has been obtained for wrong audience or resource '{audience}'. "
                               f"It should exactly match with one of the allowed audiences "
                               f"{', '.join(repr(a + '/') for a in sorted(emu.audiences))}.",
                               {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        refusal = self._api_version_refusal(path, match)
        if refusal:
            return self._error(400, *refusal)
        if self._fault(method, rtype):
            return
        with emu.lock:
            emu._advance()
            if rtype == "operations":
                return self._poll(path)
            if rtype == "skus" and method == "GET":
                return self._skus()
            if rtype == "usages" and method == "GET":
                return self._usages(USAGES_RE.match(path)["loc"])
            listing = LIST_RE.match(path)
            if listing and method == "GET":
                return self._list(listing)
            everywhere = SUB_LIST_RE.match(path)
            if everywhere and method == "GET":
                return self._list_tagged(everywhere)
            if not match:
                return self._error(404, "InvalidResourceType", f"No route for {path}.")
            if method == "GET":
                return self._get(match)
            if method == "PUT":
                return self._put(match, body or {})
            if method == "DELETE":
                return self._delete(match)
        self._error(405, "MethodNotAllowed", f"{method} is not supported here.")

    def _fault(self, method: str, rtype: str) -> bool:
        emu = self.emulator
        with emu.lock:
            fault = next((f for f in emu.faults if f.times > 0 and f.method == method and f.rtype == rtype), None)
            if fault is None or fault.kind == "failed":
                return False
            fault.times -= 1
        if fault.kind == "hold":
            fault.arrived.set()
            fault.released.wait()
            return False
        if fault.kind == "throttle":
            self._error(429, "TooManyRequests", "Too many requests; retry later.",
                        {"Retry-After": str(emu.retry_after)})
        elif fault.kind == "server":
            self._error(fault.status or 503, "InternalServerError", "The server had a transient failure.")
        else:
            self._error(fault.status or 409, fault.code or "Conflict", fault.message or "Injected failure.")
        return True

    def _api_version_refusal(self, path: str, match: re.Match | None) -> tuple[str, str] | None:
        """(code, message) when ``api-version`` is missing or not one the resource provider offers."""
        versions = parse_qs(urlsplit(self.path).query).get("api-version", [])
        if not versions:
            return ("MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.")
        if OP_RE.match(path):
            namespace = "microsoft.emulator"
        elif SKUS_RE.match(path):
            namespace = "microsoft.compute/skus"
        elif USAGES_RE.match(path):
            namespace = "microsoft.compute"
        else:
            namespace = (match["ns"] if match and match["ns"] else "Microsoft.Resources").lower()
        supported = API_VERSIONS.get(namespace, set())
        if versions[0] in supported:
            return None
        if not API_VERSION_RE.match(versions[0]) or namespace == "microsoft.resources":
            return ("InvalidApiVersionParameter", f"The api-version '{versions[0]}' is invalid. The supported "
                                                  f"versions are '{','.join(sorted(supported))}'.")
        return ("NoRegisteredProviderFound",
                f"No registered resource provider found for API version '{versions[0]}' and type "
                f"'{match['type'] if match else path}'. The supported api-versions are "
                f"'{', '.join(sorted(supported))}'.")

    def _failed_fault(self, rtype: str) -> dict | None:
        for fault in self.emulator.faults:
            if fault.kind == "failed" and fault.times > 0 and fault.rtype == rtype:
                fault.times -= 1
                return {"code": fault.code or "InternalOperationError",
                        "message": fault.message or "The operation failed."}
        return None

    # -- identity -------------------------------------------------------------------------------
    def _identity(self, method: str, path: str, body: Any) -> None:
        emu = self.emulator
        tenant = path.strip("/").split("/")[0]
        base = f"{emu.url}/{tenant}"
        if path.endswith("/openid-configuration"):
            return self._reply(200, {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "tenant_region_scope": "EU",
            })
        if method == "POST" and path.endswith("/oauth2/v2.0/token"):
            body = body or {}
            if body.get("client_id") != emu.client_id or body.get("client_secret") != emu.client_secret:
                return self._reply(401, {"error": "invalid_client",
                                         "error_description": "AADSTS7000215: Invalid client secret provided."})
            # Entra issues a token for the resource named by the ".default" scope; ARM checks that audience.
            resources = [s.removesuffix("/.default").rstrip("/") for s in body.get("scope", "").split()
                         if s.endswith("/.default")]
            if len(resources) != 1:
                return self._reply(400, {"error": "invalid_scope",
                                         "error_description": "AADSTS70011: The provided value for the input "
                                                              "parameter 'scope' is not valid."})
            token = secrets.token_urlsafe(24)
            with emu.lock:
                emu.tokens[token] = resources[0]
            return self._reply(200, {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600,
                                     "access_token": token})
        self._reply(404, {"error": "not_found", "error_description": f"{path} is not emulated."})

    # -- ARM ------------------------------------------------------------------------------------
    def _poll(self, path: str) -> None:
        emu = self.emulator
        m = OP_RE.match(path)
        op = emu.operations.get(m["op"])
        if op is None:
            return self._error(404, "OperationNotFound", "No such operation.")
        sub = path.split("/")[2]
        if m.group(1).lower() == "operationresults":
            if op.status == "InProgress":
                return self._reply(202, None, {"Location": self._op_url("operationResults", op, sub)})
            return self._reply(200 if op.status == "Succeeded" else 500,
                               None if op.status == "Succeeded" else {"error": op.error})
        reply = {"id": path, "name": op.op_id, "status": op.status}
        if op.status == "Failed":
            reply["error"] = op.error
        self._reply(200, reply)

    def _skus(self) -> None:
        """Compute SKUs, a page of ``sku_page_size`` at a time (``nextLink``), optionally for one location."""
        query = parse_qs(urlsplit(self.path).query)
        text = query.get("$filter", [""])[0]
        wanted = LOCATION_FILTER_RE.match(text)
        if text and wanted is None:
            return self._error(400, "InvalidFilter", f"Only the location filter is supported, not {text!r}.")
        found = [s for s in self.emulator.skus
                 if wanted is None or wanted["loc"].lower() in [loc.lower() for loc in s["locations"]]]
        start = int(query.get("$skiptoken", ["0"])[0])
        size = self.emulator.sku_page_size
        reply: dict[str, Any] = {"value": found[start:start + size]}
        if start + size < len(found):
            link = f"{self.emulator.url}{urlsplit(self.path).path}?api-version=2021-07-01&$skiptoken={start + size}"
            reply["nextLink"] = link + (f"&$filter={text}" if text else "")
        self._reply(200, reply)

    def _usages(self, location: str) -> None:
        self._reply(200, {"value": [
            {"unit": "Count", "currentValue": used, "limit": limit,
             "name": {"value": family, "localizedValue": family}}
            for family, (used, limit) in self.emulator.usages.items()]})

    def _list(self, m: re.Match) -> None:
        prefix = f"/subscriptions/{m['sub']}/resourcegroups/{m['rg']}/".lower()
        if prefix.rstrip("/") not in self.emulator.resources:
            return self._not_found(m)
        self._reply(200, {"value": [{k: r[k] for k in ("id", "name", "type", "location", "tags")}
                                    for key, r in sorted(self.emulator.resources.items()) if key.startswith(prefix)]})

    def _list_tagged(self, m: re.Match) -> None:
        """Resource groups, or resources in any group, of the subscription, by one tag name and value."""
        query = parse_qs(urlsplit(self.path).query).get("$filter", [""])[0]
        wanted = TAG_FILTER_RE.match(query)
        if query and wanted is None:
            return self._error(400, "InvalidFilterInQueryString", f"Unsupported $filter {query!r}.")
        groups = m["what"].lower() == "resourcegroups"
        prefix = f"/subscriptions/{m['sub']}/resourcegroups/".lower()
        found = [r for key, r in sorted(self.emulator.resources.items())
                 if key.startswith(prefix) and (r["type"] == "Microsoft.Resources/resourceGroups") == groups
                 and (wanted is None or r.get("tags", {}).get(wanted["name"]) == wanted["value"])]
        keys = ("id", "name", "location", "tags", "properties") if groups else ("id", "name", "type", "location", "tags")
        self._reply(200, {"value": [{k: r[k] for k in keys} for r in found]})

    def _ids(self, m: re.Match) -> tuple[str, str, str]:
        """(resource id as sent, its key, the key of its top-level parent) for a matched path."""
        rid = urlsplit(self.path).path.rstrip("/")
        rg_id = f"/subscriptions/{m['sub']}/resourceGroups/{m['rg']}"
        parent = f"{rg_id}/providers/{m['ns']}/{m['type']}/{m['name']}" if m["type"] else rg_id
        return rid, rid.lower(), parent.lower()

    def _not_found(self, m: re.Match) -> None:
        rg_key = f"/subscriptions/{m['sub']}/resourcegroups/{m['rg']}".lower()
        if rg_key not in self.emulator.resources:
            return self._error(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        what = f"{m['ns']}/{m['type']}/{m['name']}" if m["type"] else m["rg"]
        self._error(404, "ResourceNotFound",
                    f"The Resource '{what}' under resource group '{m['rg']}' was not found.")

    def _get(self, m: re.Match) -> None:
        emu = self.emulator
        rid, key, parent_key = self._ids(m)
        if m["child"]:
            parent = emu.resources.get(parent_key)
            child = self._child(parent, m["child"], m["cname"]) if parent else None
            return self._reply(200, child) if child else self._not_found(m)
        resource = emu.resources.get(key)
        self._reply(200, resource) if resource else self._not_found(m)

    @staticmethod
    def _child(parent: dict, kind: str, name: str) -> dict | None:
        key = "securityRules" if kind.lower() == "securityrules" else "subnets"
        return next((c for c in parent["properties"].get(key, []) if c["name"].lower() == name.lower()), None)

    def _put(self, m: re.Match, body: dict) -> None:
        emu = self.emulator
        rid, key, parent_key = self._ids(m)
        sub = m["sub"]
        if not m["child"] and not body.get("location"):
            return self._error(400, "LocationRequired", "The location property is required for this definition.")
        if not m["type"]:
            existed = key in emu.resources
            emu.resources[key] = {"id": rid, "name": m["rg"], "type": "Microsoft.Resources/resourceGroups",
                                  "location": body.get("location"), "tags": body.get("tags", {}),
                                  "properties": {"provisioningState": "Succeeded"}}
            return self._reply(200 if existed else 201, emu.resources[key])
        rg_key = f"/subscriptions/{sub}/resourcegroups/{m['rg']}".lower()
        if rg_key not in emu.resources:
            return self._error(404, "ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        if m["child"]:
            return self._put_child(m, body, parent_key)
        problem = self._bad_reference(body)
        if problem:
            return self._error(400, "InvalidResourceReference", problem)
        refusal = self._invalid(m["type"].lower(), body)
        if refusal:
            return self._error(400, *refusal)
        existed = key in emu.resources
        stored = {"id": rid, "name": m["name"], "type": f"{m['ns']}/{m['type']}",
                  "location": body.get("location"), "tags": body.get("tags", {}),
                  "properties": copy.deepcopy(body.get("properties", {}))}
        if "sku" in body:
            stored["sku"] = copy.deepcopy(body["sku"])
        if existed:
            self._keep_computed(emu.resources[key], stored)
        self._complete(stored)
        stored["properties"]["provisioningState"] = "Updating" if existed else "Creating"
        emu.resources[key] = stored
        op = emu._start("PUT", key, self._failed_fault(m["type"].lower()))
        self._reply(200 if existed else 201, stored,
                    {"Azure-AsyncOperation": self._op_url("asyncOperations", op, sub)})

    def _put_child(self, m: re.Match, body: dict, parent_key: str) -> None:
        emu = self.emulator
        parent = emu.resources.get(parent_key)
        if parent is None:
            return self._not_found(m)
        kind = "securityRules" if m["child"].lower() == "securityrules" else "subnets"
        items = parent["properties"].setdefault(kind, [])
        old = self._child(parent, kind, m["cname"])
        if kind == "securityRules":
            others = [r for r in items if r is not old]
            refusal = self._invalid_rules(others + [{"name": m["cname"], "properties": body.get("properties", {})}])
            if refusal:
                return self._error(400, *refusal)
        child = {"id": urlsplit(self.path).path.rstrip("/"), "name": m["cname"],
                 "type": f"{parent['type']}/{kind}",
                 "properties": {**copy.deepcopy(body.get("properties", {})), "provisioningState": "Updating"}}
        if old is not None:
            items[items.index(old)] = child
        else:
            items.append(child)
        op = emu._start("PUT", parent_key, self._failed_fault(m["child"].lower()))
        self._reply(200 if old else 201, child,
                    {"Azure-AsyncOperation": self._op_url("asyncOperations", op, m["sub"])})

    def _bad_reference(self, body: dict) -> str:
        """A referenced resource that does not exist, as Azure reports it on create."""
        props = body.get("properties", {})
        refs = [props.get("networkSecurityGroup", {}).get("id")]
        for conf in props.get("ipConfigurations", []):
            refs += [conf.get("properties", {}).get("subnet", {}).get("id"),
                     conf.get("properties", {}).get("publicIPAddress", {}).get("id")]
        refs += [nic.get("id") for nic in props.get("networkProfile", {}).get("networkInterfaces", [])]
        for ref in filter(None, refs):
            m = RESOURCE_RE.match(urlsplit(ref).path)
            if not m:
                return f"Resource reference {ref} is not a valid id."
            parent = self.emulator.resources.get(self._ids_of(m))
            if parent is None or (m["child"] and self._child(parent, m["child"], m["cname"]) is None):
                return f"Resource {ref} referenced by the request does not exist."
        return ""

    def _invalid(self, rtype: str, body: dict) -> tuple[str, str] | None:
        """(code, message) for an enum value Azure does not know or NSG rules it refuses."""
        compute = rtype == "virtualmachines"
        for path, allowed in ENUMS.get(rtype, []):
            value: Any = body
            for step in path:
                value = value.get(step) if isinstance(value, dict) else None
            if value is not None and str(value).lower() not in {a.lower() for a in allowed}:
                return self._enum_refusal(".".join(path), value, allowed, compute)
        for conf in body.get("properties", {}).get("ipConfigurations", []):
            for name, allowed in IP_CONFIG_ENUMS.items():
                value = conf.get("properties", {}).get(name)
                if value is not None and str(value).lower() not in {a.lower() for a in allowed}:
                    return self._enum_refusal(f"ipConfigurations.properties.{name}", value, allowed, compute)
        if rtype == "networksecuritygroups":
            return self._invalid_rules(body.get("properties", {}).get("securityRules", []))
        ssh = body.get("properties", {}).get("osProfile", {}).get("linuxConfiguration", {}).get("ssh", {})
        for key in ssh.get("publicKeys", []):
            kind, _, rest = str(key.get("keyData", "")).partition(" ")
            try:
                blob = base64.b64decode(rest.split()[0], validate=True) if rest else b""
            except ValueError:
                blob = b""
            if kind not in SSH_KEY_TYPES or not blob.startswith(len(kind).to_bytes(4, "big") + kind.encode()) \
                    or (kind == "ssh-rsa" and _rsa_bits(blob) < 2048):
                return ("InvalidParameter", "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is "
                                            "invalid: an ssh-rsa or ssh-ed25519 public key in OpenSSH format is required.")
        return None

    @staticmethod
    def _enum_refusal(where: str, value: Any, allowed: set[str], compute: bool) -> tuple[str, str]:
        if compute:    # Compute names the parameter; Network fails to parse the request body
            return "InvalidParameter", f"The value '{value}' of parameter '{where}' is not allowed. " \
                                       f"Allowed values are {', '.join(sorted(allowed))}."
        return "InvalidRequestFormat", f"Cannot parse the request: '{value}' is not a valid value for {where} " \
                                       f"(one of {', '.join(sorted(allowed))})."

    def _invalid_rules(self, rules: list[dict]) -> tuple[str, str] | None:
        """Refusals of an NSG's rule list: unknown enums, priority outside 100-4096, shared priorities."""
        taken: dict[tuple[str, int], str] = {}
        for rule in rules:
            props = rule.get("properties", {})
            for name, allowed in RULE_ENUMS.items():
                value = props.get(name)
                if value is None or str(value).lower() not in {a.lower() for a in allowed}:
                    return self._enum_refusal(f"securityRules.{rule['name']}.{name}", value, allowed, False)
            priority = props.get("priority")
            if not isinstance(priority, int) or not 100 <= priority <= 4096:
                return ("SecurityRuleInvalidPriority", f"Security rule {rule['name']} has invalid priority "
                                                       f"{priority}. Value provided: {priority} Allowed range 100-4096.")
            slot = (props["direction"].lower(), priority)
            if slot in taken:
                return ("SecurityRuleConflict", f"Security rule {rule['name']} conflicts with rule {taken[slot]}. "
                                                "Rules cannot have the same Priority and Direction.")
            taken[slot] = rule["name"]
        return None

    @staticmethod
    def _ids_of(m: re.Match) -> str:
        return f"/subscriptions/{m['sub']}/resourcegroups/{m['rg']}/providers/{m['ns']}/{m['type']}/{m['name']}".lower()

    @staticmethod
    def _keep_computed(old: dict, new: dict) -> None:
        """A re-PUT keeps what Azure assigned (address, vmId) and its child lists unless given."""
        for key in ("ipAddress", "vmId", "resourceGuid"):
            if key in old["properties"]:
                new["properties"].setdefault(key, old["properties"][key])

    def _complete(self, stored: dict) -> None:
        """Fill in what Azure computes: child ids, addresses, the FQDN, the VM's OS disk."""
        emu = self.emulator
        props = stored["properties"]
        rtype = stored["type"].split("/")[-1].lower()
        props.setdefault("resourceGuid", secrets.token_hex(16))
        for kind in ("subnets", "securityRules"):
            for item in props.get(kind, []):
                item["id"] = f"{stored['id']}/{kind}/{item['name']}"
                item.setdefault("properties", {})["provisioningState"] = "Creating"
        if rtype == "publicipaddresses":
            props.setdefault("ipAddress", emu.public_ip or next(emu._addresses))
            label = props.get("dnsSettings", {}).get("domainNameLabel")
            if label:
                props["dnsSettings"]["fqdn"] = f"{label}.{stored['location']}.cloudapp.azure.com"
        elif rtype == "networkinterfaces":
            # Azure keeps a NIC's dynamic address and gives each NIC of the subnet its own (from .4 up).
            taken = {c["properties"].get("privateIPAddress") for r in emu.resources.values()
                     if r["type"].endswith("/networkInterfaces") and r["id"].lower() != stored["id"].lower()
                     for c in r["properties"].get("ipConfigurations", [])}
            before = emu.resources.get(stored["id"].lower(), {}).get("properties", {}).get("ipConfigurations", [])
            for n, conf in enumerate(props.get("ipConfigurations", [])):
                conf["id"] = f"{stored['id']}/ipConfigurations/{conf['name']}"
                kept = before[n]["properties"].get("privateIPAddress") if n < len(before) else None
                address = kept or next(f"10.0.0.{k}" for k in itertools.count(4 + n) if f"10.0.0.{k}" not in taken)
                taken.add(address)
                conf.setdefault("properties", {}).setdefault("privateIPAddress", address)
        elif rtype == "virtualmachines":
            props.setdefault("vmId", secrets.token_hex(16))
            os_disk = props.setdefault("storageProfile", {}).setdefault("osDisk", {})
            disk_name = os_disk.setdefault("name", f"{stored['name']}_OsDisk")
            rg_id = stored["id"].split("/providers/")[0]
            disk_id = f"{rg_id}/providers/Microsoft.Compute/disks/{disk_name}"
            os_disk.setdefault("managedDisk", {})["id"] = disk_id
            emu.resources[disk_id.lower()] = {
                "id": disk_id, "name": disk_name, "type": "Microsoft.Compute/disks",
                "location": stored["location"], "tags": {},   # Azure does not copy the VM's tags
                "properties": {"diskSizeGB": os_disk.get("diskSizeGB", 30), "provisioningState": "Succeeded"}}

    def _delete(self, m: re.Match) -> None:
        emu = self.emulator
        rid, key, parent_key = self._ids(m)
        if m["child"] and m["child"].lower() == "securityrules":
            return self._delete_rule(m, parent_key)
        if m["child"]:
            return self._error(405, "MethodNotAllowed", "Deleting subnets is not emulated.")
        if key not in emu.resources:
            return self._reply(204)
        user = self._user_of(key)
        if user:
            code = {"networkinterfaces": "NicInUse", "publicipaddresses": "PublicIPAddressCannotBeDeleted",
                    "networksecuritygroups": "InUseNetworkSecurityGroupCannotBeDeleted",
                    "virtualnetworks": "InUseSubnetCannotBeDeleted"}[m["type"].lower()]
            return self._error(400, code, f"{rid} is in use by {user} and cannot be deleted.")
        emu.resources[key]["properties"]["provisioningState"] = "Deleting"
        op = emu._start("DELETE", key)
        self._reply(202, None, {"Location": self._op_url("operationResults", op, m["sub"])})

    def _delete_rule(self, m: re.Match, parent_key: str) -> None:
        """A security rule goes at once; the NSG's update is the long-running part, as on Azure."""
        emu = self.emulator
        parent = emu.resources.get(parent_key)
        rule = self._child(parent, "securityRules", m["cname"]) if parent else None
        if rule is None:
            return self._reply(204)
        parent["properties"]["securityRules"].remove(rule)
        op = emu._start("PUT", parent_key)
        self._reply(202, None, {"Location": self._op_url("operationResults", op, m["sub"])})

    def _user_of(self, key: str) -> str:
        """The id of a resource that still references ``key`` (Azure refuses to delete it then)."""
        for other in self.emulator.resources.values():
            if other["id"].lower() == key:
                continue
            text = json.dumps(other.get("properties", {})).lower()
            if f'"{key}"' in text or f'"{key}/subnets/' in text:
                return other["id"]
        return ""
