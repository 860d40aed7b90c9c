"""What a Big Switch controller knows: networks with their ports, routers, floating IPs, security groups.

Networks and routers are keyed by (tenant, id), as the controller's URLs are, so that a
plugin that puts a port under the wrong tenant (the shared-network bug, 1278530) gets a 404
NXVNS here just as it did from a real controller. Floating IPs are keyed by id alone and
tied to their network, so the two ways of sending them (inside network PUTs, or
``/floatingips`` when the capability is on) end in the same state.

:meth:`Topology.snapshot` is the normalised, sorted view served by ``GET /_sim/state``:
two controllers that were told the same things give equal snapshots, whatever the order
or the path (incremental calls or one ``/topology`` PUT) that told them.
"""

from __future__ import annotations

from typing import Any

import attrs

Obj = dict[str, Any]
NETWORK_KEYS = ("id", "tenant_id", "name", "state", "gateway", "router:external", "shared")
SUBNET_KEYS = ("id", "name", "cidr", "ip_version", "gateway_ip", "enable_dhcp", "allocation_pools", "dns_nameservers", "host_routes")
PORT_KEYS = ("id", "name", "network_id", "tenant_id", "mac_address", "device_id", "device_owner", "state")
ROUTER_KEYS = ("id", "tenant_id", "name", "state", "external_gateway_info")
SG_KEYS = ("id", "tenant_id", "name", "description")
SG_RULE_KEYS = (
    "id", "direction", "ethertype", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix", "remote_group_id",
)  # fmt: skip
FIP_KEYS = ("id", "tenant_id", "floating_ip_address", "floating_network_id", "router_id", "port_id", "fixed_ip_address")


@attrs.define
class Port:
    body: Obj
    attachment: Obj | None = None


@attrs.define
class Network:
    tenant_id: str
    body: Obj  # the last network body, without "ports"/"floatingips"
    ports: dict[str, Port] = attrs.field(factory=dict)


@attrs.define
class Router:
    tenant_id: str
    body: Obj  # without "interfaces"
    interfaces: dict[str, Obj] = attrs.field(factory=dict)


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


@attrs.define
class Topology:
    networks: dict[tuple[str, str], Network] = attrs.field(factory=dict)
    routers: dict[tuple[str, str], Router] = attrs.field(factory=dict)
    floatingips: dict[str, Obj] = attrs.field(factory=dict)
    security_groups: dict[str, Obj] = attrs.field(factory=dict)  # id -> the last body (with its rules)

    # -- networks ---------------------------------------------------------------------------

    def find_network(self, tenant: str, net_id: str) -> Network | None:
        return self.networks.get((tenant, net_id))

    def upsert_network(self, tenant: str, body: Obj) -> Network:
        """Create or replace a network's attributes; its ports stay. A ``floatingips`` list
        in the body replaces the network's floating IPs."""
        key = (tenant, body["id"])
        net = self.networks.get(key)
        stored = _without(body, "ports", "floatingips")
        if net is None:
            net = self.networks[key] = Network(tenant, stored)
        else:
            net.body = stored
        if body.get("floatingips") is not None:
            self.replace_network_floatingips(body["id"], body["floatingips"], tenant)
        return net

    def delete_network(self, tenant: str, net_id: str) -> bool:
        if self.networks.pop((tenant, net_id), None) is None:
            return False
        for fid in [fid for fid, fip in self.floatingips.items() if fip.get("floating_network_id") == net_id]:
            del self.floatingips[fid]
        return True

    # -- floating IPs ---------------------------------------------------------------------

    def replace_network_floatingips(self, net_id: str, fips: list[Obj], tenant: str) -> None:
        for fid in [fid for fid, fip in self.floatingips.items() if fip.get("floating_network_id") == net_id]:
            del self.floatingips[fid]
        for fip in fips:
            self.put_floatingip({"tenant_id": tenant, **fip, "floating_network_id": net_id})

    def put_floatingip(self, fip: Obj) -> None:
        self.floatingips[fip["id"]] = dict(fip)

    # -- routers ----------------------------------------------------------------------------

    def upsert_router(self, tenant: str, body: Obj) -> Router:
        key = (tenant, body["id"])
        router = self.routers.get(key)
        stored = _without(body, "interfaces")
        if router is None:
            router = self.routers[key] = Router(tenant, stored)
        else:
            router.body = stored
        return router

    # -- whole state --------------------------------------------------------------------------

    @classmethod
    def from_topology(cls, body: Obj) -> Topology:
        """A new state from a checked ``/topology`` body."""
        topo = cls()
        for net_body in body.get("networks") or []:
            tenant = net_body["tenant_id"]
            ports = net_body.get("ports") or []
            net = topo.upsert_network(tenant, net_body)
            for port_body in ports:
                # The body is ours (freshly parsed): strip it in place rather than copy
                # 100,000 dicts.
                att = port_body.pop("attachment", None)
                attachment = {"id": att["id"], "mac": att["mac"].lower()} if att and att.get("id") else None
                net.ports[port_body["id"]] = Port(port_body, attachment)
        for router_body in body.get("routers") or []:
            router = topo.upsert_router(router_body["tenant_id"], router_body)
            for iface in router_body.get("interfaces") or []:
                router.interfaces[iface["id"]] = dict(iface)
        for group in body.get("security-groups") or []:
            topo.security_groups[group["id"]] = group
        return topo

    def counts(self) -> dict[str, int]:
        ports = [p for n in self.networks.values() for p in n.ports.values()]
        return {
            "networks": len(self.networks),
            "ports": len(ports),
            "attachments": sum(1 for p in ports if p.attachment is not None),
            "routers": len(self.routers),
            "interfaces": sum(len(r.interfaces) for r in self.routers.values()),
            "floatingips": len(self.floatingips),
            "security_groups": len(self.security_groups),
        }

    def snapshot(self, raw: bool = False) -> Obj:
        """The normalised state (see the module docstring); ``raw`` adds the bodies as stored."""
        networks = []
        for (tenant, _), net in sorted(self.networks.items()):
            item = _pick(net.body, NETWORK_KEYS)
            item["tenant_id"] = tenant
            item["subnets"] = sorted((_subnet(s) for s in net.body.get("subnets") or []), key=lambda s: str(s["id"]))
            item["ports"] = [_port(p) for _, p in sorted(net.ports.items())]
            if raw:
                item["raw"] = net.body
            networks.append(item)
        routers = []
        for (tenant, _), router in sorted(self.routers.items()):
            item = _pick(router.body, ROUTER_KEYS)
            item["tenant_id"] = tenant
            item["interfaces"] = [_interface(i) for _, i in sorted(router.interfaces.items())]
            if raw:
                item["raw"] = router.body
            routers.append(item)
        fips = [_pick(fip, FIP_KEYS) for _, fip in sorted(self.floatingips.items())]
        groups = [
            dict(
                _pick(g, SG_KEYS),
                security_group_rules=sorted((_pick(r, SG_RULE_KEYS) for r in g["security_group_rules"]), key=lambda r: r["id"]),
            )
            for _, g in sorted(self.security_groups.items())
        ]
        return {"networks": networks, "routers": routers, "floatingips": fips, "security_groups": groups, "counts": self.counts()}


def _pick(obj: Obj, keys: tuple[str, ...]) -> Obj:
    return {k: obj.get(k) for k in keys}


def _subnet(subnet: Obj) -> Obj:
    item = _pick(subnet, SUBNET_KEYS)
    item["allocation_pools"] = sorted(item["allocation_pools"] or [], key=lambda p: (str(p.get("start")), str(p.get("end"))))
    item["dns_nameservers"] = sorted(item["dns_nameservers"] or [], key=str)
    item["host_routes"] = sorted(item["host_routes"] or [], key=lambda r: (str(r.get("destination")), str(r.get("nexthop"))))
    return item


def _port(port: Port) -> Obj:
    item = _pick(port.body, PORT_KEYS)
    fixed = port.body.get("fixed_ips") or []
    item["fixed_ips"] = sorted(
        ({"subnet_id": f.get("subnet_id"), "ip_address": f.get("ip_address")} for f in fixed),
        key=lambda f: (str(f["subnet_id"]), str(f["ip_address"])),
    )
    item["attachment"] = dict(port.attachment) if port.attachment else None
    item["security_groups"] = sorted(port.body.get("security_groups") or [])
    return item


def _interface(iface: Obj) -> Obj:
    subnet = iface.get("subnet") or {}
    return {"id": iface.get("id"), "subnet_id": subnet.get("id"), "cidr": subnet.get("cidr"), "gateway_ip": subnet.get("gateway_ip")}
