"""Seeded fuzzing of the whole API on each database: hostile requests never get a 5xx, and a refusal changes nothing.

A fixed-seed generator builds requests from templates of the real routes,
mixing identities (admin, three tenants, undecodable or overlong identity
headers), methods (including ones no route takes), ids (each tenant's
objects, unknown and malformed ids), query strings (filters, fields, sort
keys, markers, limits) and bodies (valid shapes with hostile values: lone
surrogates, NUL, wrong types, huge numbers, other tenants' ids, admin-only
attributes, bulk lists, broken JSON and bytes that are no UTF-8).

After every request: the status is below 500; if it is a refusal (>= 400),
a digest of every row of the database equals the one before it; a 2xx
answer to a non-admin never carries a ``binding:`` attribute.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from typing import Any
from urllib.parse import quote

import pytest

from restproxy_testing.support import ServerProcess
from server_plugin.attributes import RESOURCES
from tests.hostile import StoreDigest, build, send
from tests.test_api_tenancy_and_input import create

SEED = 20131017
REQUESTS = 1100
COLLECTIONS = list(RESOURCES)


def _world(server: ServerProcess) -> dict[str, Any]:
    """Objects of tenants a, b and c (shared and external networks included), made by the admin."""
    w: dict[str, Any] = {"tenants": ["fz-a", "fz-b", "fz-c"], "ids": {c: [] for c in COLLECTIONS}}

    def add(collection: str, attrs: dict[str, Any]) -> dict[str, Any]:
        item = create(server, collection, attrs)
        w["ids"][collection].append(item["id"])
        return item

    ext = add("networks", {"name": "fz-ext", "tenant_id": "fz-admin", "router:external": True})
    add("subnets", {"network_id": ext["id"], "ip_version": 4, "cidr": "10.90.0.0/24", "tenant_id": "fz-admin"})
    for i, tenant in enumerate(w["tenants"]):
        net = add("networks", {"name": f"{tenant}-net", "tenant_id": tenant, "shared": i == 0})
        sub = add("subnets", {"network_id": net["id"], "ip_version": 4, "cidr": f"10.9{i + 1}.0.0/24", "tenant_id": tenant})
        port = add(
            "ports",
            {"network_id": net["id"], "tenant_id": tenant, "device_id": f"vm-{tenant}", "binding:host_id": f"host-{tenant}"},
        )
        router = add("routers", {"name": f"{tenant}-r", "tenant_id": tenant, "external_gateway_info": {"network_id": ext["id"]}})
        status, _ = server.request("PUT", f"/v2.0/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
        assert status == 200
        add("floatingips", {"floating_network_id": ext["id"], "tenant_id": tenant, "port_id": port["id"]})
    return w


SURROGATES = ["\ud800", "a\udfffb", "\udbff\udc00x\ud800"]  # lone ones (a valid pair alone would be fine)
STRINGS = [
    "", "x", "n" * 256, "nul\x00", "caf\u00e9", "\U0001f600", "network:dhcp", "network:router_interface",
    "compute:nova", "../../etc", "' OR 1=1 --", "%00", "True", "fa:16:3e:00:00:01", "10.91.0.5", "10.91.0.0/24",
    *SURROGATES,
]  # fmt: skip
SCALARS: list[Any] = [None, True, False, 0, 1, -1, 4, 6, 2**31, 2**64, 1.5, -0.0, 1e308, [], {}, [[[[]]]], {"a": {"b": {}}}]


class Generator:
    def __init__(self, world: dict[str, Any], seed: int) -> None:
        self.w = world
        self.r = random.Random(seed)

    def choice(self, items: list[Any]) -> Any:
        return items[self.r.randrange(len(items))]

    def some_id(self) -> str:
        kind = self.r.random()
        if kind < 0.7:
            pool = self.w["ids"][self.choice(COLLECTIONS)]
            if pool:
                value = self.choice(pool)
                return value.upper() if self.r.random() < 0.05 else value
        return self.choice([str(uuid.UUID(int=self.r.getrandbits(128))), "not-a-uuid", "", "%00", "%ff%fe", "1" * 300, "..", "*"])

    def value(self, depth: int = 0) -> Any:
        pick = self.r.random()
        if pick < 0.35:
            return self.choice(STRINGS)
        if pick < 0.55:
            return self.some_id()
        if pick < 0.75 or depth > 2:
            return self.choice(SCALARS)
        if pick < 0.87:
            return [self.value(depth + 1) for _ in range(self.r.randrange(4))]
        return {self.choice([*STRINGS[:8], "ip_address", "subnet_id", "network_id", "netns"]): self.value(depth + 1) for _ in range(3)}

    def valid_item(self, collection: str) -> dict[str, Any]:
        """A body that could succeed (if the caller may use what it names)."""
        net = self.choice(self.w["ids"]["networks"])
        return {
            "networks": {"name": "fz"},
            "subnets": {"network_id": net, "ip_version": 4, "cidr": f"10.{self.r.randrange(100, 250)}.{self.r.randrange(256)}.0/24"},
            "ports": {"network_id": net, "name": "fz"},
            "routers": {"name": "fz"},
            "floatingips": {"floating_network_id": self.w["ids"]["networks"][0]},
        }[collection]

    def item(self, collection: str) -> dict[str, Any]:
        """A valid body with up to three attributes set to hostile values (none at all a quarter of the time)."""
        attributes = list(RESOURCES[collection][1])
        item: dict[str, Any] = dict(self.valid_item(collection))
        for _ in range(self.choice([0, 0, 0, 1, 1, 2, 3])):
            name = self.choice([*attributes, "binding:host_id", "binding:profile", "device_owner", "tenant_id", "colour", "fixed_ips"])
            item[name] = self.value()
        if self.r.random() < 0.15:
            item["fixed_ips"] = [{"subnet_id": self.some_id()}, {"ip_address": self.choice(STRINGS)}][: self.r.randrange(1, 3)]
        return item

    def body(self, collection: str) -> bytes | None:
        pick = self.r.random()
        singular = RESOURCES[collection][0] if collection in RESOURCES else "network"
        if pick < 0.05:
            return None
        if pick < 0.12:
            return self.choice([b"{", b"\xff\xfe{}", b"[" * 3000, b'{"network": "\xed\xa0\x80"}', b"null", b"1e99999", b'""', b"{}" * 3])
        if pick < 0.22:
            return json.dumps({collection: [self.item(collection) for _ in range(self.r.randrange(0, 4))]}).encode()
        if pick < 0.27:
            return json.dumps(self.value()).encode()
        if pick < 0.35 or collection == "routers" and pick < 0.6:
            return json.dumps(
                {"subnet_id": self.some_id(), "port_id": self.some_id()} if self.r.random() < 0.5 else {"port_id": self.some_id()}
            ).encode()
        return json.dumps({singular: self.item(collection)}).encode()

    def query(self, collection: str) -> str:
        parts = []
        attributes = [*RESOURCES.get(collection, ("", {}))[1], "binding:host_id", "binding:profile", "nope"]
        for _ in range(self.r.randrange(0, 4)):
            kind = self.r.random()
            if kind < 0.3:
                parts.append(f"{quote(self.choice(attributes))}={quote(str(self.value()), safe='', errors='surrogatepass')}")
            elif kind < 0.45:
                parts.append(f"fields={quote(self.choice(attributes))}")
            elif kind < 0.6:
                parts.append(f"sort_key={quote(self.choice(attributes))}&sort_dir={self.choice(['asc', 'desc', 'up'])}")
            elif kind < 0.8:
                parts.append(f"marker={quote(self.some_id(), safe='%')}")
            else:
                parts.append(f"limit={self.choice(['1', '0', '-1', 'x', '99999999999999999999', '2'])}")
        return "?" + "&".join(parts) if parts else ""

    def path(self) -> tuple[str, str, list[str]]:
        """(collection, path, the methods its route takes)."""
        collection = self.choice(COLLECTIONS)
        tenant = self.choice([*self.w["tenants"], *self.w["tenants"], "t" * 300, "%ff", "%00", "fz-admin"])
        pick = self.r.random()
        if pick < 0.4:
            return collection, f"/v2.0/{collection}{self.query(collection)}", ["GET", "POST"]
        if pick < 0.6:
            suffix = self.choice(["", "", "", ".json", "/", ".xml"])
            query = self.query(collection) if self.r.random() < 0.3 else ""
            return collection, f"/v2.0/{collection}/{self.some_id()}{suffix}{query}", ["GET", "PUT", "DELETE"]
        if pick < 0.68:
            action = self.choice(["add_router_interface", "remove_router_interface", "add_router_interface", "nope"])
            return "routers", f"/v2.0/routers/{self.some_id()}/{action}", ["PUT"]
        if pick < 0.9:
            version = self.choice(["v1.0", "v1.1"])
            tail, methods = self.choice(
                [
                    ("", ["GET", "POST"]), ("/detail", ["GET"]), ("/{n}", ["GET", "PUT", "DELETE"]), ("/{n}/detail", ["GET"]),
                    ("/{n}/ports", ["GET", "POST"]), ("/{n}/ports/{p}", ["GET", "PUT", "DELETE"]),
                    ("/{n}/ports/{p}/attachment", ["GET", "PUT", "DELETE"]),
                ]
            )  # fmt: skip
            tail = tail.replace("{n}", self.some_id()).replace("{p}", self.some_id())
            return "networks", f"/{version}/tenants/{tenant}/networks{tail}{self.choice(['', '.json', '.json', '.xml'])}", methods
        path = self.choice(["/", "/v2.0", "/v2.0/extensions", "/metrics", "/admin/pool", "/admin/sync", "/v3", "/%ff/%00"])
        return "networks", path, ["GET", "POST"]

    def headers(self) -> tuple[list[tuple[bytes, bytes]], bool]:
        """Headers, and whether the identity is a non-admin tenant."""
        pick = self.r.random()
        headers: list[tuple[bytes, bytes]] = []
        tenant = False
        if pick < 0.2:
            pass  # noauth without headers: the admin
        elif pick < 0.8:
            headers.append((self.choice([b"X-Tenant-Id", b"X-Project-Id"]), self.choice(self.w["tenants"]).encode()))
            tenant = True
            if self.r.random() < 0.1:
                headers.append((b"X-Roles", self.choice([b"member", b"admin", b"Member, reader"])))
                tenant = headers[-1][1] != b"admin"
        else:
            headers.append(
                self.choice(
                    [(b"X-Tenant-Id", b"caf\xe9"), (b"X-Tenant-Id", b"t" * 300), (b"X-Roles", b"\xff"), (b"X-Project-Id", b"\xed\xa0\x80")]
                )
            )
        if self.r.random() < 0.9:
            headers.append(
                (b"Content-Type", self.choice([b"application/json", b"application/xml", b"text/plain", b"app\xfflication/json"]))
            )
        if self.r.random() < 0.1:
            headers.append((b"X-Auth-Token", bytes(self.r.randrange(256) for _ in range(8)).replace(b"\r", b"").replace(b"\n", b"")))
        if self.r.random() < 0.05:
            headers.append((b"Accept", b"\xc3\x28"))
        return headers, tenant

    def request(self) -> tuple[bytes, str, bool]:
        collection, path, methods = self.path()
        if self.r.random() < 0.85:
            method = self.choice(methods)
        else:
            method = self.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FROB"])
        headers, tenant = self.headers()
        body = self.body(collection) if method in ("POST", "PUT", "PATCH") or self.r.random() < 0.05 else None
        return build(method.encode(), path.encode("utf-8", "surrogatepass"), headers, body), method, tenant


def _binding_keys(body: Any) -> list[str]:
    text = json.dumps(body)
    return [k for k in ("binding:host_id", "binding:profile", "binding:vif_type", "binding:vif_details") if f'"{k}"' in text]


def test_hostile_requests_never_5xx_and_refusals_change_nothing(server: ServerProcess, db_url: str) -> None:
    world = _world(server)
    generator = Generator(world, SEED)
    digest = StoreDigest(db_url)
    started = time.monotonic()
    counts: dict[int, int] = {}
    try:
        before = digest()
        for n in range(REQUESTS):
            data, method, tenant = generator.request()
            status, _, body = send(server.port, data)
            counts[status] = counts.get(status, 0) + 1
            where = f"request {n} (seed {SEED}): {data[:600]!r}\n-> {status} {str(body)[:600]}"
            assert 100 <= status < 500, where
            after = digest()
            if status >= 400:
                assert after == before, f"a refusal changed the database: {where}"
            elif tenant and status < 300:
                assert not _binding_keys(body), f"a tenant saw binding attributes: {where}"
            before = after
    finally:
        digest.close()
    elapsed = time.monotonic() - started
    print(f"\n{REQUESTS} fuzz requests in {elapsed:.1f} s; statuses {dict(sorted(counts.items()))}")
    # The fuzzer must reach both sides: refusals and real changes.
    assert sum(v for k, v in counts.items() if k >= 400) > REQUESTS / 2
    assert sum(v for k, v in counts.items() if 200 <= k < 300) > 20


@pytest.mark.parametrize("seed", [1, 2])
def test_generator_is_deterministic(seed: int) -> None:
    world = {"tenants": ["a", "b"], "ids": {c: [f"{c}-{i}" for i in range(3)] for c in COLLECTIONS}}
    g1, g2 = Generator(world, seed), Generator(world, seed)
    assert [g1.request() for _ in range(50)] == [g2.request() for _ in range(50)]
