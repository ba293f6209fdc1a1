"""Stand-in for Alibaba Cloud's ECS and VPC APIs, served on 127.0.0.1 for tests and benchmarks.

It is not Alibaba Cloud: it implements the subset of RPC actions ollastack calls, with the
behaviour that matters to a client (ACS3-HMAC-SHA256 signatures checked exactly as the SDK
computes them, nonce replay refused, PascalCase JSON, error codes, ClientToken idempotency,
asynchronous VPC/instance states, dependency errors on delete) plus fault injection and a fixed
latency per call. The public address it reports is loopback unless a test passes a lab address.

Like the real APIs, Describe* calls answer one page at a time (PageSize default 10, each action's
own maximum, ``TotalCount``/``PageNumber``), and the default image catalogue is long as real ones
are: the Debian images come after more than two pages of other systems, so a client that reads
only the first page finds none. Enum values the ECS API checks (system disk category, instance and
internet charge types) are refused with ECS's error codes when unknown. ``DescribePrice`` answers from a
price list (``prices``, CNY) and ``DescribeAvailableResource`` from the zones' types, less ``sold_out``.

Example::

    with AlibabaEmulator(latency=0.2, instance_start_s=2) as emu:
        config = {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url}
        emu.inject("RunInstances", "throttle", times=2)
        ...
        assert emu.resource_count() == 0
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import itertools
import json
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit

ECS_VERSION = "2014-05-26"
VPC_VERSION = "2016-04-28"
REQUIRED_SIGNED = {"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"}
# Largest PageSize each Describe action takes (ECS/VPC API reference).
PAGE_MAX = {"DescribeImages": 100, "DescribeInstances": 100, "DescribeSecurityGroups": 50, "DescribeKeyPairs": 50,
            "DescribeVpcs": 50, "DescribeVSwitches": 50}
DISK_CATEGORIES = {"cloud", "cloud_efficiency", "cloud_ssd", "cloud_essd", "cloud_auto", "cloud_essd_entry"}
INSTANCE_CHARGE_TYPES = {"PrePaid", "PostPaid"}
INTERNET_CHARGE_TYPES = {"PayByBandwidth", "PayByTraffic"}
PRICE_UNITS = {"Hour": 1, "Week": 168, "Month": 720, "Year": 8760}
DESTINATION_RESOURCES = {"Zone", "IoOptimized", "InstanceType", "SystemDisk", "DataDisk", "Network", "ddh"}
# Pay-as-you-go list prices (CNY): per hour of each instance type, per GiB-hour of each disk category,
# per Mbps-hour of fixed bandwidth (pay by traffic bills each GB sent instead, outside DescribePrice).
DEFAULT_PRICES = {"ecs.gn7i-c8g1.2xlarge": 11.58, "ecs.gn6i-c4g1.xlarge": 8.22, "ecs.g7.large": 0.53}
DISK_PRICES = {"cloud_essd": 0.0014, "cloud_auto": 0.0012, "cloud_efficiency": 0.0005, "cloud_ssd": 0.0014,
               "cloud": 0.0004, "cloud_essd_entry": 0.0009}
BANDWIDTH_PRICE = 0.063
LAB_NETWORKS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]

DEFAULT_ZONES = {
    "cn-hangzhou-h": ["ecs.g7.large"],
    "cn-hangzhou-i": ["ecs.g7.large", "ecs.gn7i-c8g1.2xlarge"],
    "cn-hangzhou-j": ["ecs.gn7i-c8g1.2xlarge", "ecs.gn6i-c4g1.xlarge"],
}
# Other systems listed before Debian in a region's catalogue (ids m-f...): 110 images, more than
# two pages of the 50 a client asks for.
FILLER_IMAGES = [(f"{system}_x64_20G_alibase_2025{month:02d}{day:02d}.vhd", f"2025-{month:02d}-{day:02d}T00:00:00Z",
                  "x86_64")
                 for system in ("centos_7_9", "ubuntu_22_04", "rockylinux_9_4", "alinux_3_2104", "anolisos_8_9",
                                "opensuse_15_6", "fedora_40", "almalinux_9_4", "ubuntu_24_04_uefi", "centos_stream_9",
                                "freebsd_14_1")
                 for month, day in zip(range(1, 11), range(1, 11))]
DEFAULT_IMAGES = [
    ("debian_11_9_x64_20G_alibase_20240628.vhd", "2024-06-28T00:00:00Z", "x86_64"),
    ("debian_12_5_x64_20G_alibase_20240321.vhd", "2024-03-21T00:00:00Z", "x86_64"),
    ("debian_12_8_x64_20G_alibase_20241201.vhd", "2024-12-01T00:00:00Z", "x86_64"),
    ("debian_12_8_arm64_20G_alibase_20241215.vhd", "2024-12-15T00:00:00Z", "arm64"),
    ("ubuntu_24_04_x64_20G_alibase_20250101.vhd", "2025-01-01T00:00:00Z", "x86_64"),
    ("debian_13_1_x64_20G_alibase_20250920.vhd", "2025-09-20T00:00:00Z", "x86_64"),
    ("debian_13_2_x64_20G_alibase_20251115.vhd", "2025-11-15T00:00:00Z", "x86_64"),
    ("debian_13_2_arm64_20G_alibase_20251120.vhd", "2025-11-20T00:00:00Z", "arm64"),
]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Dropped(Exception):
    """The connection is closed without a response (the client sees a network failure)."""


def _reported_address(address: str) -> str:
    ip = ipaddress.ip_address(address)
    if not (ip.is_loopback or any(ip in net for net in LAB_NETWORKS)):
        raise ValueError(f"{address} is neither loopback nor a private lab address; tests may contact nothing else")
    return address


def canonical_query(query: dict[str, str]) -> str:
    return "&".join(f"{k}={quote(query[k], safe='~')}" for k in sorted(query))


def expected_signature(secret: str, method: str, path: str, query: dict[str, str],
                       headers: dict[str, str], signed: list[str], payload_hash: str) -> str:
    """ACS3-HMAC-SHA256 as alibabacloud_tea_openapi.utils.Utils.get_authorization computes it."""
    canon_headers = "".join(f"{name}:{headers.get(name, '').strip()}\n" for name in signed)
    canonical = "\n".join([method, path or "/", canonical_query(query), canon_headers, ";".join(signed), payload_hash])
    to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


def _tags(params: dict[str, str]) -> dict[str, str]:
    tags = {}
    for n in itertools.count(1):
        key = params.get(f"Tag.{n}.Key")
        if key is None:
            return tags
        tags[key] = params.get(f"Tag.{n}.Value", "")


def _matches_tags(resource: dict, wanted: dict[str, str]) -> bool:
    return all(resource["tags"].get(k) == v for k, v in wanted.items())


def _ecs_tags(tags: dict[str, str]) -> dict:
    return {"Tag": [{"TagKey": k, "TagValue": v} for k, v in tags.items()]}


def _vpc_tags(tags: dict[str, str]) -> dict:
    return {"Tag": [{"Key": k, "Value": v} for k, v in tags.items()]}


class AlibabaEmulator:
    """ECS + VPC stand-in: two HTTP listeners (one per product) sharing one account's resources."""

    def __init__(self, access_key_id: str = "LTAI-test-key", access_key_secret: str = "test-secret",
                 region: str = "cn-hangzhou", zones: dict[str, list[str]] | None = None,
                 images: list[tuple[str, str, str]] | None = None, filler_images: bool = True,
                 public_ip: str = "127.0.0.1",
                 latency: float = 0.0, instance_start_s: float = 0.0, instance_delete_s: float = 0.0,
                 network_ready_s: float = 0.0, instance_start_polls: int = 0):
        self.credentials = {access_key_id: access_key_secret}
        self.region = region
        self.zones = zones or DEFAULT_ZONES
        catalogue = [(f"m-{i:08x}", *image) for i, image in enumerate(images or DEFAULT_IMAGES, start=1)]
        if filler_images:
            catalogue = [(f"m-f{i:07x}", *image) for i, image in enumerate(FILLER_IMAGES, start=1)] + catalogue
        self.images = [{"ImageId": i, "ImageName": n, "CreationTime": t, "Architecture": a,
                        "OSType": "linux", "ImageOwnerAlias": "system", "Status": "Available"}
                       for i, n, t, a in catalogue]
        self.public_ip = _reported_address(public_ip)
        self.latency = latency
        self.instance_start_s = instance_start_s
        # Counted in DescribeInstances answers instead of seconds, for tests that must see each state
        # however slowly a loaded machine polls: Pending for the first half, then Starting, then Running.
        self.instance_start_polls = instance_start_polls
        self.instance_delete_s = instance_delete_s
        self.network_ready_s = network_ready_s
        self.prices = dict(DEFAULT_PRICES)
        self.sold_out: set[tuple[str, str]] = set()        # (zone, instance type) without stock
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, dict]] = {k: {} for k in ("vpc", "vswitch", "security_group", "key_pair", "instance")}
        self.requests: list[dict] = []
        self.faults: dict[str, list[tuple[str, str]]] = {}
        self.hooks: dict[str, list] = {}
        self.tokens: dict[tuple[str, str], dict] = {}
        self.nonces: set[str] = set()
        self.servers: list[ThreadingHTTPServer] = []
        self.ecs_url = self.vpc_url = ""

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "AlibabaEmulator":
        self.ecs_url = self._listen("ecs", ECS_VERSION)
        self.vpc_url = self._listen("vpc", VPC_VERSION)
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> "AlibabaEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _listen(self, product: str, version: str) -> str:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # One buffered write per response: headers and body in separate segments meet the
            # client's delayed ACK and cost 40 ms per call.
            wbufsize = -1
            disable_nagle_algorithm = True

            def do_POST(self):
                emulator._handle(self, product, version)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    # -- test controls -----------------------------------------------------------------------
    def inject(self, action: str, fault: str, times: int = 1, code: str = "") -> None:
        """Make the next ``times`` calls of ``action`` fail: ``error`` (400 ``code``), ``throttle``
        (400 Throttling.User), ``unavailable`` (503), ``drop`` (connection closed before acting) or
        ``drop_after`` (acted, then connection closed: the response is lost)."""
        assert fault in ("error", "throttle", "unavailable", "drop", "drop_after"), fault
        with self.lock:
            self.faults.setdefault(action, []).extend([(fault, code or "InvalidParameter")] * times)

    def before(self, action: str, hook, times: int = 1) -> None:
        """Run ``hook(params)`` under the lock before the next ``times`` calls of ``action`` are handled:
        the world changing between a client's calls (someone deletes a resource in the console)."""
        with self.lock:
            self.hooks.setdefault(action, []).extend([hook] * times)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def resource_count(self) -> int:
        with self.lock:
            self._expire()
            return sum(len(v) for v in self.resources.values())

    def calls(self, action: str) -> list[dict[str, str]]:
        return [r["params"] for r in self.requests if r["action"] == action and r["status"] == 200]

    def add_foreign(self, kind: str, **fields) -> dict:
        """A resource created outside ollastack (by hand, or by another stack)."""
        with self.lock:
            rid = fields.pop("id", f"{kind[:3]}-foreign{len(self.resources[kind])}")
            res = {"id": rid, "tags": fields.pop("tags", {}), "created": time.monotonic(), **fields}
            self.resources[kind][rid] = res
            return res

    # -- HTTP --------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, product: str, version: str) -> None:
        started = time.monotonic()
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in handler.headers.items()}
        action = headers.get("x-acs-action", "")
        params = dict(query)
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        status, payload = 200, {}
        try:
            if self.latency:
                time.sleep(self.latency)
            self._authenticate(handler.command, url.path, query, headers, body)
            if headers.get("x-acs-version") != version:
                raise ApiError(400, "InvalidVersion", f"Specified parameter Version is not valid for {product}.")
            payload = self._dispatch(action, params)
        except ApiError as err:
            status, payload = err.status, {"Code": err.code, "Message": err.message}
        except Dropped:
            status = 0
        with self.lock:
            self.requests.append({"product": product, "action": action, "params": params, "status": status,
                                  "code": payload.get("Code", ""), "t0": started, "t1": time.monotonic()})
        if status == 0:
            handler.close_connection = True
            return
        payload["RequestId"] = str(uuid.uuid4()).upper()
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json;charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _authenticate(self, method: str, path: str, query: dict, headers: dict, body: bytes) -> None:
        scheme, _, fields = headers.get("authorization", "").partition(" ")
        if scheme != "ACS3-HMAC-SHA256":
            raise ApiError(400, "IncompleteSignature", "The request signature does not conform to Alibaba Cloud standards.")
        parts = dict(p.split("=", 1) for p in fields.split(",") if "=" in p)
        secret = self.credentials.get(parts.get("Credential", ""))
        if secret is None:
            raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        signed = parts.get("SignedHeaders", "").split(";")
        if not REQUIRED_SIGNED <= set(signed) or signed != sorted(signed):
            raise ApiError(400, "IncompleteSignature", "The request signature does not conform to Alibaba Cloud standards.")
        if hashlib.sha256(body).hexdigest() != headers.get("x-acs-content-sha256"):
            raise ApiError(400, "IncompleteSignature", "The x-acs-content-sha256 header does not match the body.")
        want = expected_signature(secret, method, path, query, headers, signed, headers["x-acs-content-sha256"])
        if not hmac.compare_digest(want, parts.get("Signature", "")):
            raise ApiError(400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        sent = datetime.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        if abs((datetime.now(timezone.utc) - sent).total_seconds()) > 900:
            raise ApiError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        with self.lock:
            nonce = headers["x-acs-signature-nonce"]
            if nonce in self.nonces:
                raise ApiError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
            self.nonces.add(nonce)

    def _dispatch(self, action: str, params: dict[str, str]) -> dict:
        handler = getattr(self, f"_do_{action}", None)
        if handler is None:
            raise ApiError(404, "InvalidAction.NotFound", f"Specified api {action} is not found.")
        if params.get("RegionId", self.region) != self.region:
            raise ApiError(404, "InvalidRegionId.NotFound", "The specified RegionId does not exist.")
        with self.lock:
            fault = self.faults.get(action, [None]).pop(0) if self.faults.get(action) else None
        if fault:
            kind, code = fault
            if kind == "error":
                raise ApiError(400, code, f"Injected failure of {action}.")
            if kind == "throttle":
                raise ApiError(400, "Throttling.User", "Request was denied due to user flow control.")
            if kind == "unavailable":
                raise ApiError(503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server.")
            if kind == "drop":
                raise Dropped()
        token = params.get("ClientToken")
        with self.lock:
            hooks = self.hooks.get(action)
            if hooks:
                hooks.pop(0)(params)
            self._expire()
            if token and (action, token) in self.tokens:
                result = dict(self.tokens[(action, token)])
            else:
                result = handler(params)
                if token:
                    self.tokens[(action, token)] = result
        if fault and fault[0] == "drop_after":
            raise Dropped()
        return result

    # -- time-driven states ------------------------------------------------------------------
    def _expire(self) -> None:
        now = time.monotonic()
        gone = [rid for rid, inst in self.resources["instance"].items()
                if inst.get("deleted") is not None and now >= inst["deleted"] + self.instance_delete_s]
        for rid in gone:
            del self.resources["instance"][rid]

    def _network_status(self, res: dict) -> str:
        return "Available" if time.monotonic() >= res["created"] + self.network_ready_s else "Pending"

    def _instance_status(self, inst: dict) -> str:
        if inst.get("deleted") is not None:
            return "Stopping"
        if self.instance_start_polls:
            looks = inst.get("looks", 0)
            if looks > self.instance_start_polls:
                return "Running"
            return "Starting" if looks > self.instance_start_polls // 2 else "Pending"
        age = time.monotonic() - inst["created"]
        if age >= self.instance_start_s:
            return "Running"
        return "Starting" if age >= self.instance_start_s / 2 else "Pending"

    def _get(self, kind: str, rid: str, code: str) -> dict:
        res = self.resources[kind].get(rid or "")
        if res is None:
            raise ApiError(404, code, f"The specified {kind} {rid} does not exist.")
        return res

    def _new(self, kind: str, prefix: str, **fields) -> dict:
        rid = f"{prefix}-{uuid.uuid4().hex[:20]}"
        res = {"id": rid, "created": time.monotonic(), **fields}
        self.resources[kind][rid] = res
        return res

    @staticmethod
    def _page(items: list, params: dict, outer: str, inner: str, action: str) -> dict:
        size = int(params.get("PageSize", 10))
        number = int(params.get("PageNumber", 1))
        if not 1 <= size <= PAGE_MAX[action]:
            raise ApiError(400, "InvalidParameter.PageSize", f"PageSize must be from 1 to {PAGE_MAX[action]}.")
        if number < 1:
            raise ApiError(400, "InvalidParameter.PageNumber", "PageNumber must be 1 or more.")
        chunk = items[(number - 1) * size: number * size]
        return {outer: {inner: chunk}, "TotalCount": len(items), "PageNumber": number, "PageSize": size}

    # -- ECS ---------------------------------------------------------------------------------
    @staticmethod
    def _check_enum(params: dict, name: str, allowed: set[str], code: str) -> None:
        value = params.get(name)
        if value is not None and value not in allowed:
            raise ApiError(400, code, f"The specified parameter {name} ({value!r}) is not valid.")

    def _do_DescribeZones(self, params: dict) -> dict:
        self._check_enum(params, "InstanceChargeType", INSTANCE_CHARGE_TYPES, "InvalidInstanceChargeType.ValueNotSupported")
        zones = [{"ZoneId": z, "LocalName": z, "AvailableInstanceTypes": {"InstanceTypes": types},
                  "AvailableResourceCreation": {"ResourceTypes": ["VSwitch", "Instance", "Disk"]}}
                 for z, types in self.zones.items()]
        return {"Zones": {"Zone": zones}}

    def _do_DescribeAvailableResource(self, params: dict) -> dict:
        """Per zone, the instance types on sale and whether they have stock (DestinationResource=InstanceType)."""
        destination = params.get("DestinationResource")
        if destination is None:
            raise ApiError(400, "MissingParameter", "The input parameter DestinationResource is mandatory.")
        self._check_enum(params, "DestinationResource", DESTINATION_RESOURCES, "InvalidParameter")
        self._check_enum(params, "InstanceChargeType", INSTANCE_CHARGE_TYPES, "InvalidInstanceChargeType.ValueNotSupported")
        if destination != "InstanceType":
            raise ApiError(400, "InvalidParameter", f"DestinationResource {destination} is not emulated.")
        zones = []
        for zone, types in self.zones.items():
            if params.get("ZoneId", zone) != zone:
                continue
            supported = [{"Value": t, "Status": "SoldOut" if (zone, t) in self.sold_out else "Available",
                          "StatusCategory": "WithoutStock" if (zone, t) in self.sold_out else "WithStock"}
                         for t in types if params.get("InstanceType", t) == t]
            if supported:
                zones.append({"RegionId": self.region, "ZoneId": zone, "Status": "Available",
                              "StatusCategory": "WithStock", "AvailableResources": {"AvailableResource": [
                                  {"Type": "InstanceType", "SupportedResources": {"SupportedResource": supported}}]}})
        return {"AvailableZones": {"AvailableZone": zones}}

    def _do_DescribePrice(self, params: dict) -> dict:
        """The pay-as-you-go price of an instance with its system disk and bandwidth, per ``PriceUnit``."""
        self._check_enum(params, "PriceUnit", set(PRICE_UNITS), "InvalidPriceUnit.ValueNotSupported")
        self._check_enum(params, "InternetChargeType", INTERNET_CHARGE_TYPES, "InvalidInternetChargeType.ValueNotSupported")
        self._check_enum(params, "SystemDisk.Category", DISK_CATEGORIES, "InvalidSystemDiskCategory.ValueNotSupported")
        if params.get("ResourceType", "instance") != "instance":
            raise ApiError(400, "InvalidParameter", "Only ResourceType instance is emulated.")
        kind = params.get("InstanceType", "")
        offered = any(kind in types for types in self.zones.values())
        if kind not in self.prices or not offered:
            raise ApiError(400, "InvalidInstanceType.ValueNotSupported",
                           f"The specified InstanceType {kind!r} is not supported in {self.region}.")
        hours = PRICE_UNITS[params.get("PriceUnit", "Hour")]
        disk_gb = int(params.get("SystemDisk.Size", 40))
        bandwidth = int(params.get("InternetMaxBandwidthOut", 0))
        by_bandwidth = params.get("InternetChargeType", "PayByTraffic") == "PayByBandwidth"
        details = [("instanceType", self.prices[kind]),
                   ("systemDisk", DISK_PRICES[params.get("SystemDisk.Category", "cloud_efficiency")] * disk_gb),
                   ("bandwidth", BANDWIDTH_PRICE * bandwidth if by_bandwidth else 0.0)]
        infos = [{"Resource": r, "OriginalPrice": round(p * hours, 4), "DiscountPrice": 0.0,
                  "TradePrice": round(p * hours, 4)} for r, p in details]
        total = round(sum(i["TradePrice"] for i in infos), 4)
        return {"PriceInfo": {"Price": {"OriginalPrice": total, "DiscountPrice": 0.0, "TradePrice": total,
                                        "Currency": "CNY", "DetailInfos": {"DetailInfo": infos}},
                              "Rules": {"Rule": []}}}

    def _do_DescribeImages(self, params: dict) -> dict:
        images = [i for i in self.images
                  if params.get("ImageOwnerAlias", "system") == i["ImageOwnerAlias"]
                  and params.get("OSType", i["OSType"]) == i["OSType"]
                  and params.get("Architecture", i["Architecture"]) == i["Architecture"]
                  and params.get("ImageId", i["ImageId"]) == i["ImageId"]
                  and fnmatch.fnmatch(i["ImageName"], params.get("ImageName", "*"))]
        return self._page(images, params, "Images", "Image", "DescribeImages")

    def _do_ImportKeyPair(self, params: dict) -> dict:
        name, body = params.get("KeyPairName", ""), params.get("PublicKeyBody", "")
        if any(k["name"] == name for k in self.resources["key_pair"].values()):
            raise ApiError(400, "KeyPair.AlreadyExist", "The key pair already exists.")
        # As the real API: rsa, dsa and ecdsa keys (and their OpenSSH certificates), never ed25519.
        if not body.startswith(("ssh-rsa ", "ssh-dss ", "ecdsa-sha2-", "ssh-rsa-cert-", "ssh-dss-cert-")):
            raise ApiError(400, "InvalidPublicKeyBody.Malformed", "The public key body is malformed.")
        fingerprint = hashlib.md5(body.split()[1].encode()).hexdigest()
        res = self._new("key_pair", "kp", name=name, body=body, fingerprint=fingerprint, tags=_tags(params))
        return {"KeyPairName": res["name"], "KeyPairFingerPrint": fingerprint}

    def _do_DescribeKeyPairs(self, params: dict) -> dict:
        tags = _tags(params)
        pairs = [{"KeyPairName": k["name"], "KeyPairFingerPrint": k["fingerprint"], "Tags": _ecs_tags(k["tags"])}
                 for k in self.resources["key_pair"].values()
                 if params.get("KeyPairName", k["name"]) == k["name"] and _matches_tags(k, tags)]
        return self._page(pairs, params, "KeyPairs", "KeyPair", "DescribeKeyPairs")

    def _do_DeleteKeyPairs(self, params: dict) -> dict:
        names = json.loads(params.get("KeyPairNames", "[]"))
        for rid, k in list(self.resources["key_pair"].items()):
            if k["name"] in names:
                del self.resources["key_pair"][rid]
        return {}

    def _do_CreateSecurityGroup(self, params: dict) -> dict:
        vpc = self._get("vpc", params.get("VpcId"), "InvalidVpcId.NotFound")
        res = self._new("security_group", "sg", name=params.get("SecurityGroupName", ""), vpc=vpc["id"],
                        tags=_tags(params), rules=[])
        return {"SecurityGroupId": res["id"]}

    def _sg_view(self, sg: dict) -> dict:
        return {"SecurityGroupId": sg["id"], "SecurityGroupName": sg["name"], "VpcId": sg["vpc"],
                "Tags": _ecs_tags(sg["tags"])}

    def _do_DescribeSecurityGroups(self, params: dict) -> dict:
        tags = _tags(params)
        groups = [self._sg_view(g) for g in self.resources["security_group"].values()
                  if params.get("SecurityGroupId", g["id"]) == g["id"] and params.get("VpcId", g["vpc"]) == g["vpc"]
                  and _matches_tags(g, tags)]
        return self._page(groups, params, "SecurityGroups", "SecurityGroup", "DescribeSecurityGroups")

    def _do_DescribeSecurityGroupAttribute(self, params: dict) -> dict:
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        return {"SecurityGroupId": sg["id"], "VpcId": sg["vpc"], "InnerAccessPolicy": sg.get("inner", "Accept"),
                "Permissions": {"Permission": [dict(r, Direction="ingress") for r in sg["rules"]]}}

    @staticmethod
    def _permissions(params: dict) -> list[dict]:
        rules = []
        for n in itertools.count(1):
            proto = params.get(f"Permissions.{n}.IpProtocol")
            if proto is None:
                break
            source = params.get(f"Permissions.{n}.SourceCidrIp") or params.get(f"Permissions.{n}.Ipv6SourceCidrIp", "")
            rule = {"IpProtocol": proto.upper(), "PortRange": params.get(f"Permissions.{n}.PortRange", ""),
                    "SourceCidrIp" if ":" not in source else "Ipv6SourceCidrIp": source,
                    "Policy": params.get(f"Permissions.{n}.Policy", "accept").capitalize()}
            start, _, end = rule["PortRange"].partition("/")
            if not (start.isdigit() and end.isdigit()):
                raise ApiError(400, "InvalidPortRange.Malformed", "The specified port range is malformed.")
            ipaddress.ip_network(source)
            rules.append(rule)
        if not rules:
            raise ApiError(400, "MissingParameter", "Permissions is mandatory for this action.")
        return rules

    def _do_AuthorizeSecurityGroup(self, params: dict) -> dict:
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        for rule in self._permissions(params):
            if rule in sg["rules"]:
                raise ApiError(400, "InvalidPermission.Duplicate", "The specified rule already exists.")
            sg["rules"].append(rule)
        return {}

    def _do_RevokeSecurityGroup(self, params: dict) -> dict:
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        for rule in self._permissions(params):
            if rule in sg["rules"]:
                sg["rules"].remove(rule)
        return {}

    def _do_ModifySecurityGroupPolicy(self, params: dict) -> dict:
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        self._check_enum(params, "InnerAccessPolicy", {"Accept", "Drop"}, "InvalidInnerAccessPolicy.ValueNotSupported")
        sg["inner"] = params.get("InnerAccessPolicy", "Accept")
        return {}

    def _do_DeleteSecurityGroup(self, params: dict) -> dict:
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        if any(i["security_group"] == sg["id"] for i in self.resources["instance"].values()):
            raise ApiError(403, "DependencyViolation", "There is still instance(s) in the specified security group.")
        del self.resources["security_group"][sg["id"]]
        return {}

    def _do_RunInstances(self, params: dict) -> dict:
        self._check_enum(params, "InstanceChargeType", INSTANCE_CHARGE_TYPES, "InvalidInstanceChargeType.ValueNotSupported")
        self._check_enum(params, "InternetChargeType", INTERNET_CHARGE_TYPES, "InvalidInternetChargeType.ValueNotSupported")
        self._check_enum(params, "SystemDisk.Category", DISK_CATEGORIES, "InvalidSystemDiskCategory.ValueNotSupported")
        if params.get("InstanceChargeType") == "PrePaid" and not params.get("Period"):
            raise ApiError(400, "MissingParameter.Period", "Period is mandatory for a PrePaid instance.")
        vsw = self._get("vswitch", params.get("VSwitchId"), "InvalidVSwitchId.NotFound")
        sg = self._get("security_group", params.get("SecurityGroupId"), "InvalidSecurityGroupId.NotFound")
        if self._network_status(vsw) != "Available":
            raise ApiError(403, "IncorrectVSwitchStatus", "The current status of virtual switch does not support this operation.")
        if sg["vpc"] != vsw["vpc"]:
            raise ApiError(403, "InvalidSecurityGroup.NotInSameVpc", "The security group and vswitch are not in the same VPC.")
        zone = params.get("ZoneId", vsw["zone"])
        if zone != vsw["zone"]:
            raise ApiError(400, "InvalidVSwitchId.ZoneMismatch", "The vswitch is not in the specified zone.")
        if params.get("InstanceType") not in self.zones.get(zone, []):
            raise ApiError(403, "InvalidResourceType.NotSupported", "The instance type is not available in this zone.")
        if (zone, params.get("InstanceType")) in self.sold_out:
            raise ApiError(403, "OperationDenied.NoStock", "The requested resource is sold out in the specified zone.")
        if not any(i["ImageId"] == params.get("ImageId") for i in self.images):
            raise ApiError(404, "InvalidImageId.NotFound", "The specified ImageId does not exist.")
        key = params.get("KeyPairName")
        if key and not any(k["name"] == key for k in self.resources["key_pair"].values()):
            raise ApiError(404, "InvalidKeyPairName.NotFound", "The specified KeyPairName does not exist.")
        ids = []
        for _ in range(int(params.get("Amount", 1))):
            # Each instance its own private address in the vSwitch, the first one 192.168.1.10 as before.
            taken = {i["private"] for i in self.resources["instance"].values() if i["vswitch"] == vsw["id"]}
            private = next(f"192.168.1.{n}" for n in itertools.count(10) if f"192.168.1.{n}" not in taken)
            inst = self._new("instance", "i", name=params.get("InstanceName", ""), zone=zone, vswitch=vsw["id"],
                             vpc=vsw["vpc"], security_group=sg["id"], type=params["InstanceType"],
                             image=params["ImageId"], key_pair=key, tags=_tags(params), deleted=None,
                             bandwidth=int(params.get("InternetMaxBandwidthOut", 0)), private=private)
            ids.append(inst["id"])
        return {"InstanceIdSets": {"InstanceIdSet": ids}}

    def _instance_view(self, inst: dict) -> dict:
        inst["looks"] = inst.get("looks", 0) + 1
        status = self._instance_status(inst)
        public = [self.public_ip] if inst["bandwidth"] > 0 and status in ("Starting", "Running") else []
        return {"InstanceId": inst["id"], "InstanceName": inst["name"], "Status": status, "ZoneId": inst["zone"],
                "InstanceType": inst["type"], "ImageId": inst["image"], "KeyPairName": inst["key_pair"] or "",
                "PublicIpAddress": {"IpAddress": public}, "EipAddress": {"IpAddress": ""},
                "VpcAttributes": {"VpcId": inst["vpc"], "VSwitchId": inst["vswitch"],
                                  "PrivateIpAddress": {"IpAddress": [inst.get("private", "192.168.1.10")]}},
                "SecurityGroupIds": {"SecurityGroupId": [inst["security_group"]]}, "Tags": _ecs_tags(inst["tags"])}

    def _do_DescribeInstances(self, params: dict) -> dict:
        ids = json.loads(params["InstanceIds"]) if params.get("InstanceIds") else None
        tags = _tags(params)
        found = [self._instance_view(i) for i in self.resources["instance"].values()
                 if (ids is None or i["id"] in ids) and _matches_tags(i, tags)]
        return self._page(found, params, "Instances", "Instance", "DescribeInstances")

    def _do_DeleteInstance(self, params: dict) -> dict:
        inst = self._get("instance", params.get("InstanceId"), "InvalidInstanceId.NotFound")
        status = self._instance_status(inst)
        if status in ("Pending", "Starting"):
            raise ApiError(403, "IncorrectInstanceStatus", "The current status of the resource does not support this operation.")
        if status == "Running" and params.get("Force", "").lower() != "true":
            raise ApiError(403, "IncorrectInstanceStatus", "The instance is running: stop it first or pass Force=true.")
        if inst["deleted"] is None:
            inst["deleted"] = time.monotonic()
        return {}

    # -- VPC ---------------------------------------------------------------------------------
    def _do_CreateVpc(self, params: dict) -> dict:
        cidr = params.get("CidrBlock", "172.16.0.0/12")
        ipaddress.ip_network(cidr)
        res = self._new("vpc", "vpc", name=params.get("VpcName", ""), cidr=cidr, tags=_tags(params))
        return {"VpcId": res["id"], "VRouterId": f"vrt-{res['id'][4:]}", "RouteTableId": f"vtb-{res['id'][4:]}"}

    def _do_DescribeVpcs(self, params: dict) -> dict:
        tags = _tags(params)
        vpcs = [{"VpcId": v["id"], "VpcName": v["name"], "CidrBlock": v["cidr"], "Status": self._network_status(v),
                 "RegionId": self.region, "Tags": _vpc_tags(v["tags"])}
                for v in self.resources["vpc"].values()
                if params.get("VpcId", v["id"]) == v["id"] and _matches_tags(v, tags)]
        return self._page(vpcs, params, "Vpcs", "Vpc", "DescribeVpcs")

    def _do_DeleteVpc(self, params: dict) -> dict:
        vpc = self._get("vpc", params.get("VpcId"), "InvalidVpcId.NotFound")
        for kind, code in (("vswitch", "DependencyViolation.VSwitch"), ("security_group", "DependencyViolation.SecurityGroup")):
            if any(r["vpc"] == vpc["id"] for r in self.resources[kind].values()):
                raise ApiError(400, code, f"The VPC still contains a {kind}.")
        del self.resources["vpc"][vpc["id"]]
        return {}

    def _do_CreateVSwitch(self, params: dict) -> dict:
        vpc = self._get("vpc", params.get("VpcId"), "InvalidVpcId.NotFound")
        if self._network_status(vpc) != "Available":
            raise ApiError(400, "IncorrectVpcStatus", "The current VPC status does not support this operation.")
        zone = params.get("ZoneId", "")
        if zone not in self.zones:
            raise ApiError(400, "InvalidZoneId.NotFound", "The specified zone does not exist.")
        cidr = ipaddress.ip_network(params.get("CidrBlock", ""))
        if not cidr.subnet_of(ipaddress.ip_network(vpc["cidr"])):
            raise ApiError(400, "InvalidCidrBlock.Malformed", "The vSwitch CIDR block is not within the VPC's.")
        res = self._new("vswitch", "vsw", name=params.get("VSwitchName", ""), vpc=vpc["id"], zone=zone,
                        cidr=str(cidr), tags=_tags(params))
        return {"VSwitchId": res["id"]}

    def _do_DescribeVSwitches(self, params: dict) -> dict:
        tags = _tags(params)
        found = [{"VSwitchId": s["id"], "VSwitchName": s["name"], "VpcId": s["vpc"], "ZoneId": s["zone"],
                  "CidrBlock": s["cidr"], "Status": self._network_status(s), "Tags": _vpc_tags(s["tags"])}
                 for s in self.resources["vswitch"].values()
                 if params.get("VSwitchId", s["id"]) == s["id"] and params.get("VpcId", s["vpc"]) == s["vpc"]
                 and _matches_tags(s, tags)]
        return self._page(found, params, "VSwitches", "VSwitch", "DescribeVSwitches")

    def _do_DeleteVSwitch(self, params: dict) -> dict:
        vsw = self._get("vswitch", params.get("VSwitchId"), "InvalidVSwitchId.NotFound")
        if any(i["vswitch"] == vsw["id"] for i in self.resources["instance"].values()):
            raise ApiError(400, "DependencyViolation", "The vSwitch still contains instance(s).")
        del self.resources["vswitch"][vsw["id"]]
        return {}
