"""Alibaba Cloud ECS provider: VPC, vSwitch, security group, key pair and one ECS instance.

Every resource carries the tag ``ollastack-stack=<name>``. ``create`` looks resources up by that
tag before creating anything, so a second run (or a run after an interrupted one) adopts what
exists instead of duplicating it; ``destroy`` deletes what the state records or the tag finds, only
if it carries the tag. ``GRAPH`` declares the steps and their needs as data; ``ollastack.cloud.plan``
runs independent steps concurrently (the key pair, image and zone look-ups overlap the VPC), so
the wall time is the dependency chain VPC -> vSwitch -> instance, not the sum of all calls. A fleet
(``fleet.backends``) adds instances without a public address in the same vSwitch, in a security group of
their own admitting SSH and Ollama's port from the gateway's private address alone (``graph``).

Credentials: ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (and
``ALIBABA_CLOUD_SECURITY_TOKEN`` for STS), otherwise the alibabacloud-credentials default chain
(profile file, CLI profile, OIDC, ECS RAM role).

Example::

    from ollastack.cloud import Progress, alibaba
    hosts = alibaba.create(stack, StackState.load("demo", "alibaba"), Progress("alibaba: "))
    removed = alibaba.destroy(stack, StackState.load("demo"), Progress("alibaba: "))
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from alibabacloud_credentials.client import Client as CredentialClient
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi.utils_models import Config
from alibabacloud_vpc20160428 import models as vpc_models
from alibabacloud_vpc20160428.client import Client as VpcClient
from darabonba.exceptions import ResponseException, UnretryableException
from darabonba.policy.retry import RetryCondition, RetryOptions

from ollastack.cloud import CloudError, Progress, plan
from ollastack.cloud.errors import hint, one_line
from ollastack.config import Stack, split_host_port
from ollastack.host import Host
from ollastack.state import StackState

TAG_KEY = "ollastack-stack"
VPC_CIDR = "192.168.0.0/16"
VSWITCH_CIDR = "192.168.1.0/24"
WORLD = "0.0.0.0/0"
# Retried by the SDK itself: throttling (400 Throttling*), server errors and lost connections.
# Lost connections are safe to retry because every create call carries a ClientToken.
RETRY_EXCEPTIONS = ["ThrottlingException", "ServerException", "RetryError"]
RETRY_CODES = ["Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable", "InternalError", "UnknownError"]
# Transient states while a dependent resource is still being created or deleted.
BUSY_CODES = ("DependencyViolation", "IncorrectInstanceStatus", "IncorrectVpcStatus", "IncorrectVSwitchStatus",
              "IncorrectStatus", "OperationConflict", "LastTokenProcessing")
# The create steps (methods of Steps, called with what their needs returned) and what each needs.
GRAPH = {
    "zone": [],
    "image": [],
    "key_pair": [],
    "vpc": [],
    "vswitch": ["vpc", "zone"],
    "security_group": ["vpc"],
    "instance": ["vswitch", "security_group", "key_pair", "image"],
}
# A fleet's backends (``fleet.backends``): their own security group (no rules until the gateway's
# private address is known, then SSH and Ollama's port from it alone), and one instance each without a
# public address in the gateway's vSwitch; ``graph`` adds these steps, all beside the gateway's instance.
BACKEND_GROUP, BACKEND_RULES = "backend_security_group", "backend_rules"


@dataclass(frozen=True)
class Timing:
    """Waits and retries; tests pass ``Timing(poll_s=0, backoff_ms=0)``."""

    # between status polls (VPC, vSwitch, instance); $OLLASTACK_CLOUD_POLL_S wins (see plan.poll_interval)
    poll_s: float = field(default_factory=lambda: plan.poll_interval(3.0))
    backoff_ms: int = 500        # first retry delay of throttled / failed calls, doubled each time
    attempts: int = 6            # tries per API call, the first included
    wait_s: float = 900.0        # give up waiting for a status after this long
    report_s: float = 15.0       # repeat an unchanged status line this often


def icp_warning(region: str, domain: str) -> str:
    """A line to show before ``up`` when ``domain`` is served from a mainland China region, else "".

    Example: ``icp_warning("cn-hangzhou", "chat.example.com")`` says an ICP filing is needed.
    """
    mainland = region.startswith("cn-") and not region.startswith("cn-hongkong")
    if not (mainland and domain):
        return ""
    return (f"warning: alibaba.region {region} is in mainland China: serving {domain} needs an ICP filing, "
            "or Alibaba blocks HTTP(S) to it; pick a region outside the mainland (e.g. cn-hongkong) if it has none")


def warnings(stack: Stack) -> list[str]:
    """Lines the CLI prints before creating anything (ICP filing in mainland China)."""
    line = icp_warning(stack.alibaba.region, stack.tls.domain)
    return [line] if line else []


def _endpoint(url: str) -> tuple[str | None, str]:
    if not url:
        return None, "https"
    parts = urlsplit(url)
    return parts.netloc, parts.scheme


def _credentials() -> dict[str, Any]:
    key_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if key_id and secret:
        return {"access_key_id": key_id, "access_key_secret": secret,
                "security_token": os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None}
    return {"credential": CredentialClient()}


def _retry_options(timing: Timing) -> RetryOptions:
    backoff = {"policy": "ExponentialWithEqualJitter", "period": timing.backoff_ms, "cap": 20_000}
    return RetryOptions(retryable=True, retry_condition=[RetryCondition(
        max_attempts=timing.attempts, exception=RETRY_EXCEPTIONS, error_code=RETRY_CODES,
        backoff=backoff, max_delay=20_000)])


class ApiError(CloudError):
    """A failed call, explained in one line; ``code`` is the API's error code ('' for network errors)."""

    def __init__(self, line: str, code: str = ""):
        super().__init__(line)
        self.code = code


class Api:
    """The ECS and VPC clients of one stack, with retries configured and errors explained.

    Example::

        api = Api(stack, Timing())
        body = api.call(api.ecs.describe_zones, ecs_models.DescribeZonesRequest(region_id=api.region))
        body["Zones"]["Zone"][0]["ZoneId"]
    """

    def __init__(self, stack: Stack, timing: Timing):
        self.region = stack.alibaba.region
        self.endpoints = {"ecs": stack.alibaba.ecs_endpoint, "vpc": stack.alibaba.vpc_endpoint}
        self.ecs = EcsClient(self._config(stack.alibaba.ecs_endpoint, timing))
        self.vpc = VpcClient(self._config(stack.alibaba.vpc_endpoint, timing))

    def _config(self, url: str, timing: Timing) -> Config:
        endpoint, protocol = _endpoint(url)
        return Config(region_id=self.region, endpoint=endpoint, protocol=protocol, connect_timeout=10_000,
                      read_timeout=60_000, retry_options=_retry_options(timing), **_credentials())

    def call(self, method: Callable, request: Any) -> dict[str, Any]:
        """Run one API call and return its response body as a PascalCase dict."""
        action = type(request).__name__.removesuffix("Request")
        try:
            return method(request).body.to_map()
        except ResponseException as exc:
            code = str(exc.code or "")
            message = one_line(str(exc.message or "")).removeprefix(f"code: {exc.status_code}, ")
            raise ApiError(f"Alibaba Cloud {action} failed: {code}: {message}; {hint('alibaba', code)}", code) from None
        except UnretryableException as exc:
            if type(exc.inner_exception).__module__.startswith("alibabacloud_credentials"):
                raise ApiError("no usable Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
                               "ALIBABA_CLOUD_ACCESS_KEY_SECRET, or configure a profile with `aliyun configure`") from None
            product = "ecs" if getattr(method, "__self__", None) is self.ecs else "vpc"
            where = self.endpoints[product] or f"the {product.upper()} endpoint of {self.region}"
            raise ApiError(f"Alibaba Cloud {action}: cannot reach {where} ({one_line(exc.inner_exception)}); "
                           f"check the network or alibaba.{product}_endpoint, then run again") from None

    def items(self, method: Callable, request: Any, outer: str, inner: str) -> list[dict[str, Any]]:
        """All pages of a Describe* call."""
        request.page_size, request.page_number, found = 50, 1, []
        while True:
            body = self.call(method, request)
            found += body.get(outer, {}).get(inner, [])
            if request.page_number * request.page_size >= int(body.get("TotalCount", 0)):
                return found
            request.page_number += 1


def _tagged(resource: dict[str, Any], stack_name: str) -> bool:
    tags = resource.get("Tags", {}).get("Tag", [])
    return any((t.get("TagKey") or t.get("Key")) == TAG_KEY and (t.get("TagValue") or t.get("Value")) == stack_name
               for t in tags)


def _tag(models: Any, action: str, stack_name: str) -> list[Any]:
    return [getattr(models, f"{action}RequestTag")(key=TAG_KEY, value=stack_name)]


class Steps:
    """The create steps of one stack; each finds its resource by tag or creates and records it."""

    def __init__(self, stack: Stack, state: StackState, progress: Progress, timing: Timing):
        self.stack, self.timing = stack, timing
        self.name = stack.stack.name
        self.prefix = f"ollastack-{self.name}"
        self.api = Api(stack, timing)
        self.region = stack.alibaba.region
        self.recorder = plan.Recorder(state, progress, region=self.region)
        self.record, self.progress = self.recorder.record, self.recorder.progress

    def client_token(self, kind: str, name: str = "") -> str:
        """The ClientToken for creating this stack's ``kind``: one per resource, kept in its state record.

        Written before the request goes out, so a retried or resumed ``up`` (even one whose tag
        look-up does not see the new resource yet) repeats it, and Alibaba answers with the
        resource it already made instead of making a second one. A record whose resource was
        found gone gets a new token: the old one would only name the deleted resource again.
        """
        with self.recorder.lock:
            entry = self.recorder.state.find(kind, name or self.prefix) or {}
            if entry.get("client_token") and not entry.get("id"):
                return entry["client_token"]
            token = str(uuid.uuid4())
            self.record(kind, name or self.prefix, id=None, client_token=token)
            return token

    def wait(self, what: str, poll: Callable[[], tuple[str, Any]], ready: str) -> Any:
        """Poll until the status is ``ready``; show each new status and repeat it now and then."""
        started = last_report = time.monotonic()
        last = None
        while True:
            status, value = poll()
            now = time.monotonic()
            if status == ready:
                return value
            if status != last or now - last_report >= self.timing.report_s:
                self.progress(f"{what}: {status} ({now - started:.0f} s)")
                last, last_report = status, now
            if now - started > self.timing.wait_s:
                raise CloudError(f"{what} is still {status} after {self.timing.wait_s:.0f} s: check it in the ECS "
                                 "console, then run `ollastack up` again to keep waiting")
            time.sleep(self.timing.poll_s)

    # -- look-ups ----------------------------------------------------------------------------
    def zone(self) -> str:
        want, pinned = self.stack.alibaba.instance_type, self.stack.alibaba.zone
        body = self.api.call(self.api.ecs.describe_zones, ecs_models.DescribeZonesRequest(
            region_id=self.region, instance_charge_type="PostPaid"))
        offering = sorted(z["ZoneId"] for z in body.get("Zones", {}).get("Zone", [])
                          if want in z.get("AvailableInstanceTypes", {}).get("InstanceTypes", []))
        if pinned and pinned not in offering:
            raise CloudError(f"alibaba.zone {pinned} does not offer {want} (zones that do: {', '.join(offering) or 'none'}); "
                             "set another zone or leave it empty")
        if not offering:
            raise CloudError(f"alibaba.instance_type {want} is not offered in any zone of {self.region}: "
                             "choose another instance_type or region")
        if pinned:
            return pinned
        # The zone ``plan`` names: the first with stock of the type, if any has.
        stock = self.zones_with_stock(want)
        return next((z for z in offering if want in stock.get(z, [])), offering[0])

    def zones_with_stock(self, instance_type: str | None) -> dict[str, list[str]]:
        """Zone -> the instance types with pay-as-you-go stock there (``DescribeAvailableResource``);
        ``instance_type`` None: every type.

        Example: ``steps.zones_with_stock("ecs.gn7i-c8g1.2xlarge")`` -> {"cn-hangzhou-j": ["ecs.gn7i-c8g1.2xlarge"]}
        """
        body = self.api.call(self.api.ecs.describe_available_resource, ecs_models.DescribeAvailableResourceRequest(
            region_id=self.region, destination_resource="InstanceType", instance_charge_type="PostPaid",
            instance_type=instance_type))
        zones: dict[str, list[str]] = {}
        for zone in body.get("AvailableZones", {}).get("AvailableZone", []):
            for resource in zone.get("AvailableResources", {}).get("AvailableResource", []):
                for offer in resource.get("SupportedResources", {}).get("SupportedResource", []):
                    if offer.get("Status") == "Available":
                        zones.setdefault(zone["ZoneId"], []).append(offer["Value"])
        return zones

    def image(self) -> str:
        pinned, pattern = self.stack.alibaba.image_id, self.stack.alibaba.image_pattern
        request = ecs_models.DescribeImagesRequest(region_id=self.region, image_id=pinned or None,
                                                   image_owner_alias=None if pinned else "system",
                                                   ostype="linux", status="Available")
        images = self.api.items(self.api.ecs.describe_images, request, "Images", "Image")
        matching = [i for i in images if pinned or fnmatch.fnmatch(i["ImageName"], pattern)]
        if not matching:
            wanted = f"image alibaba.image_id {pinned}" if pinned else f"system image matching alibaba.image_pattern {pattern!r}"
            raise CloudError(f"no {wanted} in {self.region}: check the setting (e.g. debian_12*x64*)")
        newest = max(matching, key=lambda i: (i.get("CreationTime", ""), i["ImageName"]))
        self.progress(f"image {newest['ImageName']} ({newest['ImageId']})")
        return newest["ImageId"]

    # -- resources ---------------------------------------------------------------------------
    def key_pair(self) -> str:
        name = self.prefix
        body = open(os.path.expanduser(self.stack.access.ssh_public_key)).read().strip()
        existing = self._key_pairs(name)
        if not existing:
            try:
                self.api.call(self.api.ecs.import_key_pair, ecs_models.ImportKeyPairRequest(
                    region_id=self.region, key_pair_name=name, public_key_body=body,
                    tag=_tag(ecs_models, "ImportKeyPair", self.name)))
                self.progress(f"key pair {name} imported")
            except ApiError as exc:
                if exc.code != "KeyPair.AlreadyExist":
                    raise
                existing = self._key_pairs(name)
        if existing and not _tagged(existing[0], self.name):
            raise CloudError(f"a key pair named {name} exists but is not tagged {TAG_KEY}={self.name}: "
                             "delete it in the ECS console or rename the stack")
        self.record("key_pair", name, id=name)
        return name

    def _key_pairs(self, name: str) -> list[dict[str, Any]]:
        return self.api.items(self.api.ecs.describe_key_pairs, ecs_models.DescribeKeyPairsRequest(
            region_id=self.region, key_pair_name=name), "KeyPairs", "KeyPair")

    def vpc(self) -> str:
        found = self.api.items(self.api.vpc.describe_vpcs, vpc_models.DescribeVpcsRequest(
            region_id=self.region, tag=_tag(vpc_models, "DescribeVpcs", self.name)), "Vpcs", "Vpc")
        if found:
            vpc_id = found[0]["VpcId"]
        else:
            vpc_id = self.api.call(self.api.vpc.create_vpc, vpc_models.CreateVpcRequest(
                region_id=self.region, vpc_name=self.prefix, cidr_block=VPC_CIDR, description="ollastack",
                client_token=self.client_token("vpc"), tag=_tag(vpc_models, "CreateVpc", self.name)))["VpcId"]
            self.progress(f"VPC {vpc_id} created")
        self.record("vpc", self.prefix, id=vpc_id)
        self.wait(f"VPC {vpc_id}", lambda: (self._one(self.api.vpc.describe_vpcs, vpc_models.DescribeVpcsRequest(
            region_id=self.region, vpc_id=vpc_id), "Vpcs", "Vpc")["Status"], None), "Available")
        return vpc_id

    def vswitch(self, vpc_id: str, zone: str) -> tuple[str, str]:
        found = self.api.items(self.api.vpc.describe_vswitches, vpc_models.DescribeVSwitchesRequest(
            region_id=self.region, vpc_id=vpc_id, tag=_tag(vpc_models, "DescribeVSwitches", self.name)),
            "VSwitches", "VSwitch")
        if found:
            vsw_id, zone = found[0]["VSwitchId"], found[0]["ZoneId"]
        else:
            vsw_id = self.api.call(self.api.vpc.create_vswitch, vpc_models.CreateVSwitchRequest(
                region_id=self.region, vpc_id=vpc_id, zone_id=zone, cidr_block=VSWITCH_CIDR,
                v_switch_name=self.prefix, client_token=self.client_token("vswitch"),
                tag=_tag(vpc_models, "CreateVSwitch", self.name)))["VSwitchId"]
            self.progress(f"vSwitch {vsw_id} created in {zone}")
        self.record("vswitch", self.prefix, id=vsw_id, zone=zone)
        self.wait(f"vSwitch {vsw_id}", lambda: (self._one(self.api.vpc.describe_vswitches, vpc_models.DescribeVSwitchesRequest(
            region_id=self.region, v_switch_id=vsw_id), "VSwitches", "VSwitch")["Status"], None), "Available")
        return vsw_id, zone

    def _groups(self, vpc_id: str) -> list[dict[str, Any]]:
        return self.api.items(self.api.ecs.describe_security_groups, ecs_models.DescribeSecurityGroupsRequest(
            region_id=self.region, vpc_id=vpc_id, tag=_tag(ecs_models, "DescribeSecurityGroups", self.name)),
            "SecurityGroups", "SecurityGroup")

    def backend_name(self, index: int = 0) -> str:
        """``ollastack-demo-backend2``: backend ``index``'s instance; ``ollastack-demo-backends``: their group."""
        return f"{self.prefix}-backend{index}" if index else f"{self.prefix}-backends"

    def is_backend(self, instance: dict[str, Any]) -> bool:
        """Whether a tagged instance is a fleet backend (one of a larger fleet too): never the gateway."""
        return str(instance.get("InstanceName", "")).startswith(f"{self.prefix}-backend")

    def security_group(self, vpc_id: str) -> str:
        found = [g for g in self._groups(vpc_id) if g.get("SecurityGroupName") != self.backend_name()]
        if found:
            sg_id = found[0]["SecurityGroupId"]
        else:
            sg_id = self.api.call(self.api.ecs.create_security_group, ecs_models.CreateSecurityGroupRequest(
                region_id=self.region, vpc_id=vpc_id, security_group_name=self.prefix, security_group_type="normal",
                description="ollastack: SSH from admin_cidrs, HTTP(S) from anywhere", client_token=self.client_token("security_group"),
                tag=_tag(ecs_models, "CreateSecurityGroup", self.name)))["SecurityGroupId"]
            self.progress(f"security group {sg_id} created")
        self.record("security_group", self.prefix, id=sg_id)
        self._rules(sg_id)
        return sg_id

    def backend_security_group(self, vpc_id: str) -> str:
        """The backends' group; it drops traffic between its members (one backend does not reach another)."""
        name = self.backend_name()
        found = [g for g in self._groups(vpc_id) if g.get("SecurityGroupName") == name]
        if found:
            sg_id = found[0]["SecurityGroupId"]
        else:
            sg_id = self.api.call(self.api.ecs.create_security_group, ecs_models.CreateSecurityGroupRequest(
                region_id=self.region, vpc_id=vpc_id, security_group_name=name, security_group_type="normal",
                description="ollastack fleet backends: SSH and Ollama from the gateway only",
                client_token=self.client_token("security_group", name),
                tag=_tag(ecs_models, "CreateSecurityGroup", self.name)))["SecurityGroupId"]
            self.progress(f"security group {sg_id} (backends) created")
        self.record("security_group", name, id=sg_id)
        self.api.call(self.api.ecs.modify_security_group_policy, ecs_models.ModifySecurityGroupPolicyRequest(
            region_id=self.region, security_group_id=sg_id, inner_access_policy="Drop"))
        return sg_id

    def backend_rules(self, sg_id: str, gateway: dict[str, str]) -> str:
        """The backends' ingress rules, exactly: 22 and Ollama's port from the gateway's private address."""
        self._rules(sg_id, self.backend_wanted(gateway["private_address"]))
        return sg_id

    def backend_wanted(self, gateway: str) -> set[tuple[str, str, str]]:
        """The backends' ingress rules for a gateway at private address ``gateway``."""
        port = split_host_port(self.stack.ollama.host)[1]
        source = str(ipaddress.ip_network(gateway))
        return {("TCP", "22/22", source), ("TCP", f"{port}/{port}", source)}

    def _rules(self, sg_id: str, wanted: set[tuple[str, str, str]] | None = None) -> None:
        """Make the ingress rules exactly ``wanted``, by default: 22 from each admin CIDR, 80 and 443 from anywhere."""
        missing, extra = self.rule_changes(sg_id, wanted)
        if missing:
            try:
                self.api.call(self.api.ecs.authorize_security_group, ecs_models.AuthorizeSecurityGroupRequest(
                    region_id=self.region, security_group_id=sg_id,
                    permissions=[_permission(ecs_models.AuthorizeSecurityGroupRequestPermissions, r) for r in missing]))
            except ApiError as exc:
                if exc.code != "InvalidPermission.Duplicate":
                    raise
            self.progress(f"security group {sg_id}: allowed " + ", ".join(f"{p.split('/')[0]} from {s}" for _, p, s in missing))
        if extra:
            self.api.call(self.api.ecs.revoke_security_group, ecs_models.RevokeSecurityGroupRequest(
                region_id=self.region, security_group_id=sg_id,
                permissions=[_permission(ecs_models.RevokeSecurityGroupRequestPermissions, r) for r in extra]))
            self.progress(f"security group {sg_id}: removed " + ", ".join(f"{p} from {s}" for _, p, s in extra))

    def rule_changes(self, sg_id: str, wanted: set[tuple[str, str, str]] | None = None,
                     ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """(ingress rules to allow, rules to revoke) to make the group's rules exactly ``wanted`` (by default
        the gateway's or one host's); ``_rules`` applies them, ``plan`` reports them.

        Example: ``steps.rule_changes("sg-1")`` -> ([("TCP", "22/22", "203.0.113.0/24")], [("TCP", "22/22", "198.51.100.7/32")])
        """
        if wanted is None:
            wanted = {("TCP", "22/22", cidr) for cidr in self.stack.access.admin_cidrs}
            wanted |= {("TCP", "80/80", WORLD), ("TCP", "443/443", WORLD)}
        body = self.api.call(self.api.ecs.describe_security_group_attribute, ecs_models.DescribeSecurityGroupAttributeRequest(
            region_id=self.region, security_group_id=sg_id, direction="ingress"))
        have = {(p["IpProtocol"].upper(), p["PortRange"], p.get("SourceCidrIp") or p.get("Ipv6SourceCidrIp", ""))
                for p in body.get("Permissions", {}).get("Permission", []) if p.get("Policy", "Accept").lower() == "accept"}
        return sorted(wanted - have), sorted(have - wanted)

    def instance(self, vswitch: tuple[str, str], sg_id: str, key_pair: str, image_id: str) -> dict[str, str]:
        """The one host's (a fleet's gateway's) instance: {"address": public, "private_address": ...} once Running."""
        return self._instance(vswitch, sg_id, key_pair, image_id)

    def backend(self, index: int, vswitch: tuple[str, str], sg_id: str, key_pair: str, image_id: str) -> dict[str, str]:
        """Backend ``index``'s instance: no public address (no bandwidth out), in the gateway's vSwitch."""
        return self._instance(vswitch, sg_id, key_pair, image_id, index)

    def _instance(self, vswitch: tuple[str, str], sg_id: str, key_pair: str, image_id: str,
                  index: int = 0) -> dict[str, str]:
        vsw_id, zone = vswitch
        cfg = self.stack.alibaba
        name = self.backend_name(index) if index else self.prefix
        found = [i for i in self._instances() if i["Status"] not in ("Stopping", "Deleted")
                 and (i.get("InstanceName") == name if index else not self.is_backend(i))]
        if found:
            inst_id = found[0]["InstanceId"]
            if found[0]["InstanceType"] != cfg.instance_type:
                self.progress(f"instance {inst_id} is {found[0]['InstanceType']}, not {cfg.instance_type}: "
                              "run `ollastack down` and `up` to change the type")
        else:
            inst_id = self.api.call(self.api.ecs.run_instances, ecs_models.RunInstancesRequest(
                region_id=self.region, zone_id=zone, image_id=image_id, instance_type=cfg.instance_type,
                v_switch_id=vsw_id, security_group_id=sg_id, key_pair_name=key_pair, amount=1,
                instance_name=name, host_name=f"{self.name}-{index + 1}", description="ollastack",
                instance_charge_type="PostPaid", internet_charge_type="PayByTraffic",
                internet_max_bandwidth_out=0 if index else cfg.bandwidth_mbps,
                system_disk=ecs_models.RunInstancesRequestSystemDisk(size=str(cfg.system_disk_gb),
                                                                     category=cfg.system_disk_category),
                client_token=self.client_token("instance", name), tag=_tag(ecs_models, "RunInstances", self.name),
            ))["InstanceIdSets"]["InstanceIdSet"][0]
            self.progress(f"instance {inst_id} ({cfg.instance_type}) created")
        self.record("instance", name, id=inst_id, zone=zone)
        return self.wait(f"instance {inst_id}", lambda: self._instance_status(inst_id, public=not index), "Running")

    def _instances(self, **filters: Any) -> list[dict[str, Any]]:
        return self.api.items(self.api.ecs.describe_instances, ecs_models.DescribeInstancesRequest(
            region_id=self.region, tag=_tag(ecs_models, "DescribeInstances", self.name), **filters),
            "Instances", "Instance")

    def _instance_status(self, inst_id: str, public: bool = True) -> tuple[str, Any]:
        found = self._instances(instance_ids=json.dumps([inst_id]))
        if not found:
            raise CloudError(f"instance {inst_id} disappeared while starting: run `ollastack up` again")
        addresses = found[0].get("PublicIpAddress", {}).get("IpAddress", [])
        eip = found[0].get("EipAddress", {}).get("IpAddress", "")
        address = eip or (addresses[0] if addresses else "")
        private = (found[0].get("VpcAttributes", {}).get("PrivateIpAddress", {}).get("IpAddress") or [""])[0]
        status = found[0]["Status"]
        if status == "Running" and public and not address:
            status = "Running, waiting for its public address"
        if status == "Running" and not private:
            status = "Running, waiting for its private address"
        return status, {"address": address if public else private, "private_address": private}

    def _one(self, method: Callable, request: Any, outer: str, inner: str) -> dict[str, Any]:
        found = self.api.call(method, request).get(outer, {}).get(inner, [])
        if not found:
            raise CloudError(f"{inner} disappeared while being created (deleted by someone else?): run `ollastack up` again")
        return found[0]


def _permission(model: type, rule: tuple[str, str, str]) -> Any:
    proto, ports, source = rule
    v6 = ipaddress.ip_network(source).version == 6
    return model(ip_protocol=proto, port_range=ports, policy="accept", priority="1",
                 description="ollastack", **{"ipv_6source_cidr_ip" if v6 else "source_cidr_ip": source})


def graph(stack: Stack) -> dict[str, list[str]]:
    """``GRAPH``, and with ``fleet.backends`` the backends' group, its rules and one instance per backend.

    Example: ``graph(stack)["backend_1"] == ["vswitch", "backend_security_group", "key_pair", "image"]``
    """
    steps = {step: list(needs) for step, needs in GRAPH.items()}
    if stack.fleet.backends:
        steps[BACKEND_GROUP] = ["vpc"]
        steps[BACKEND_RULES] = [BACKEND_GROUP, "instance"]
        for index in range(1, stack.fleet.backends + 1):
            steps[f"backend_{index}"] = ["vswitch", BACKEND_GROUP, "key_pair", "image"]
    return steps


def create(stack: Stack, state: StackState, progress: Progress, timing: Timing | None = None,
           timings: dict[str, tuple[float, float]] | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """Create (or finish creating) the stack's resources and return its hosts: the one host, or a
    fleet's gateway (public address) and then its backends (private addresses, reached through the gateway).

    ``timings`` and ``workers`` are ``plan.run``'s (per-step times; ``workers=1``: one step at a time).

    Example::

        hosts = create(stack, StackState.load("demo", "alibaba"), Progress("alibaba: "))
        hosts[0]["address"]        # the instance's public IP
    """
    steps = Steps(stack, state, progress, timing or Timing())
    for index in range(1, stack.fleet.backends + 1):
        # plan.run calls a step by its name: each backend's step is the shared one with its number.
        setattr(steps, f"backend_{index}", functools.partial(steps.backend, index))
    results = plan.run(graph(stack), steps, timings, workers)
    address = results["instance"]["address"]
    hosts: list[dict[str, Any]] = [{"name": f"{stack.stack.name}-1", "address": address,
                                    "user": stack.alibaba.admin_username,
                                    "tls_names": [stack.tls.domain] if stack.tls.domain else [address]}]
    if stack.fleet.backends:
        hosts[0]["private_address"] = results["instance"]["private_address"]
        gateway = Host.from_record(hosts[0])
        hosts += [Host(f"{stack.stack.name}-{index + 1}", results[f"backend_{index}"]["address"],
                       user=stack.alibaba.admin_username, jump=gateway).to_record()
                  for index in range(1, stack.fleet.backends + 1)]
    state.set_hosts(plan.kept_hosts(state, hosts))
    progress(f"instance ready at {address}")
    return hosts


@dataclass(frozen=True)
class Kind:
    """How to find, look up and delete one kind of resource (``id_key`` names its id field)."""

    kind: str
    id_key: str
    tagged: Callable[[], list[dict[str, Any]]]
    by_id: Callable[[str], list[dict[str, Any]]]
    delete: Callable[[str], Any]


class Teardown:
    """Deletes a stack's resources in dependency order (the kinds in ``kinds()`` order), only those tagged as the stack's."""

    def __init__(self, stack: Stack, state: StackState, progress: Progress, timing: Timing):
        self.timing = timing
        self.name = stack.stack.name
        self.region = stack.alibaba.region
        self.api = Api(stack, timing)
        self.recorder = plan.Recorder(state, progress)
        self.progress = self.recorder.progress

    def kinds(self) -> list[Kind]:
        api, region, name = self.api, self.region, self.name
        ecs, vpc = ecs_models, vpc_models

        def listing(method, request_type, outer, inner):
            return lambda **kw: api.items(method, request_type(region_id=region, **kw), outer, inner)

        instances = listing(api.ecs.describe_instances, ecs.DescribeInstancesRequest, "Instances", "Instance")
        keys = listing(api.ecs.describe_key_pairs, ecs.DescribeKeyPairsRequest, "KeyPairs", "KeyPair")
        groups = listing(api.ecs.describe_security_groups, ecs.DescribeSecurityGroupsRequest, "SecurityGroups", "SecurityGroup")
        vswitches = listing(api.vpc.describe_vswitches, vpc.DescribeVSwitchesRequest, "VSwitches", "VSwitch")
        vpcs = listing(api.vpc.describe_vpcs, vpc.DescribeVpcsRequest, "Vpcs", "Vpc")
        return [
            Kind("instance", "InstanceId", lambda: instances(tag=_tag(ecs, "DescribeInstances", name)),
                 lambda i: instances(instance_ids=json.dumps([i])), self._delete_instance),
            Kind("key_pair", "KeyPairName", lambda: keys(tag=_tag(ecs, "DescribeKeyPairs", name)),
                 lambda i: keys(key_pair_name=i),
                 lambda i: api.call(api.ecs.delete_key_pairs, ecs.DeleteKeyPairsRequest(
                     region_id=region, key_pair_names=json.dumps([i])))),
            Kind("security_group", "SecurityGroupId", lambda: groups(tag=_tag(ecs, "DescribeSecurityGroups", name)),
                 lambda i: groups(security_group_id=i),
                 lambda i: api.call(api.ecs.delete_security_group, ecs.DeleteSecurityGroupRequest(
                     region_id=region, security_group_id=i))),
            Kind("vswitch", "VSwitchId", lambda: vswitches(tag=_tag(vpc, "DescribeVSwitches", name)),
                 lambda i: vswitches(v_switch_id=i),
                 lambda i: api.call(api.vpc.delete_vswitch, vpc.DeleteVSwitchRequest(region_id=region, v_switch_id=i))),
            Kind("vpc", "VpcId", lambda: vpcs(tag=_tag(vpc, "DescribeVpcs", name)),
                 lambda i: vpcs(vpc_id=i),
                 lambda i: api.call(api.vpc.delete_vpc, vpc.DeleteVpcRequest(region_id=region, vpc_id=i))),
        ]

    def run(self) -> list[str]:
        """Remove ``plan.targets`` of the recorded resources and the tagged ones, kind by kind."""
        kinds = {kind.kind: kind for kind in self.kinds()}
        tagged = [{"kind": k.kind, "name": r[k.id_key], "id": r[k.id_key]} for k in kinds.values() for r in k.tagged()]
        state = self.recorder.state
        entries = plan.targets([r for r in state.resources if r["kind"] in kinds], tagged)
        removed = plan.teardown([(kind,) for kind in kinds], entries, lambda e: self.remove(kinds[e["kind"]], e),
                                self.recorder)
        state.set_hosts([])
        return removed

    def run_instances(self, names: list[str]) -> list[str]:
        """Remove only the instances of these names (a shrunk fleet's backends; their disks go with them)."""
        [kind] = [k for k in self.kinds() if k.kind == "instance"]
        tagged = [{"kind": "instance", "name": r["InstanceName"], "id": r["InstanceId"]} for r in kind.tagged()
                  if r.get("InstanceName") in names]
        recorded = [r for r in self.recorder.state.resources if r["kind"] == "instance" and r["name"] in names]
        return plan.teardown([("instance",)], plan.targets(recorded, tagged), lambda e: self.remove(kind, e),
                             self.recorder, sweep=False)

    def remove(self, kind: Kind, entry: dict[str, Any]) -> str | None:
        """Delete one resource if it is the stack's (a recorded one the tag look-up missed is looked up by id)."""
        rid = entry["id"]
        if not entry["tagged"]:
            found = kind.by_id(rid)
            if not found:
                return None
            if not _tagged(found[0], self.name):
                self.progress(f"{kind.kind} {rid} is not tagged {TAG_KEY}={self.name}: left alone")
                return None
        if not self._delete(kind, rid):
            return None
        self.progress(f"{kind.kind} {rid} deleted")
        return f"{kind.kind} {rid}"

    def _delete(self, kind: Kind, rid: str) -> bool:
        """Delete one resource, waiting while dependents are still going away; False if already gone."""
        started = time.monotonic()
        while True:
            try:
                kind.delete(rid)
                return True
            except ApiError as exc:
                if exc.code.endswith(".NotFound") or exc.code == "NotFound":
                    return False
                if not exc.code.startswith(BUSY_CODES) or time.monotonic() - started > self.timing.wait_s:
                    raise
            time.sleep(self.timing.poll_s)

    def _delete_instance(self, inst_id: str) -> None:
        self.api.call(self.api.ecs.delete_instance, ecs_models.DeleteInstanceRequest(instance_id=inst_id, force=True))
        started = time.monotonic()
        while self.api.items(self.api.ecs.describe_instances, ecs_models.DescribeInstancesRequest(
                region_id=self.region, instance_ids=json.dumps([inst_id])), "Instances", "Instance"):
            if time.monotonic() - started > self.timing.wait_s:
                raise CloudError(f"instance {inst_id} is still being released after {self.timing.wait_s:.0f} s: "
                                 "run `ollastack down` again later")
            time.sleep(self.timing.poll_s)


def destroy(stack: Stack, state: StackState, progress: Progress, timing: Timing | None = None) -> list[str]:
    """Delete the stack's instance, key pair, security group, vSwitch and VPC; return what was removed.

    Example::

        removed = destroy(stack, StackState.load("demo"), Progress("alibaba: "))
        # ["instance i-...", "key_pair ollastack-demo", "security_group sg-...", ...]
    """
    return Teardown(stack, state, progress, timing or Timing()).run()


def fleet_names(stack: Stack) -> list[str]:
    """The host names of a fleet's gateway and backends, as ``create`` names them (``demo-1``, ``demo-2``, ...)."""
    return [f"{stack.stack.name}-{index}" for index in range(1, stack.fleet.backends + 2)]


def remove_hosts(stack: Stack, state: StackState, names: list[str], progress: Progress,
                 timing: Timing | None = None) -> list[str]:
    """Delete the named backends' instances (host ``demo-3`` is instance ``ollastack-demo-backend2``), nothing else.

    Example: ``remove_hosts(stack, state, ["demo-3"], Progress())`` -> ["instance i-..."]
    """
    teardown = Teardown(stack, state, progress, timing or Timing())
    instances = [f"ollastack-{stack.stack.name}-backend{int(name.rsplit('-', 1)[1]) - 1}" for name in names]
    return teardown.run_instances(instances)
