"""What each network's dnsmasq is given (restproxy_dhcp.dnsmasq): pure functions, no process."""

from __future__ import annotations

import attrs

from restproxy_dhcp import dnsmasq as dm


@attrs.frozen
class Cfg:
    dnsmasq_binary: str = "dnsmasq"
    dnsmasq_user: str = ""
    mtu: int = 1450
    dhcp_lease_duration: int = 600


NET = {
    "id": "n1",
    "subnets": [
        {"id": "s4", "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "enable_dhcp": True,
         "dns_nameservers": ["8.8.8.8", "8.8.4.4"], "host_routes": [{"destination": "169.254.169.254/32", "nexthop": "10.0.0.2"}]},
        {"id": "s6", "ip_version": 6, "cidr": "fd00::/64", "gateway_ip": "fd00::1", "enable_dhcp": True, "dns_nameservers": [],
         "host_routes": []},
        {"id": "slaac", "ip_version": 6, "cidr": "fd01::/64", "gateway_ip": None, "enable_dhcp": True, "ipv6_address_mode": "slaac"},
        {"id": "off", "ip_version": 4, "cidr": "10.1.0.0/24", "gateway_ip": "10.1.0.1", "enable_dhcp": False},
    ],
    "ports": [
        {"id": "p2", "mac_address": "fa:16:3e:00:00:02", "device_owner": "compute:nova", "device_id": "vm",
         "fixed_ips": [{"subnet_id": "s4", "ip_address": "10.0.0.5"}, {"subnet_id": "s6", "ip_address": "fd00::5"},
                       {"subnet_id": "off", "ip_address": "10.1.0.5"}]},
        {"id": "p1", "mac_address": "fa:16:3e:00:00:01", "device_owner": "network:dhcp", "device_id": "dhcpX-n1",
         "fixed_ips": [{"subnet_id": "s4", "ip_address": "10.0.0.2"}]},
    ],
}  # fmt: skip


def test_hosts_and_options() -> None:
    assert dm.host_entries(NET) == [
        "fa:16:3e:00:00:01,host-10-0-0-2,10.0.0.2",
        "fa:16:3e:00:00:02,host-10-0-0-5,10.0.0.5",
        "fa:16:3e:00:00:02,host-fd00--5,[fd00::5]",
    ]
    assert dm.option_lines(NET) == [
        "tag:subnet-s4,option:router,10.0.0.1",
        "tag:subnet-s4,option:dns-server,8.8.8.8,8.8.4.4",
        "tag:subnet-s4,option:classless-static-route,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1",
        "tag:subnet-s4,249,169.254.169.254/32,10.0.0.2,0.0.0.0/0,10.0.0.1",
    ]


def test_argv_binds_one_interface_with_a_static_range_per_served_subnet() -> None:
    paths = dm.Paths.of("/state", "n1")
    args = dm.dnsmasq_args(Cfg(), NET, "p1234567890abc", paths)
    assert args[0] == "dnsmasq" and "--keep-in-foreground" in args and "--bind-interfaces" in args
    assert "--interface=ns-p1234567890" in args and "--pid-file=/state/n1/pid" in args
    assert "--dhcp-option-force=option:mtu,1450" in args
    ranges = [a for a in args if a.startswith("--dhcp-range")]
    assert ranges == ["--dhcp-range=set:subnet-s4,10.0.0.0,static,255.255.255.0,600s", "--dhcp-range=set:subnet-s6,fd00::,static,64,600s"]
    assert dm.dhcp_port(NET, "dhcpX-n1")["id"] == "p1" and dm.interface_addresses(NET, NET["ports"][1]) == ["10.0.0.2/24"]
    assert dm.device_id("h", "n1") == dm.device_id("h", "n1") != dm.device_id("h2", "n1")
