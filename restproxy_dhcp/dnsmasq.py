"""What each network's dnsmasq is given: names, argv, hosts file and options file (pure functions).

Neutron's layout, kept so an operator finds what they expect: namespace
``qdhcp-<network id>``, one directory per network under ``state_path``
(``host``, ``opts``, ``leases``, ``pid``, ``dnsmasq.log``), a static
``--dhcp-range`` per served subnet tagged ``subnet-<id>``, host entries
``MAC,host-<ip with dashes>,IP`` and per-subnet options.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from typing import Any

import attrs

Network = dict[str, Any]
DHCP_OWNER = "network:dhcp"
METADATA_CIDR = "169.254.169.254/32"


def namespace(net_id: str, prefix: str = "qdhcp-") -> str:
    return f"{prefix}{net_id}"


def device_id(host: str, net_id: str) -> str:
    """The DHCP port's device_id, as Neutron makes it: ``dhcp<uuid5(host)>-<network id>``."""
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{net_id}"


def host_device(port_id: str) -> str:
    """The veth end on br-int (the host agent's naming)."""
    return "tap" + port_id[:11]


def ns_device(port_id: str) -> str:
    """The veth end in the qdhcp- namespace, where dnsmasq listens (Neutron's ``ns-`` prefix)."""
    return "ns-" + port_id[:11]


def hostname(ip: str) -> str:
    return "host-" + ip.replace(".", "-").replace(":", "-")


@attrs.frozen
class Paths:
    directory: str

    @classmethod
    def of(cls, state_path: str, net_id: str) -> Paths:
        return cls(os.path.join(state_path, net_id))

    @property
    def hosts(self) -> str:
        return os.path.join(self.directory, "host")

    @property
    def opts(self) -> str:
        return os.path.join(self.directory, "opts")

    @property
    def leases(self) -> str:
        return os.path.join(self.directory, "leases")

    @property
    def pid(self) -> str:
        return os.path.join(self.directory, "pid")

    @property
    def log(self) -> str:
        return os.path.join(self.directory, "dnsmasq.log")


def served_subnets(net: Network) -> list[dict[str, Any]]:
    """The subnets dnsmasq answers for: DHCPv4 ones with DHCP on, and DHCPv6-stateful ones (mode unset counts as stateful)."""
    out = []
    for subnet in net.get("subnets", []):
        if not subnet.get("enable_dhcp"):
            continue
        if subnet.get("ip_version") == 6 and subnet.get("ipv6_address_mode") not in (None, "", "dhcpv6-stateful"):
            continue  # SLAAC / stateless: addresses come from router advertisements
        out.append(subnet)
    return sorted(out, key=lambda s: s["id"])


def host_entries(net: Network) -> list[str]:
    """``MAC,hostname,IP`` for every fixed IP on a served subnet (the DHCP port's own included, as Neutron)."""
    served = {s["id"] for s in served_subnets(net)}
    lines = []
    for port in sorted(net.get("ports", []), key=lambda p: p["id"]):
        for fixed in port.get("fixed_ips", []):
            if fixed.get("subnet_id") not in served:
                continue
            ip = fixed["ip_address"]
            shown = f"[{ip}]" if ":" in ip else ip
            lines.append(f"{port['mac_address']},{hostname(ip)},{shown}")
    return lines


def option_lines(net: Network) -> list[str]:
    """Per DHCPv4 subnet: router, DNS servers, classless static routes (RFC 3442, and 249 for Windows) with the default route."""
    lines = []
    for subnet in served_subnets(net):
        if subnet.get("ip_version") != 4:
            dns = subnet.get("dns_nameservers") or []
            if dns:
                lines.append(f"tag:subnet-{subnet['id']},option6:dns-server,{','.join(f'[{d}]' for d in dns)}")
            continue
        tag = f"tag:subnet-{subnet['id']}"
        gateway = subnet.get("gateway_ip")
        lines.append(f"{tag},option:router,{gateway}" if gateway else f"{tag},option:router")
        dns = subnet.get("dns_nameservers") or []
        if dns:
            lines.append(f"{tag},option:dns-server,{','.join(dns)}")
        routes = [f"{r['destination']},{r['nexthop']}" for r in subnet.get("host_routes") or [] if ":" not in r["destination"]]
        if routes:
            if gateway:
                routes.append(f"0.0.0.0/0,{gateway}")  # a client given option 121 ignores option 3 (RFC 3442)
            lines.append(f"{tag},option:classless-static-route,{','.join(routes)}")
            lines.append(f"{tag},249,{','.join(routes)}")
    return lines


def render(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def dnsmasq_args(cfg: Any, net: Network, port_id: str, paths: Paths) -> list[str]:
    """dnsmasq's own arguments (what ``/proc/<pid>/cmdline`` shows): a change here needs a restart, not a SIGHUP."""
    args = [
        cfg.dnsmasq_binary, "--no-hosts", "--no-resolv", "--keep-in-foreground", "--port=0", "--conf-file=/dev/null",
        f"--pid-file={paths.pid}", f"--dhcp-hostsfile={paths.hosts}", f"--dhcp-optsfile={paths.opts}",
        f"--dhcp-leasefile={paths.leases}", "--bind-interfaces", f"--interface={ns_device(port_id)}", "--except-interface=lo",
        f"--dhcp-option-force=option:mtu,{cfg.mtu}", "--dhcp-authoritative", "--log-dhcp", f"--log-facility={paths.log}",
    ]  # fmt: skip
    if cfg.dnsmasq_user:
        args.append(f"--user={cfg.dnsmasq_user}")
    size = 0
    for subnet in served_subnets(net):
        cidr = ipaddress.ip_network(subnet["cidr"], strict=False)
        size += min(cidr.num_addresses, 1 << 16)
        mask = str(cidr.netmask) if cidr.version == 4 else str(cidr.prefixlen)
        args.append(f"--dhcp-range=set:subnet-{subnet['id']},{cidr.network_address},static,{mask},{cfg.dhcp_lease_duration}s")
    args.append(f"--dhcp-lease-max={max(size, 16)}")
    return args


def dhcp_port(net: Network, device: str) -> dict[str, Any] | None:
    """This agent's DHCP port on the network (by device_id), if the server has it."""
    return next((p for p in net.get("ports", []) if p.get("device_owner") == DHCP_OWNER and p.get("device_id") == device), None)


def interface_addresses(net: Network, port: dict[str, Any]) -> list[str]:
    """The DHCP port's addresses with their subnets' prefix lengths (``10.0.0.2/24``)."""
    cidrs = {s["id"]: s["cidr"] for s in net.get("subnets", [])}
    out = []
    for fixed in port.get("fixed_ips", []):
        cidr = cidrs.get(fixed["subnet_id"]) or (fixed.get("subnet") or {}).get("cidr")
        if cidr:
            out.append(f"{fixed['ip_address']}/{ipaddress.ip_network(cidr, strict=False).prefixlen}")
    return sorted(out)
