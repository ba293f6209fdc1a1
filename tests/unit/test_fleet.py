"""A fleet without hosts: its settings' validation, the inventory's roles and groups, the gateway's
nginx upstream as rendered, and doctor's per-backend checks from the gateway's answers."""

from __future__ import annotations

import re
from types import SimpleNamespace

import jinja2
import pytest
from pyinfra.api.exceptions import DeployError

from ollastack import doctor, fleet, lab, state
from ollastack.config import ConfigError, parse_stack
from ollastack.deploy.nginx import upstream_arguments
from ollastack.host import Host
from ollastack.certs import issue_for_inventory
from ollastack.inventory import provider_inventory, pyinfra_hosts
from tests.support.repo import REPO


@pytest.fixture
def make(tmp_path, monkeypatch):
    """A stack-description factory with this test's own state, lab directory and key pair."""
    monkeypatch.setenv("OLLASTACK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OLLASTACK_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(state, "_held_locks", {})
    public, private = tmp_path / "id.pub", tmp_path / "id"
    public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 test\n")
    private.write_text("key\n")

    def stack(provider: str = "lab", **sections) -> dict:
        return {"stack": {"name": "fleetunit", "provider": provider},
                "access": {"ssh_public_key": str(public), "ssh_private_key": str(private)},
                "openwebui": {"install": "none"}, **sections}

    stack.dir = tmp_path
    return stack


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        parse_stack(data)
    return "; ".join(err.value.problems)


def test_a_single_host_stack_has_no_fleet(make):
    stack = parse_stack(make())
    assert stack.fleet.backends == 0
    assert fleet.split(stack, [Host("a", "10.213.0.10")]) == (None, [])
    assert fleet.host_settings(stack, [Host("a", "10.213.0.10")]) == {}


@pytest.mark.parametrize("sections,field", [
    ({"fleet": {"backends": 8}}, "fleet.backends"),
    ({"fleet": {"backends": -1}}, "fleet.backends"),
    ({"fleet": {"backends": 2}, "lab": {"hosts": 3}}, "lab.hosts"),
    ({"fleet": {"backends": 2}, "ollama": {"host": "0.0.0.0:11434", "listen_beyond_loopback": True}}, "ollama.host"),
    ({"fleet": {"backends": 1, "connect_timeout": 0}}, "fleet.connect_timeout"),
])
def test_bad_fleet_settings_name_the_field(make, sections, field):
    assert field in problems(make(**sections))


def test_a_provider_that_makes_no_backends_refuses_a_fleet(make):
    text = problems(make("static", static={"hosts": ["192.0.2.10"]}, fleet={"backends": 1}))
    assert "fleet.backends" in text and "static" in text


def _lab_hosts(monkeypatch, count: int) -> None:
    monkeypatch.setattr(lab, "list_hosts", lambda name: [
        {"name": f"{name}-{i}", "address": f"10.213.0.{9 + i}", "user": "root", "running": True}
        for i in range(1, count + 1)])


def _use(make, monkeypatch, **sections) -> None:
    config = make.dir / "stack.toml"
    lines = []
    for section, values in make(**sections).items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v!r}".replace("'", '"') for k, v in values.items()]
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("OLLASTACK_CONFIG", str(config))


def test_the_inventory_gives_each_host_its_role(make, monkeypatch):
    _lab_hosts(monkeypatch, 3)
    _use(make, monkeypatch, fleet={"backends": 2})
    entries = provider_inventory("lab")
    data = {address: d for address, d in entries}
    gateway, first, second = (data[f"10.213.0.{n}"] for n in (10, 11, 12))
    assert gateway["ollastack_fleet_role"] == "gateway"
    assert gateway["ollastack_fleet_upstreams"] == ["10.213.0.11:11434", "10.213.0.12:11434"]
    # The gateway's nginx takes Ollama's address on its loopback, where Open WebUI looks.
    assert gateway["ollastack_ollama_host"] == "127.0.0.1:11434"
    for address, backend in (("10.213.0.11", first), ("10.213.0.12", second)):
        assert backend["ollastack_fleet_role"] == "backend"
        assert backend["ollastack_fleet_gateway"] == "10.213.0.10"
        assert backend["ollastack_ollama_host"] == f"{address}:11434"
        assert backend["ollastack_ollama_models"] == ["llama3.2:1b"]
    assert fleet.groups(entries) == (["10.213.0.10"], ["10.213.0.11", "10.213.0.12"])


def test_a_single_host_is_in_both_groups(make, monkeypatch):
    _lab_hosts(monkeypatch, 1)
    _use(make, monkeypatch)
    entries = provider_inventory("lab")
    # Its role stays the deploys' default (""): the inventory of a single host is what it was.
    assert "ollastack_fleet_role" not in entries[0][1]
    assert fleet.groups(entries) == (["10.213.0.10"], ["10.213.0.10"])


def test_a_missing_fleet_host_stops_the_inventory(make, monkeypatch):
    # A stopped gateway must not make the first backend a public gateway.
    _lab_hosts(monkeypatch, 2)
    _use(make, monkeypatch, fleet={"backends": 2})
    with pytest.raises(fleet.FleetError, match="needs a gateway and 2 backends running"):
        provider_inventory("lab")


def test_the_lab_inventory_file_defines_the_groups():
    text = (REPO / "inventories" / "lab.py").read_text()
    assert re.search(r"^gateway, ollama = groups\(lab\)$", text, re.MULTILINE)


def _site(**upstream) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO / "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    return env.get_template("nginx-site.conf.j2").render(
        server_names="10.213.0.10", reject_handshake=False, url_host="10.213.0.10", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256",
        auth_rate="10r/m", auth_burst=20, tls_dir="/etc/ollastack/tls", upstream_port=8080, acme_root="/var/www/acme",
        http2_directive=False, **upstream)


def _data(role: str, upstreams: list[str]) -> SimpleNamespace:
    return SimpleNamespace(ollastack_fleet_role=role, ollastack_fleet_upstreams=upstreams, ollastack_name="g",
                           ollastack_ollama_host="127.0.0.1:11434", ollastack_fleet_max_fails=1,
                           ollastack_fleet_fail_timeout=10, ollastack_fleet_connect_timeout=3, ollastack_fleet_groups=[])


def _block(text: str, opening: str) -> list[str]:
    """The directives of the block starting at ``opening`` (to its closing brace), stripped."""
    lines = text[text.index(opening):].splitlines()[1:]
    return [line.strip() for line in lines[:next(i for i, line in enumerate(lines) if line.startswith("}"))]]


def test_the_gateway_balances_the_backends_on_loopback():
    text = _site(**upstream_arguments(_data("gateway", ["10.213.0.11:11434", "10.213.0.12:11434"])))
    assert _block(text, "upstream ollastack_ollama {") == [
        "least_conn;", "server 10.213.0.11:11434 max_fails=1 fail_timeout=10s;",
        "server 10.213.0.12:11434 max_fails=1 fail_timeout=10s;", "keepalive 16;"]
    server = _block(text, "server {\n    listen 127.0.0.1:11434;")
    assert server[:2] == ["listen 127.0.0.1:11434;", "server_tokens off;"]
    # Only the loopback listener is new: nothing else listens beyond 22/80/443.
    listens = sorted(set(re.findall(r"^\s*listen (\S+?)[ ;]", text, re.MULTILINE)))
    assert listens == ["127.0.0.1:11434", "443", "80", "[::]:443", "[::]:80"]
    location = _block(text, "    location / {\n        proxy_pass http://ollastack_ollama;")
    for directive in ("proxy_next_upstream error timeout;", "proxy_next_upstream_tries 2;", "proxy_connect_timeout 3s;",
                      "proxy_buffering off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";'):
        assert directive in location


def test_a_single_host_site_has_no_upstream():
    single = upstream_arguments(_data("", []))
    assert single["upstreams"] == [] and "upstream" not in _site(**single)
    # A backend's data never makes an upstream, whatever it carries.
    assert upstream_arguments(_data("backend", ["10.213.0.11:11434"]))["upstreams"] == []


@pytest.mark.parametrize("bad", ["10.213.0.11", "10.213.0.11:11434; include /etc/passwd", "backend.example:11434"])
def test_a_backend_address_that_is_not_address_and_port_is_refused(bad):
    with pytest.raises(DeployError, match="fleet backend"):
        upstream_arguments(_data("gateway", [bad]))


def test_the_probe_answers_become_one_report_per_backend():
    backends = [Host("f-2", "10.213.0.11"), Host("f-3", "10.213.0.12")]
    output = '10.213.0.11:11434 {"models": [{"name": "llama3.2:1b"}]}\n10.213.0.12:11434 \n'
    assert fleet.parse_probe(output, backends, ["10.213.0.11:11434", "10.213.0.12:11434"]) == [
        {"name": "f-2", "address": "10.213.0.11:11434", "reachable": True, "models": ["llama3.2:1b"], "running": []},
        {"name": "f-3", "address": "10.213.0.12:11434", "reachable": False, "models": [], "running": []}]


def test_doctor_names_the_dead_backend_and_a_missing_model(make, monkeypatch):
    stack = parse_stack(make(fleet={"backends": 3}))
    hosts = [Host(f"f-{i}", f"10.213.0.{9 + i}") for i in range(1, 5)]
    monkeypatch.setattr(fleet, "probe_backends", lambda stack, gateway, backends: [
        {"name": "f-2", "address": "10.213.0.11:11434", "reachable": True, "models": ["llama3.2:1b"]},
        {"name": "f-3", "address": "10.213.0.12:11434", "reachable": False, "models": []},
        {"name": "f-4", "address": "10.213.0.13:11434", "reachable": True, "models": []}])
    checks = {c.name: c for c in doctor.check_backends(stack, hosts)}
    assert checks["backend f-2"].status == "ok"
    assert checks["backend f-3"].status == "fail" and "10.213.0.12:11434" in checks["backend f-3"].detail
    assert checks["backend f-4"].status == "fail" and "llama3.2:1b" in checks["backend f-4"].detail
    [missing] = doctor.check_backends(stack, hosts[:3])
    assert missing.name == "fleet" and missing.status == "fail"


def test_the_site_plans_each_role_s_components_only(make, tmp_path, monkeypatch):
    """deploy/site.py on pyinfra's @fake connector: Ollama only on the backends, the web parts only on the gateway."""
    from tests.unit.test_plan_time import ANSWERS, plan_site

    monkeypatch.setenv("OLLASTACK_SSL_DIR", str(tmp_path / "ssl"))
    data = make(fleet={"backends": 2})
    data["access"]["admin_cidrs"] = ["192.0.2.1/32"]
    stack = parse_stack(data)
    hosts = [Host(f"fleetunit-{i}", f"192.0.2.{9 + i}") for i in (1, 2, 3)]
    entries = pyinfra_hosts(stack, hosts)
    issue_for_inventory(entries)
    for _, host_data in entries:
        host_data.update(fake_responses=ANSWERS, fake_delay=0, fake_delay_jitter=0)
    components = {}
    # One host per plan: in API mode pyinfra tells operations apart by their count per host, so a gateway's
    # n-th operation would share its name with a backend's n-th in a plan of all three.
    for host, (_, host_data) in zip(hosts, entries):
        state = plan_site([(f"@fake/{host.name}", host_data)])
        [planned] = state.inventory
        components[host.name] = {list(state.op_meta[op].names)[0].split(" | ")[0] for op in state.ops[planned]}
    gateway, *backends = (components[h.name] for h in hosts)
    assert {"nginx", "TLS", "Firewall"} <= gateway and "Ollama" not in gateway
    for backend in backends:
        assert {"Ollama", "Firewall"} <= backend and not backend & {"nginx", "TLS", "Open WebUI"}


def test_doctor_checks_each_fleet_host_for_its_role(make):
    stack = parse_stack(make(fleet={"backends": 2}))
    assert doctor.fleet_view(stack, None) is stack
    view = doctor.fleet_view(stack, "10.213.0.11:11434")
    assert (view.ollama.host, view.openwebui.install) == ("10.213.0.11:11434", "none")
    # The gateway's Ollama port is nginx's upstream, not an Ollama service; a backend runs no web parts.
    assert doctor.role_skips(stack, gateway=True) == {"service ollama", "port 11434 (Ollama's API)"}
    assert doctor.role_skips(view, gateway=False) == {"service nginx", "port 80 (HTTP)", "port 443 (HTTPS)",
                                                      f"port {stack.openwebui.port} (Open WebUI)"}
    probe = {"services": "ollastack-firewall active\nollama active\nnginx inactive",
             "tags": '{"models": [{"name": "llama3.2:1b", "size": 1}]}'}
    names = {c.name: c.status for c in doctor.check_services(view, probe) + doctor.check_ollama_api(view, probe)
             if c.name not in doctor.role_skips(view, gateway=False)}
    assert names["ollama api"] == "ok" and "service nginx" not in names


def test_a_missing_fleet_host_is_named_with_its_role(make):
    stack = parse_stack(make(fleet={"backends": 2}))
    with pytest.raises(fleet.FleetError, match=r"missing: fleetunit-1 \(the gateway\):"):
        fleet.split(stack, [Host("fleetunit-2", "10.213.0.11"), Host("fleetunit-3", "10.213.0.12")])
    with pytest.raises(fleet.FleetError, match=r"missing: fleetunit-3 \(backend 2\)"):
        fleet.split(stack, [Host("fleetunit-1", "10.213.0.10"), Host("fleetunit-2", "10.213.0.11")])
    # Shrunk from 3 backends with the gateway stopped: three hosts, and still no backend taken for the gateway.
    with pytest.raises(fleet.FleetError, match=r"gateway is not running; missing: fleetunit-1 \(the gateway\):"):
        fleet.split(stack, [Host(f"fleetunit-{i}", f"10.213.0.{9 + i}") for i in (2, 3, 4)])


def test_backends_beyond_the_fleet_are_its_surplus_and_left_out_of_the_inventory(make, monkeypatch):
    _lab_hosts(monkeypatch, 5)
    _use(make, monkeypatch, fleet={"backends": 2})
    stack = parse_stack(make(fleet={"backends": 2}))
    hosts = [Host(f"fleetunit-{i}", f"10.213.0.{9 + i}") for i in range(1, 6)]
    gateway, backends = fleet.split(stack, hosts)
    assert (gateway, backends) == (hosts[0], hosts[1:3])
    # Drained and removed the highest index first.
    assert fleet.surplus(stack, hosts) == [hosts[4], hosts[3]]
    assert fleet.surplus(stack, hosts[:3]) == [] and fleet.surplus(parse_stack(make()), hosts) == []
    entries = dict(provider_inventory("lab"))
    assert sorted(entries) == ["10.213.0.10", "10.213.0.11", "10.213.0.12"]
    assert entries["10.213.0.10"]["ollastack_fleet_upstreams"] == ["10.213.0.11:11434", "10.213.0.12:11434"]


def test_drain_waits_until_the_gateway_holds_no_connection_to_the_removed_backends(make, monkeypatch):
    stack = parse_stack(make(fleet={"backends": 1}))
    gateway, removed = Host("fleetunit-1", "10.213.0.10"), [Host("fleetunit-3", "10.213.0.12")]
    answers = iter([{"fleetunit-3": 2}, {"fleetunit-3": 2}, {"fleetunit-3": 1}, {"fleetunit-3": 0}])
    monkeypatch.setattr(fleet, "open_connections", lambda s, g, b: next(answers))
    monkeypatch.setattr(fleet, "DRAIN_POLL_S", 0)
    lines: list[str] = []
    fleet.drain(stack, gateway, removed, lines.append)
    assert lines == ["waiting for 2 open connection(s) from the gateway to fleetunit-3 to end",
                     "waiting for 1 open connection(s) from the gateway to fleetunit-3 to end",
                     "fleetunit-3: drained from the gateway's upstream"]
    # Past the bound it says so and goes on: nginx sends nothing new there, a hung stream must not stop `up`.
    monkeypatch.setattr(fleet, "open_connections", lambda s, g, b: {"fleetunit-3": 1})
    lines.clear()
    fleet.drain(stack, gateway, removed, lines.append, wait_s=0)
    assert lines == ["fleetunit-3: still streaming after 0s: removed anyway"]


def test_doctor_leaves_a_shrinks_surplus_out_of_the_backends_and_names_it(make, monkeypatch):
    """An interrupted shrink (3 -> 2): the third backend still runs; it is not checked as a backend (its index has
    no placement) but named, with what finishes the shrink."""
    stack = parse_stack(make(fleet={"backends": 2}))
    hosts = [Host(f"f-{i}", f"10.213.0.{9 + i}") for i in range(1, 5)]
    checked = []
    monkeypatch.setattr(doctor.providers, "get", lambda name: type("P", (), {"hosts": staticmethod(lambda s: hosts)}))
    monkeypatch.setattr(doctor, "check_fleet_host", lambda stack, host, address, placed: checked.append(host.name) or
                        {"name": host.name, "address": host.address, "checks": []})
    monkeypatch.setattr(doctor, "check_backends", lambda stack, listed: [doctor.Check("backend", "ok", str(len(listed)))])
    report = doctor.run(stack)
    assert sorted(checked) == ["f-1", "f-2", "f-3"]
    first = {c["name"]: c for c in report["hosts"][0]["checks"]}
    assert first["backend"]["detail"] == "3"
    assert first["fleet"]["status"] == "warn" and first["fleet"]["detail"].startswith("f-4: beyond fleet.backends = 2")
    assert "`ollastack up`" in first["fleet"]["fix"] and report["warnings"] == 1
