"""TLS to controllers, the Floodlight profile and the operator CLI, over real HTTP(S) on 127.0.0.1.

Every scenario runs a quantum-server process (SQLite) against controller
simulator processes:

* TLS: a test CA and certificates made here with ``cryptography``. A
  controller whose certificate is signed by another CA, self-signed, or made
  for another address is refused before any request reaches it (500
  RemoteRestError, store unchanged, the TLS error in ``/admin/pool``), the
  pool fails over to a trusted one, a pinned certificate is trusted without a
  CA file (and *only* that certificate), ``no_ssl_validation`` accepts
  anything, and the Basic auth secret never reaches the log.
* Floodlight: ``controller_profile = auto`` detects it, and Floodlight's own
  network list follows every change exactly; the same steps with the
  ``bigswitch`` profile forced corrupt it (a subnet id becomes a network
  guid); a restarted (empty) Floodlight is replayed by an on-demand sync.
* ``restproxy-manage pool-status | sync | check`` against the running server.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from controller_sim.testing import SimProcess
from restproxy_testing.support import ServerProcess, wait_for

TENANT = "t-tls"
AUTH = ("operator", "s3cret-Pa55")
AUTH_TOKEN = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()


# -- a small PKI ----------------------------------------------------------------------------------


class PKI:
    """Test CAs and leaf certificates written as PEM files into one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._cas: dict[str, tuple[Any, Any]] = {}

    def _write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def ca(self, name: str) -> str:
        """A self-signed CA; returns its certificate's path."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"restproxy test CA {name}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        self._cas[name] = (key, cert)
        return self._write(f"ca-{name}.pem", cert.public_bytes(serialization.Encoding.PEM))

    def leaf(self, name: str, issuer: str | None, ip: str = "127.0.0.1", dns: str | None = None) -> tuple[str, str]:
        """A server certificate for ``ip`` (IP SAN; or only ``dns``), signed by CA ``issuer`` or
        self-signed when ``issuer`` is None; returns (key path, certificate path)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns or ip)])
        if issuer is None:
            signing_key, issuer_name, issuer_public = key, subject, key.public_key()
        else:
            ca_key, ca_cert = self._cas[issuer]
            signing_key, issuer_name, issuer_public = ca_key, ca_cert.subject, ca_key.public_key()
        names: list[x509.GeneralName] = [x509.DNSName(dns)] if dns else [x509.IPAddress(ipaddress.ip_address(ip))]
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False)
            .sign(signing_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return self._write(f"{name}-key.pem", key_pem), self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki() -> Iterator[dict[str, Any]]:
    """CA "a" (the trusted one) and "b", and server certificates: good (a, 127.0.0.1), other_ca (b),
    self_signed, wrong_ip (a, for 127.0.0.2) and wrong_name (a, a DNS name only)."""
    with tempfile.TemporaryDirectory(prefix="restproxy-pki-") as tmp:
        p = PKI(tmp)
        files: dict[str, Any] = {"dir": tmp, "ca": p.ca("a"), "other_ca": p.ca("b")}
        files["good"] = p.leaf("good", "a")
        files["good2"] = p.leaf("good2", "a")
        files["other_ca_signed"] = p.leaf("other-ca-signed", "b")
        files["self_signed"] = p.leaf("self-signed", None)
        files["wrong_ip"] = p.leaf("wrong-ip", "a", ip="127.0.0.2")
        files["wrong_name"] = p.leaf("wrong-name", "a", dns="controller.example.com")
        yield files


def tls_sim(pki: dict[str, Any], which: str, **kwargs: Any) -> SimProcess:
    key, cert = pki[which]
    return SimProcess(tls_key=key, tls_cert=cert, cafile=pki["ca"] if which in ("good", "good2") else None, **kwargs)


# -- plumbing -------------------------------------------------------------------------------------


@contextmanager
def running(sims: list[SimProcess], config: str | Callable[[list[SimProcess]], str] = "", timeout: int = 3) -> Iterator[ServerProcess]:
    """Start ``sims`` (in order), then a server (SQLite) whose pool lists them in that order; ``config``
    may be a callable of the started sims (for settings that need their ports)."""
    with ExitStack() as stack:
        for sim in sims:
            sim.start()
            stack.callback(sim.stop)
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        extra = config(sims) if callable(config) else config
        servers = ",".join(s.address for s in sims)
        text = f"[RESTPROXY]\nservers = {servers}\nserver_timeout = {timeout}\nserver_probe_interval = 0\n{extra}"
        server = ServerProcess(f"sqlite:///{tmp}/q.sqlite", config_text=text).start()
        stack.callback(server.stop)
        yield server


def manage(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server_plugin.manage", *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


def check(server: ServerProcess, sim: SimProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    """``restproxy-manage check`` of one controller, with the server's config (its TLS settings)."""
    return manage("-c", server.config_path, "--sql-connection", server.db_url, "check", "--servers", sim.address, *extra)


def create(server: ServerProcess, kind: str, **fields: Any) -> dict[str, Any]:
    status, body = server.request("POST", f"/v2.0/{kind}s", {kind: dict({"tenant_id": TENANT}, **fields)})
    assert status == 201, body
    return body[kind]


def update(server: ServerProcess, kind: str, obj_id: str, **fields: Any) -> dict[str, Any]:
    status, body = server.request("PUT", f"/v2.0/{kind}s/{obj_id}", {kind: fields})
    assert status == 200, body
    return body[kind]


def delete(server: ServerProcess, kind: str, obj_id: str) -> None:
    status, body = server.request("DELETE", f"/v2.0/{kind}s/{obj_id}")
    assert status == 204, body


def listing(server: ServerProcess) -> dict[str, list[dict[str, Any]]]:
    return {c: sorted(server.request("GET", f"/v2.0/{c}")[1][c], key=lambda x: x["id"]) for c in ("networks", "subnets", "ports")}


def pool_status(server: ServerProcess) -> dict[str, Any]:
    status, body = server.request("GET", "/admin/pool")
    assert status == 200, body
    return body


def bsn_networks(sim: SimProcess) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in sim.state()["networks"]}


def assert_no_secret_logged(server: ServerProcess) -> None:
    log = server.log()
    assert log, "the server wrote no log at all"
    assert AUTH[1] not in log and AUTH_TOKEN not in log


# -- TLS ------------------------------------------------------------------------------------------


TLS_ERROR = re.compile(r"certificate verify failed|VerificationError|Mismatch")


def test_untrusted_certificates_are_refused_and_the_pool_fails_over_to_a_trusted_one(pki: dict[str, Any]) -> None:
    bad = {which: tls_sim(pki, which, auth=AUTH) for which in ("other_ca_signed", "self_signed", "wrong_ip", "wrong_name")}
    good = tls_sim(pki, "good", auth=AUTH)
    config = f"server_ssl = true\nssl_ca_file = {pki['ca']}\nserver_auth = {AUTH[0]}:{AUTH[1]}\ncontroller_profile = bigswitch\n"
    with running([*bad.values(), good], config) as server:
        # Only the trusted controller could answer, and it fails: the call is refused, nothing is stored.
        good.fault(action="status", status=500)
        status, body = server.request("POST", "/v2.0/networks", {"network": {"name": "refused", "tenant_id": TENANT}})
        assert status == 500 and body["NeutronError"]["type"] == "RemoteRestError", body
        assert TLS_ERROR.search(body["NeutronError"]["message"]), body  # the first server's reason
        assert listing(server) == {"networks": [], "subnets": [], "ports": []}
        servers = {s["server"]: s for s in pool_status(server)["servers"]}
        for which, sim in bad.items():
            entry = servers[sim.address]
            assert entry["state"] == "failed" and not entry["active"], (which, entry)
            assert entry["last_error"].startswith("0 ") and TLS_ERROR.search(entry["last_error"]), (which, entry)
        assert servers[good.address]["last_error"] == "500 Internal Server Error"
        # The refused controllers never saw a request: the handshake was refused by our side.
        for which, sim in bad.items():
            assert sim.requests() == [], which
        good.clear_faults()

        # With the trusted controller back, everything is mirrored to it over HTTPS.
        net = create(server, "network", name="over-tls")
        subnet = create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.20.0.0/24")
        port = create(server, "port", network_id=net["id"], device_id="vm-tls")
        controller_net = wait_for("the network on the trusted controller", lambda: bsn_networks(good).get(net["id"]))
        assert controller_net["gateway"] == subnet["gateway_ip"] == "10.20.0.1"
        assert [p["attachment"] for p in controller_net["ports"]] == [{"id": "vm-tls", "mac": port["mac_address"]}]
        mutations = [r for r in good.requests() if r["method"] != "GET"]
        assert mutations and all(r["headers"]["authorization"] == f"Basic {AUTH_TOKEN}" for r in mutations)
        status = pool_status(server)
        active = [s["server"] for s in status["servers"] if s["active"]]
        assert active == [good.address]
        for which, sim in bad.items():
            assert sim.requests() == [], which
            assert sim.state()["counts"]["networks"] == 0
        # restproxy-manage check reads the controllers with the same trust as the pool.
        wait_for("the sync after the refused call", lambda: pool_status(server)["sync"]["completed"] >= 1)
        result = check(server, good)
        assert result.returncode == 0, result.stdout + result.stderr
        result = check(server, bad["other_ca_signed"])
        assert result.returncode == 2 and "certificate verify failed" in result.stdout, result.stdout + result.stderr
        assert_no_secret_logged(server)


def test_a_pinned_certificate_is_trusted_without_a_ca_file_and_only_that_one(pki: dict[str, Any]) -> None:
    self_signed = tls_sim(pki, "self_signed")
    ca_signed = tls_sim(pki, "good")
    wrongly_pinned = tls_sim(pki, "good2")  # a valid certificate of CA "a", but not the pinned one
    pins = os.path.join(pki["dir"], "pins")

    def pin(sims: list[SimProcess]) -> str:
        os.makedirs(pins, exist_ok=True)
        for sim, which in zip(sims, ("good", "self_signed", "good"), strict=True):
            with open(pki[which][1], "rb") as src, open(os.path.join(pins, f"127.0.0.1_{sim.port}.pem"), "wb") as dst:
                dst.write(src.read())
        return f"server_ssl = true\nssl_host_certs_dir = {pins}\nserver_auth = {AUTH[0]}:{AUTH[1]}\ncontroller_profile = bigswitch\n"

    with running([wrongly_pinned, self_signed, ca_signed], pin) as server:
        net = create(server, "network", name="pinned")
        assert net["id"] in bsn_networks(self_signed)
        servers = {s["server"]: s for s in pool_status(server)["servers"]}
        assert servers[wrongly_pinned.address]["state"] == "failed"
        assert TLS_ERROR.search(servers[wrongly_pinned.address]["last_error"])
        assert wrongly_pinned.requests() == []
        assert servers[self_signed.address]["active"]
        assert check(server, self_signed).returncode == 0
        result = check(server, wrongly_pinned)
        assert result.returncode == 2 and "certificate verify failed" in result.stdout, result.stdout + result.stderr
        # A pinned certificate that a CA signed is trusted as well, with no CA file either.
        self_signed.fault(action="status", status=500)
        net2 = create(server, "network", name="pinned-ca-signed")
        assert net2["id"] in bsn_networks(ca_signed), pool_status(server)
        assert_no_secret_logged(server)


def test_no_ssl_validation_accepts_any_certificate(pki: dict[str, Any]) -> None:
    sim = tls_sim(pki, "other_ca_signed", auth=AUTH)
    config = f"server_ssl = true\nno_ssl_validation = true\nserver_auth = {AUTH[0]}:{AUTH[1]}\ncontroller_profile = bigswitch\n"
    with running([sim], config) as server:
        net = create(server, "network", name="unvalidated")
        assert list(bsn_networks(sim)) == [net["id"]]
        result = check(server, sim)
        assert result.returncode == 0, result.stdout + result.stderr
        assert all(r["headers"]["authorization"] == f"Basic {AUTH_TOKEN}" for r in sim.requests())
        assert_no_secret_logged(server)


# -- Floodlight -----------------------------------------------------------------------------------


def fl_list(sim: SimProcess) -> list[dict[str, Any]]:
    """Floodlight's own view: ``GET .../tenants/x/networks`` (every network, whatever the tenant)."""
    status, body = sim.controller("GET", "tenants/x/networks")
    assert status == 200, body
    return sorted(({**n, "portMac": sorted(n["portMac"], key=lambda pm: pm["port"])} for n in body), key=lambda n: n["guid"])


def fl_expected(server: ServerProcess) -> list[dict[str, Any]]:
    """What Floodlight must hold, computed from the API: guid, name (or the id), the first subnet
    gateway (when IPv4), and the MAC (upper case) of each port with a device."""
    data = listing(server)
    networks = []
    for net in data["networks"]:
        subnets = [s for s in data["subnets"] if s["network_id"] == net["id"]]
        gateway = next((s["gateway_ip"] for s in sorted(subnets, key=lambda s: net["subnets"].index(s["id"])) if s["gateway_ip"]), None)
        if gateway is not None and ":" in gateway:
            gateway = None  # Floodlight keeps IPv4 gateways only
        ports = [p for p in data["ports"] if p["network_id"] == net["id"] and p["device_id"]]
        port_macs = sorted(({"port": p["id"], "mac": p["mac_address"].upper()} for p in ports), key=lambda pm: pm["port"])
        networks.append({"name": net["name"] or net["id"], "guid": net["id"], "gateway": gateway, "portMac": port_macs})
    return sorted(networks, key=lambda n: n["guid"])


def assert_floodlight_consistent(server: ServerProcess, sim: SimProcess) -> None:
    assert fl_list(sim) == fl_expected(server)
    result = check(server, sim, "--profile", "floodlight")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "consistent with the store" in result.stdout


def admin_sync_wait(server: ServerProcess) -> list[dict[str, Any]]:
    """``POST /admin/sync?wait=1``: the NDJSON lines it streams."""
    import urllib.request

    req = urllib.request.Request(server.url + "/admin/sync?wait=1", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/x-ndjson"
        return [json.loads(line) for line in resp]


def test_floodlight_is_detected_and_its_view_follows_every_change() -> None:
    sim = SimProcess(profile="floodlight")
    with running([sim]) as server:
        wait_for("profile detection", lambda: pool_status(server)["profile"] == "floodlight")
        net_a = create(server, "network", name="fl-a")
        pools = [{"start": "10.30.0.10", "end": "10.30.0.200"}]
        sub_a = create(server, "subnet", network_id=net_a["id"], ip_version=4, cidr="10.30.0.0/24", allocation_pools=pools)
        net_b = create(server, "network", name="fl-b")
        sub_b = create(server, "subnet", network_id=net_b["id"], ip_version=4, cidr="10.31.0.0/24", gateway_ip=None)
        net_c = create(server, "network")  # no name: Floodlight gets the id as its name
        net_d = create(server, "network", name="fl-a")  # the same name as net_a
        sub_d = create(server, "subnet", network_id=net_d["id"], ip_version=4, cidr="10.32.0.0/24")
        p1 = create(server, "port", network_id=net_a["id"], device_id="vm-1")
        p2 = create(server, "port", network_id=net_a["id"], device_id="vm-2")
        p3 = create(server, "port", network_id=net_a["id"])
        p4 = create(server, "port", network_id=net_b["id"], device_id="vm-4")
        view = {n["guid"]: n for n in fl_list(sim)}
        assert set(view) == {net_a["id"], net_b["id"], net_c["id"], net_d["id"]}  # no subnet id ever became a network
        assert view[net_a["id"]]["gateway"] == sub_a["gateway_ip"] == "10.30.0.1"
        assert view[net_b["id"]]["gateway"] is None and view[net_c["id"]]["name"] == net_c["id"]
        assert {pm["port"]: pm["mac"] for pm in view[net_a["id"]]["portMac"]} == {
            p1["id"]: p1["mac_address"].upper(),
            p2["id"]: p2["mac_address"].upper(),
        }
        assert all(pm["mac"] == pm["mac"].upper() and pm["mac"] != pm["mac"].lower() for pm in view[net_a["id"]]["portMac"])
        assert_floodlight_consistent(server, sim)

        # Updates: rename, new gateway, plug, move to another device, unplug.
        update(server, "network", net_a["id"], name="fl-a-renamed")
        update(server, "subnet", sub_a["id"], gateway_ip="10.30.0.254")
        update(server, "port", p3["id"], device_id="vm-3")
        update(server, "port", p1["id"], device_id="vm-1b")
        update(server, "port", p2["id"], device_id="")
        view = {n["guid"]: n for n in fl_list(sim)}
        assert view[net_a["id"]]["name"] == "fl-a-renamed" and view[net_a["id"]]["gateway"] == "10.30.0.254"
        assert {pm["port"] for pm in view[net_a["id"]]["portMac"]} == {p1["id"], p3["id"]}
        assert_floodlight_consistent(server, sim)

        # Deletes: an attached port, subnets without and with a gateway, networks (one whose name another has).
        delete(server, "port", p4["id"])
        delete(server, "subnet", sub_b["id"])
        delete(server, "network", net_b["id"])
        delete(server, "subnet", sub_d["id"])
        assert {n["guid"]: n["gateway"] for n in fl_list(sim)}[net_d["id"]] is None  # the gateway is gone with its subnet
        # A gateway cleared on a network with attachments: Floodlight drops the gateway and keeps the attachments.
        update(server, "subnet", sub_a["id"], gateway_ip=None)
        view = {n["guid"]: n for n in fl_list(sim)}
        assert view[net_a["id"]]["gateway"] is None
        assert {pm["port"] for pm in view[net_a["id"]]["portMac"]} == {p1["id"], p3["id"]}
        assert_floodlight_consistent(server, sim)
        update(server, "subnet", sub_a["id"], gateway_ip="10.30.0.1")
        delete(server, "port", p1["id"])
        update(server, "network", net_a["id"], name="fl-a")  # the same name as net_d again
        delete(server, "network", net_d["id"])
        assert {n["guid"] for n in fl_list(sim)} == {net_a["id"], net_c["id"]}
        assert_floodlight_consistent(server, sim)
        assert sim.stats()["java_exceptions"] == 0  # Floodlight never failed a call of ours

        # A Floodlight restart loses everything; an on-demand sync replays networks and attachments.
        sim.restart()
        assert fl_list(sim) == []
        result = check(server, sim, "--profile", "floodlight")
        assert result.returncode == 1 and f"network {net_a['id']}: missing on the controller" in result.stdout
        lines = admin_sync_wait(server)
        assert lines[-1]["result"] == "ok", lines
        assert lines[-1]["last"]["networks"] == 2 and lines[-1]["last"]["ports"] == 1  # one attachment (p3)
        assert all("progress" in line for line in lines[:-1]) and lines[:-1]
        assert_floodlight_consistent(server, sim)
        assert sim.stats()["topology_puts"] == 0  # Floodlight ignores /topology: nothing relies on it
        assert pool_status(server)["profile"] == "floodlight"


def test_the_bigswitch_profile_forced_on_floodlight_corrupts_its_view() -> None:
    """The contrast: the same changes with Big Switch bodies make Floodlight store a subnet id as a network."""
    sim = SimProcess(profile="floodlight")
    with running([sim], "controller_profile = bigswitch\n") as server:
        net = create(server, "network", name="fl-forced")
        subnet = create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.40.0.0/24")
        create(server, "port", network_id=net["id"], device_id="vm-1")
        assert pool_status(server)["profile"] == "bigswitch"
        guids = {n["guid"]: n for n in fl_list(sim)}
        assert subnet["id"] in guids, guids  # the subnet's "id" was taken as the network guid
        assert fl_list(sim) != fl_expected(server)
        result = check(server, sim, "--profile", "floodlight")
        assert result.returncode == 1
        assert f"network {subnet['id']}: on the controller but not in the store" in result.stdout


def test_mutations_wait_for_the_profile_detection() -> None:
    """A change that arrives while ``GET /capabilities`` is still pending must not go out as Big Switch."""
    sim = SimProcess(profile="floodlight")

    def slow_capabilities(sims: list[SimProcess]) -> str:
        sims[0].fault(latency_ms=3000, path_regex="/capabilities$", count=1)
        return ""

    with running([sim], slow_capabilities, timeout=15) as server:
        sent_at = time.time()
        net = create(server, "network", name="early")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.50.0.0/24")
        assert pool_status(server)["profile"] == "floodlight", server.log()[-3000:]
        [capabilities] = [r for r in sim.requests() if r["path"].endswith("/capabilities")]
        answered_at = capabilities["time"] + capabilities["duration_ms"] / 1000
        assert sent_at < answered_at, (sent_at, capabilities)  # the change came while the detection was pending
        assert_floodlight_consistent(server, sim)


# -- restproxy-manage ------------------------------------------------------------------------------


SERVER_LINE = re.compile(r"^ ([* ]) (\S+)\s+(ok|failed)\s+requests=(\d+) failures=(\d+)(?:  last error: (.*))?$")


def pool_lines(stdout: str) -> dict[str, tuple[bool, str, str | None]]:
    """``pool-status`` output: server -> (active, state, last error)."""
    found = {}
    for line in stdout.splitlines():
        m = SERVER_LINE.match(line)
        if m:
            found[m.group(2)] = (m.group(1) == "*", m.group(3), m.group(6))
    return found


def test_operator_cli_pool_status_sync_and_check() -> None:
    first, second = SimProcess(), SimProcess()
    with running([first, second], "controller_profile = bigswitch\n") as server:
        net = create(server, "network", name="cli")
        create(server, "subnet", network_id=net["id"], ip_version=4, cidr="10.60.0.0/24")
        for i in range(3):
            create(server, "port", network_id=net["id"], device_id=f"vm-{i}")

        # pool-status: all ok -> exit 0, the first server active.
        result = manage("pool-status", "--url", server.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("profile: bigswitch\n")
        assert pool_lines(result.stdout) == {first.address: (True, "ok", None), second.address: (False, "ok", None)}

        # The first server fails one call: the pool fails over, and pool-status says so (exit 1).
        first.fault(action="status", status=500)
        other = create(server, "network", name="cli-2")
        assert other["id"] in bsn_networks(second) and other["id"] not in bsn_networks(first)
        result = manage("pool-status", "--url", server.url)
        assert result.returncode == 1, result.stdout + result.stderr
        assert pool_lines(result.stdout) == {
            first.address: (False, "failed", "500 Internal Server Error"),
            second.address: (True, "ok", None),
        }
        result = manage("pool-status", "--url", server.url, "--json")
        assert result.returncode == 1, result.stdout + result.stderr
        status = json.loads(result.stdout)
        assert status["profile"] == "bigswitch"
        assert [(s["server"], s["state"], s["active"]) for s in status["servers"]] == [
            (first.address, "failed", False),
            (second.address, "ok", True),
        ]
        assert status["servers"][0]["last_error"] == "500 Internal Server Error" and status["servers"][0]["failures"] == 1

        # sync: a progress bar on stderr, the totals on stdout, exactly one more /topology PUT (to the active server).
        before = (first.stats()["topology_puts"], second.stats()["topology_puts"])
        result = manage("sync", "--url", server.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert re.match(r"sync ok: 2 networks, 3 ports, \d+ bytes in [\d.]+s\n$", result.stdout), result.stdout
        assert "networks" in result.stderr and "ports" in result.stderr
        assert result.stderr.rstrip().endswith("[" + "#" * 30 + "] 100.0%  2/2 networks, 3 ports"), result.stderr
        assert (first.stats()["topology_puts"], second.stats()["topology_puts"]) == (before[0], before[1] + 1)
        result = check(server, second)
        assert result.returncode == 0, result.stdout + result.stderr

        # check: a controller that silently lost its state is named, network by network; a sync repairs it.
        second.forget(mode="silent")
        result = check(server, second)
        assert result.returncode == 1, result.stdout + result.stderr
        # (the two networks, and the tenant's default security group, made with the first port)
        assert f"{second.address}: 3 difference(s) from the store" in result.stdout, result.stdout
        for net_id in (net["id"], other["id"]):
            assert f"network {net_id}: missing on the controller" in result.stdout
        assert re.search(r"security group [0-9a-f-]{36}: missing on the controller", result.stdout), result.stdout
        result = manage("sync", "--url", server.url)
        assert result.returncode == 0 and result.stdout.startswith("sync ok: 2 networks, 3 ports"), result.stdout + result.stderr
        assert "[" in result.stderr and "%" in result.stderr
        assert second.stats()["topology_puts"] == before[1] + 2
        result = check(server, second)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{second.address}: consistent with the store (2 networks, 3 ports, 1 security group)" in result.stdout
        result = manage("pool-status", "--url", server.url)
        assert "completed=2 failed=0 last=ok" in result.stdout
