"""The Alibaba Cloud provider, driven through the real ECS/VPC SDKs over HTTP against the local
stand-in in ``tests/support/alibaba_emulator.py`` (which checks every request's ACS3 signature)."""

from __future__ import annotations

import io
import ipaddress
import runpy
import socket
from pathlib import Path

import pytest
from alibabacloud_ecs20140526 import models as ecs_models
from alibabacloud_ecs20140526.client import Client as EcsClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.repo import REPO
from tests.support.alibaba_emulator import AlibabaEmulator
from ollastack.cloud import CloudError, Progress, alibaba
from ollastack.config import parse_stack
from ollastack.state import StackState

KEY_ID, SECRET = "LTAI-test-key", "test-secret"
FAST = alibaba.Timing(poll_s=0, backoff_ms=0, wait_s=20)
CREATES = ("CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "AuthorizeSecurityGroup", "RevokeSecurityGroup",
           "ImportKeyPair", "RunInstances")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    """Refuse any connection off loopback (the credentials chain would probe ECS metadata)."""
    connect, refused = socket.socket.connect, []

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            refused.append(address[0])
            raise ConnectionRefusedError(f"test refused a connection to {address[0]}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield
    assert refused == [], f"tried to connect off loopback: {refused}"


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    # The SDK ignores NO_PROXY: a proxy variable would send loopback requests to the proxy.
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "id_rsa", tmp_path / "id_rsa.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return public, private


@pytest.fixture
def emu():
    with AlibabaEmulator(access_key_id=KEY_ID, access_key_secret=SECRET, network_ready_s=0.02,
                         instance_start_s=0.05, instance_delete_s=0.02) as emulator:
        yield emulator


def make_stack(emu: AlibabaEmulator, keys, name: str = "demo", **alibaba_settings):
    public, private = keys
    settings = {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url, **alibaba_settings}
    return parse_stack({"stack": {"name": name, "provider": "alibaba"},
                        "access": {"ssh_public_key": str(public), "ssh_private_key": str(private),
                                   "admin_cidrs": ["198.51.100.7/32", "192.0.2.0/24"]},
                        "alibaba": settings})


def up(stack, out: io.StringIO | None = None, **kwargs):
    return alibaba.create(stack, StackState.load(stack.stack.name, "alibaba"), Progress(stream=out or io.StringIO()),
                          FAST, **kwargs)


def down(stack, out: io.StringIO | None = None):
    return alibaba.destroy(stack, StackState.load(stack.stack.name), Progress(stream=out or io.StringIO()), FAST)


def counts(emu: AlibabaEmulator) -> dict[str, int]:
    return {kind: len(items) for kind, items in emu.resources.items()}


def permissions(params: dict[str, str]) -> set[tuple[str, str, str]]:
    rules, n = set(), 1
    while f"Permissions.{n}.IpProtocol" in params:
        rules.add((params[f"Permissions.{n}.IpProtocol"], params[f"Permissions.{n}.PortRange"],
                   params[f"Permissions.{n}.SourceCidrIp"]))
        n += 1
    return rules


def rules_in(emu: AlibabaEmulator) -> set[tuple[str, str, str]]:
    (group,) = emu.resources["security_group"].values()
    return {(r["IpProtocol"], r["PortRange"], r["SourceCidrIp"]) for r in group["rules"]}


def test_create_requests_and_state(emu, keys):
    stack = make_stack(emu, keys, bandwidth_mbps=20, system_disk_gb=120)
    hosts = up(stack)

    assert hosts == [{"name": "demo-1", "address": "127.0.0.1", "user": "root", "tls_names": ["127.0.0.1"]}]
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    (run,) = emu.calls("RunInstances")
    assert run["ImageId"] == "m-00000007"          # newest debian_13 x64, not the arm64 or an older one
    assert run["InstanceType"] == "ecs.gn7i-c8g1.2xlarge"
    assert run["ZoneId"] == "cn-hangzhou-i"        # the first zone that offers the type
    assert run["KeyPairName"] == "ollastack-demo"
    assert "Password" not in run and "PasswordInherit" not in run
    assert run["InternetMaxBandwidthOut"] == "20" and run["SystemDisk.Size"] == "120"
    (imported,) = emu.calls("ImportKeyPair")
    assert imported["PublicKeyBody"] == keys[0].read_text().strip()
    (authorize,) = emu.calls("AuthorizeSecurityGroup")
    expected = {("tcp", "22/22", "198.51.100.7/32"), ("tcp", "22/22", "192.0.2.0/24"),
                ("tcp", "80/80", "0.0.0.0/0"), ("tcp", "443/443", "0.0.0.0/0")}
    assert {(p.lower(), r, s) for p, r, s in permissions(authorize)} == expected
    assert {(p.lower(), r, s) for p, r, s in rules_in(emu)} == expected
    for action in ("CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "ImportKeyPair", "RunInstances"):
        (params,) = emu.calls(action)
        assert (params["Tag.1.Key"], params["Tag.1.Value"]) == ("ollastack-stack", "demo"), action
    state = StackState.load("demo")
    recorded = {r["kind"]: r["id"] for r in state.resources}
    assert recorded == {"vpc": next(iter(emu.resources["vpc"])), "vswitch": next(iter(emu.resources["vswitch"])),
                        "security_group": next(iter(emu.resources["security_group"])), "key_pair": "ollastack-demo",
                        "instance": next(iter(emu.resources["instance"]))}
    assert state.hosts == hosts


def test_second_create_creates_nothing(emu, keys):
    stack = make_stack(emu, keys)
    first = up(stack)
    before = {a: len(emu.calls(a)) for a in CREATES}
    assert up(stack) == first
    assert {a: len(emu.calls(a)) for a in CREATES} == before
    assert emu.resource_count() == 5


def test_destroy_removes_everything_and_is_repeatable(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    removed = down(stack)
    assert [r.split()[0] for r in removed] == ["instance", "key_pair", "security_group", "vswitch", "vpc"]
    assert emu.resource_count() == 0
    state = StackState.load("demo")
    assert state.resources == [] and state.hosts == []
    assert down(stack) == []


def test_destroy_touches_only_this_stacks_resources(emu, keys):
    stack = make_stack(emu, keys)
    other = make_stack(emu, keys, name="other")
    up(stack)
    up(other)
    foreign = emu.add_foreign("vpc", name="by-hand", cidr="10.0.0.0/16", tags={})
    StackState.load("demo").record("vpc", "by-hand", id=foreign["id"])
    out = io.StringIO()
    down(stack, out)
    assert counts(emu) == {"vpc": 2, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    assert foreign["id"] in emu.resources["vpc"]
    assert f"vpc {foreign['id']} is not tagged ollastack-stack=demo: left alone" in out.getvalue()
    down(other)
    assert list(emu.resources["vpc"]) == [foreign["id"]]


def test_down_without_state_finds_everything_by_tag(emu, keys):
    stack, other = make_stack(emu, keys), make_stack(emu, keys, name="other")
    up(stack)
    up(other)
    StackState.load("demo").path.unlink()
    assert len(down(stack)) == 5
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}


def test_wrong_secret_fails_in_the_sdk_and_is_one_line(emu, keys, monkeypatch):
    client = EcsClient(Config(access_key_id=KEY_ID, access_key_secret="not-the-secret", region_id="cn-hangzhou",
                              endpoint=emu.ecs_url.removeprefix("http://"), protocol="http"))
    with pytest.raises(ClientException) as raw:
        client.describe_zones(ecs_models.DescribeZonesRequest(region_id="cn-hangzhou"))
    assert raw.value.code == "SignatureDoesNotMatch"

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")
    with pytest.raises(CloudError) as err:
        up(make_stack(emu, keys))
    message = str(err.value)
    assert "\n" not in message and "not-the-secret" not in message
    assert "SignatureDoesNotMatch" in message and "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in message
    assert emu.resource_count() == 0


def test_unknown_key_id_is_explained(emu, keys, monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-nobody")
    with pytest.raises(CloudError, match=r"InvalidAccessKeyId.NotFound: .*check ALIBABA_CLOUD_ACCESS_KEY_ID"):
        up(make_stack(emu, keys))


def test_unreachable_endpoint_is_one_line(emu, keys):
    stack = make_stack(emu, keys, ecs_endpoint="http://127.0.0.1:9")
    with pytest.raises(CloudError, match=r"cannot reach http://127.0.0.1:9 .*alibaba.ecs_endpoint") as err:
        up(stack)
    assert "\n" not in str(err.value)


STEPS = ["CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "AuthorizeSecurityGroup", "ImportKeyPair", "RunInstances"]
TOKEN_STEPS = ["CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "RunInstances"]


@pytest.mark.parametrize("action", STEPS)
@pytest.mark.parametrize("fault", ["throttle", "unavailable", "drop_after"])
def test_transient_faults_are_retried_without_duplicates(emu, keys, action, fault):
    emu.inject(action, fault, times=2)
    hosts = up(make_stack(emu, keys))
    assert hosts[0]["address"] == "127.0.0.1"
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    attempts = [r for r in emu.requests if r["action"] == action]
    # A retried AuthorizeSecurityGroup whose first response was lost meets its own rules (Duplicate: done).
    assert len(attempts) >= 2 and attempts[0]["status"] != 200


def failing(fault: str) -> list[str]:
    # Calls without a ClientToken recover from a lost response within the same run (see below).
    return TOKEN_STEPS if fault == "drop_after" else STEPS


@pytest.mark.parametrize(("action", "fault"), [(a, f) for f in ("error", "drop", "drop_after") for a in failing(f)])
def test_failed_step_then_down_then_up_again(emu, keys, action, fault):
    stack = make_stack(emu, keys)
    emu.inject(action, fault, times=FAST.attempts if fault != "error" else 1, code="QuotaExceed.Test")
    with pytest.raises(CloudError) as err:
        up(stack)
    assert "\n" not in str(err.value) and action in str(err.value)
    emu.clear_faults()

    down(stack)
    assert emu.resource_count() == 0
    up(stack)
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    before = {a: len(emu.calls(a)) for a in CREATES}
    up(stack)
    assert {a: len(emu.calls(a)) for a in CREATES} == before
    down(stack)
    assert emu.resource_count() == 0


@pytest.mark.parametrize("action", TOKEN_STEPS)
def test_interrupted_create_resumes_without_duplicates(emu, keys, action):
    stack = make_stack(emu, keys)
    emu.inject(action, "drop_after", times=FAST.attempts)
    with pytest.raises(CloudError, match="cannot reach"):
        up(stack)
    emu.clear_faults()
    up(stack)
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    assert len(rules_in(emu)) == 4


@pytest.mark.parametrize(("action", "code"), [("ImportKeyPair", "KeyPair.AlreadyExist"),
                                              ("AuthorizeSecurityGroup", "InvalidPermission.Duplicate")])
def test_lost_response_without_client_token_is_recognised(emu, keys, action, code):
    emu.inject(action, "drop_after", times=FAST.attempts)
    up(make_stack(emu, keys))
    attempts = [r for r in emu.requests if r["action"] == action]
    assert [(r["status"], r["code"]) for r in attempts] == [(0, ""), (400, code)]
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}
    assert len(rules_in(emu)) == 4


def test_quota_error_names_code_and_hint(emu, keys):
    emu.inject("RunInstances", "error", code="QuotaExceed.ElasticQuota")
    with pytest.raises(CloudError, match=r"RunInstances failed: QuotaExceed.ElasticQuota: .*Quota Center"):
        up(make_stack(emu, keys))


def test_zone_choice(emu, keys):
    with pytest.raises(CloudError, match="alibaba.zone cn-hangzhou-h does not offer ecs.gn7i-c8g1.2xlarge"):
        up(make_stack(emu, keys, zone="cn-hangzhou-h"))
    with pytest.raises(CloudError, match="ecs.gn8-none is not offered in any zone of cn-hangzhou"):
        up(make_stack(emu, keys, instance_type="ecs.gn8-none"))
    up(make_stack(emu, keys, zone="cn-hangzhou-j"))
    assert emu.calls("RunInstances")[0]["ZoneId"] == "cn-hangzhou-j"
    assert emu.calls("CreateVSwitch")[0]["ZoneId"] == "cn-hangzhou-j"


def test_image_pattern_and_pin(emu, keys):
    with pytest.raises(CloudError, match="no system image matching alibaba.image_pattern 'rocky_9\\*' in cn-hangzhou"):
        up(make_stack(emu, keys, image_pattern="rocky_9*"))
    up(make_stack(emu, keys, image_id="m-00000002"))
    assert emu.calls("RunInstances")[0]["ImageId"] == "m-00000002"


def test_admin_cidr_change_updates_rules(emu, keys):
    up(make_stack(emu, keys))
    public, private = keys
    changed = parse_stack({"stack": {"name": "demo", "provider": "alibaba"},
                           "access": {"ssh_public_key": str(public), "ssh_private_key": str(private),
                                      "admin_cidrs": ["203.0.113.9/32"]},
                           "alibaba": {"ecs_endpoint": emu.ecs_url, "vpc_endpoint": emu.vpc_url}})
    up(changed)
    assert {(p.lower(), r, s) for p, r, s in rules_in(emu)} == {
        ("tcp", "22/22", "203.0.113.9/32"), ("tcp", "80/80", "0.0.0.0/0"), ("tcp", "443/443", "0.0.0.0/0")}
    (revoke,) = emu.calls("RevokeSecurityGroup")
    assert {s for _, _, s in permissions(revoke)} == {"198.51.100.7/32", "192.0.2.0/24"}


def test_waiting_shows_progress(keys):
    with AlibabaEmulator(access_key_id=KEY_ID, access_key_secret=SECRET, instance_start_polls=4) as slow:
        out = io.StringIO()
        alibaba.create(make_stack(slow, keys), StackState.load("demo", "alibaba"), Progress(stream=out),
                       alibaba.Timing(poll_s=0.02, backoff_ms=0))
    lines = out.getvalue()
    assert "instance i-" in lines and ": Pending (" in lines and ": Starting (" in lines
    assert lines.rstrip().endswith("instance ready at 127.0.0.1")


def test_concurrent_create_overlaps_independent_steps(keys):
    with AlibabaEmulator(access_key_id=KEY_ID, access_key_secret=SECRET, latency=0.05) as slow:
        timings: dict = {}
        up(make_stack(slow, keys), timings=timings)
    # The key pair and image look-ups run while the VPC is being created.
    assert timings["key_pair"][0] < timings["vpc"][1] and timings["image"][0] < timings["vpc"][1]
    assert timings["instance"][0] >= max(timings[s][1] for s in ("vswitch", "security_group", "key_pair", "image"))


def test_icp_warning(emu, keys):
    def warn(region, domain):
        public, private = keys
        return alibaba.warnings(parse_stack({"access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                                             "alibaba": {"region": region}, "tls": {"domain": domain}}))
    assert "ICP filing" in warn("cn-hangzhou", "chat.example.com")[0]
    assert warn("cn-hongkong", "chat.example.com") == []
    assert warn("ap-southeast-1", "chat.example.com") == []
    assert warn("cn-beijing", "") == []


def test_emulator_reports_only_loopback_or_lab_addresses():
    with pytest.raises(ValueError):
        AlibabaEmulator(public_ip="203.0.113.5")
    assert AlibabaEmulator(public_ip="10.213.0.10").public_ip == "10.213.0.10"


def test_inventory_file_reads_state(emu, keys, tmp_path, monkeypatch):
    stack = make_stack(emu, keys)
    up(stack)
    toml = tmp_path / "stack.toml"
    toml.write_text(f'[stack]\nname = "demo"\nprovider = "alibaba"\n[access]\nssh_public_key = "{keys[0]}"\n'
                    f'ssh_private_key = "{keys[1]}"\n')
    monkeypatch.setenv("OLLASTACK_CONFIG", str(toml))
    inventory = runpy.run_path(str(REPO / "inventories" / "alibaba.py"))["alibaba"]
    ((address, data),) = inventory
    assert address == "127.0.0.1"
    assert data["ssh_user"] == "root" and data["ssh_key"] == str(keys[1]) and data["ollastack_name"] == "demo-1"


def test_missing_credentials_are_explained(emu, keys, monkeypatch, tmp_path):
    from alibabacloud_credentials.utils import auth_util

    for var in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(var)
    # The chain reads its switches at import time: turn off every source but the (empty) files.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_cli_profile_disabled", "true")
    monkeypatch.setattr(auth_util, "enable_oidc_credential", False)
    monkeypatch.setattr(auth_util, "environment_credentials_uri", None)
    monkeypatch.setattr(auth_util, "environment_credentials_file", str(tmp_path / "none"))
    monkeypatch.setattr(auth_util, "environment_access_key_id", None)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", None)
    with pytest.raises(CloudError, match="no usable Alibaba Cloud credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID"):
        up(make_stack(emu, keys))
    assert emu.requests == []


# -- the emulator refuses what ECS refuses, and pages as ECS does -------------------------------------
def pages(emu: AlibabaEmulator, action: str) -> list[str]:
    return [params.get("PageNumber", "1") for params in emu.calls(action)]


def test_debian_image_is_found_beyond_the_first_pages(emu, keys):
    debian = [i for i in emu.images if i["ImageName"].startswith("debian_13_2_x64")]
    assert [emu.images.index(i) for i in debian] == [len(emu.images) - 2]  # after 110 other images
    up(make_stack(emu, keys))
    assert pages(emu, "DescribeImages") == ["1", "2", "3"]
    assert emu.calls("RunInstances")[0]["ImageId"] == debian[0]["ImageId"]
    # The API answers one page at a time: without PageNumber a client sees 10 images and no Debian.
    api = alibaba.Api(make_stack(emu, keys), FAST)
    body = api.call(api.ecs.describe_images, ecs_models.DescribeImagesRequest(region_id="cn-hangzhou",
                                                                              image_owner_alias="system"))
    assert (len(body["Images"]["Image"]), body["TotalCount"], body["PageNumber"]) == (10, len(emu.images), 1)
    assert not any(i["ImageName"].startswith("debian") for i in body["Images"]["Image"])


def test_page_size_beyond_the_actions_maximum_is_refused(emu, keys):
    from alibabacloud_vpc20160428 import models as vpc_models

    api = alibaba.Api(make_stack(emu, keys), FAST)
    with pytest.raises(alibaba.ApiError) as refused:
        api.call(api.vpc.describe_vpcs, vpc_models.DescribeVpcsRequest(region_id="cn-hangzhou", page_size=100))
    assert refused.value.code == "InvalidParameter.PageSize"
    body = api.call(api.ecs.describe_images, ecs_models.DescribeImagesRequest(region_id="cn-hangzhou", page_size=100))
    assert len(body["Images"]["Image"]) == 100


def test_destroy_pages_through_many_leftovers(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    # Left by earlier runs with this stack's tag: more than one page of the 50 the product asks for.
    for n in range(60):
        emu.add_foreign("vpc", id=f"vpc-leftover{n:02d}", name="ollastack-demo", cidr="192.168.0.0/16",
                        tags={"ollastack-stack": "demo"})
    removed = down(stack)
    assert emu.resource_count() == 0
    assert sum(r.startswith("vpc ") for r in removed) == 61
    assert "2" in pages(emu, "DescribeVpcs")


@pytest.mark.parametrize("category", ["cloud_essd", "cloud_auto", "cloud_efficiency", "cloud_ssd", "cloud"])
def test_known_disk_categories_are_accepted(emu, keys, category):
    up(make_stack(emu, keys, system_disk_category=category))
    (run,) = emu.calls("RunInstances")
    assert run["SystemDisk.Category"] == category
    assert (run["InstanceChargeType"], run["InternetChargeType"]) == ("PostPaid", "PayByTraffic")


def test_unknown_disk_category_is_refused_in_one_line(emu, keys):
    with pytest.raises(CloudError) as err:
        up(make_stack(emu, keys, system_disk_category="cloud_sdd"))
    message = str(err.value)
    assert message.startswith("Alibaba Cloud RunInstances failed: InvalidSystemDiskCategory.ValueNotSupported: ")
    assert "\n" not in message and emu.resources["instance"] == {}


@pytest.mark.parametrize("field,value,code", [
    ("instance_charge_type", "PayAsYouGo", "InvalidInstanceChargeType.ValueNotSupported"),
    ("internet_charge_type", "PayByHour", "InvalidInternetChargeType.ValueNotSupported"),
    ("instance_charge_type", "PrePaid", "MissingParameter.Period"),
])
def test_unknown_charge_types_are_refused(emu, keys, monkeypatch, field, value, code):
    original = ecs_models.RunInstancesRequest.__init__

    def broken(self, *args, **kwargs):
        original(self, *args, **{**kwargs, field: value})

    monkeypatch.setattr(ecs_models.RunInstancesRequest, "__init__", broken)
    with pytest.raises(alibaba.ApiError) as err:
        up(make_stack(emu, keys))
    assert err.value.code == code and emu.resources["instance"] == {}


def test_unknown_charge_type_in_zone_lookup_is_refused(emu, keys):
    api = alibaba.Api(make_stack(emu, keys), FAST)
    with pytest.raises(alibaba.ApiError) as err:
        api.call(api.ecs.describe_zones, ecs_models.DescribeZonesRequest(region_id="cn-hangzhou",
                                                                         instance_charge_type="Hourly"))
    assert err.value.code == "InvalidInstanceChargeType.ValueNotSupported"


# -- waits, races and destroy paths ------------------------------------------------------------------
def test_instance_never_running_times_out_naming_it(keys):
    with AlibabaEmulator(access_key_id=KEY_ID, access_key_secret=SECRET, instance_start_s=3600) as stuck:
        with pytest.raises(CloudError) as err:
            alibaba.create(make_stack(stuck, keys), StackState.load("demo", "alibaba"), Progress(stream=io.StringIO()),
                           alibaba.Timing(poll_s=0.01, backoff_ms=0, wait_s=0.3))
        (inst_id,) = stuck.resources["instance"]
    message = str(err.value)
    assert message.startswith(f"instance {inst_id} is still Pending after ") and "\n" not in message
    assert StackState.load("demo").find("instance", "ollastack-demo")["id"] == inst_id


def test_instance_without_public_address_times_out(emu, keys):
    def no_address(params):
        for inst in emu.resources["instance"].values():
            inst["bandwidth"] = 0

    emu.before("DescribeInstances", no_address, times=1000)
    with pytest.raises(CloudError, match=r"instance i-\w+ is still Running, waiting for its public address after"):
        alibaba.create(make_stack(emu, keys), StackState.load("demo", "alibaba"), Progress(stream=io.StringIO()),
                       alibaba.Timing(poll_s=0.01, backoff_ms=0, wait_s=0.3))


def test_instance_release_timeout_is_explained(keys):
    with AlibabaEmulator(access_key_id=KEY_ID, access_key_secret=SECRET, instance_delete_s=3600) as slow:
        stack = make_stack(slow, keys)
        up(stack)
        with pytest.raises(CloudError, match=r"instance i-\w+ is still being released after .*`ollastack down` again"):
            alibaba.destroy(stack, StackState.load("demo"), Progress(stream=io.StringIO()),
                            alibaba.Timing(poll_s=0.01, backoff_ms=0, wait_s=0.3))
        assert len(slow.resources["vpc"]) == 1        # nothing after the instance was attempted


def test_resource_deleted_meanwhile_counts_as_gone(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    (sg_id,) = emu.resources["security_group"]
    emu.before("DeleteSecurityGroup", lambda params: emu.resources["security_group"].pop(params["SecurityGroupId"]))
    removed = down(stack)
    assert [r.split()[0] for r in removed] == ["instance", "key_pair", "vswitch", "vpc"]
    assert [r["code"] for r in emu.requests if r["action"] == "DeleteSecurityGroup"] == ["InvalidSecurityGroupId.NotFound"]
    assert emu.resource_count() == 0 and StackState.load("demo").resources == []


def test_delete_refused_for_good_stops_and_keeps_the_record(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    emu.inject("DeleteVpc", "error", code="Forbidden.RAM")
    with pytest.raises(CloudError, match="DeleteVpc failed: Forbidden.RAM: .*AliyunVPCFullAccess") as err:
        down(stack)
    assert "\n" not in str(err.value)
    assert len(emu.resources["vpc"]) == 1 and [r["kind"] for r in StackState.load("demo").resources] == ["vpc"]
    assert [r.split()[0] for r in down(stack)] == ["vpc"]
    assert emu.resource_count() == 0


def test_dependency_still_going_away_is_waited_for(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    emu.inject("DeleteVSwitch", "error", times=2, code="DependencyViolation")
    assert [r.split()[0] for r in down(stack)] == ["instance", "key_pair", "security_group", "vswitch", "vpc"]
    assert [r["code"] for r in emu.requests if r["action"] == "DeleteVSwitch"] == ["DependencyViolation"] * 2 + [""]


def test_instance_vanishing_while_starting_is_explained(emu, keys):
    def vanish(params):
        if params.get("InstanceIds"):
            emu.resources["instance"].clear()

    emu.before("DescribeInstances", vanish, times=1000)
    with pytest.raises(CloudError, match=r"instance i-\w+ disappeared while starting"):
        up(make_stack(emu, keys))


def test_vpc_vanishing_while_created_is_explained(emu, keys):
    def vanish(params):
        if params.get("VpcId"):
            emu.resources["vpc"].clear()

    emu.before("DescribeVpcs", vanish, times=1000)
    with pytest.raises(CloudError, match="Vpc disappeared while being created"):
        up(make_stack(emu, keys))


def test_untagged_key_pair_with_our_name_is_not_adopted(emu, keys):
    emu.add_foreign("key_pair", name="ollastack-demo", body="ssh-ed25519 AAAA", fingerprint="00", tags={})
    with pytest.raises(CloudError, match="key pair named ollastack-demo exists but is not tagged"):
        up(make_stack(emu, keys))
    assert emu.calls("RunInstances") == []


def test_changed_instance_type_is_reported_not_applied(emu, keys):
    up(make_stack(emu, keys))
    out = io.StringIO()
    up(make_stack(emu, keys, instance_type="ecs.gn6i-c4g1.xlarge", zone="cn-hangzhou-j"), out)
    assert "is ecs.gn7i-c8g1.2xlarge, not ecs.gn6i-c4g1.xlarge: run `ollastack down` and `up`" in out.getvalue()
    assert len(emu.calls("RunInstances")) == 1


def test_default_endpoints_are_the_regions(emu, keys):
    api = alibaba.Api(make_stack(emu, keys, ecs_endpoint="", vpc_endpoint="", region="cn-beijing"), FAST)
    assert api.region == "cn-beijing"
    assert (api.ecs._endpoint, api.ecs._protocol) == ("ecs.cn-beijing.aliyuncs.com", "https")
    assert api.vpc._endpoint == "vpc.cn-beijing.aliyuncs.com"


# -- client tokens and key types ----------------------------------------------------------------------
def test_create_retried_after_a_lost_answer_makes_one_vpc(emu, keys):
    stack = make_stack(emu, keys)
    emu.inject("CreateVpc", "drop_after")          # the VPC is made, the answer never arrives
    with pytest.raises(CloudError):
        alibaba.create(stack, StackState.load("demo", "alibaba"), Progress(stream=io.StringIO()),
                       alibaba.Timing(poll_s=0, backoff_ms=0, wait_s=20, attempts=1))
    (vpc,) = emu.resources["vpc"].values()
    tags, vpc["tags"] = vpc["tags"], {}            # a tag look-up that does not see it yet
    up(stack)
    vpc["tags"] = tags
    first, second = [r["params"] for r in emu.requests if r["action"] == "CreateVpc"]
    assert first["ClientToken"] == second["ClientToken"]
    assert counts(emu)["vpc"] == 1 and StackState.load("demo").find("vpc", "ollastack-demo")["id"] == vpc["id"]
    down(stack)
    assert emu.resource_count() == 0


def test_every_create_carries_a_token_that_survives_a_resume_but_not_a_deletion(emu, keys):
    stack = make_stack(emu, keys)
    up(stack)
    actions = ("CreateVpc", "CreateVSwitch", "CreateSecurityGroup", "RunInstances")
    tokens = {action: emu.calls(action)[0]["ClientToken"] for action in actions}
    assert len(set(tokens.values())) == 4
    (old,) = emu.resources["instance"]
    del emu.resources["instance"][old]             # deleted in the console; the state still records it
    up(stack)
    (new,) = emu.resources["instance"]
    assert new != old and emu.calls("RunInstances")[1]["ClientToken"] != tokens["RunInstances"]
    down(stack)
    up(stack)
    assert {emu.calls(a)[-1]["ClientToken"] for a in actions[:3]}.isdisjoint(tokens.values())
    assert counts(emu) == {"vpc": 1, "vswitch": 1, "security_group": 1, "key_pair": 1, "instance": 1}


def test_emulator_refuses_ed25519_keys_like_the_real_api(emu):
    body = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    client = EcsClient(Config(access_key_id=KEY_ID, access_key_secret=SECRET, region_id="cn-hangzhou",
                              endpoint=emu.ecs_url.removeprefix("http://"), protocol="http"))
    with pytest.raises(ClientException) as raw:
        client.import_key_pair(ecs_models.ImportKeyPairRequest(region_id="cn-hangzhou", key_pair_name="k",
                                                               public_key_body=body))
    assert raw.value.code == "InvalidPublicKeyBody.Malformed"


def test_ed25519_key_is_refused_at_validation_before_any_request(emu, tmp_path, capsys):
    from ollastack.cli import main

    public = tmp_path / "id_ed25519.pub"
    public.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" me@laptop\n")
    (tmp_path / "id_ed25519").write_text("unused\n")
    config = tmp_path / "stack.toml"
    config.write_text(f'[stack]\nname = "demo"\nprovider = "alibaba"\n[access]\nssh_public_key = "{public}"\n'
                      f'ssh_private_key = "{tmp_path / "id_ed25519"}"\n'
                      f'[alibaba]\necs_endpoint = "{emu.ecs_url}"\nvpc_endpoint = "{emu.vpc_url}"\n')
    for command in ("validate", "up"):
        assert main(["--config", str(config), command]) == 2
        err = capsys.readouterr().err
        assert "access.ssh_public_key" in err and "ssh-ed25519" in err and "ssh-keygen -t rsa" in err
        assert "Traceback" not in err
    assert emu.requests == []
