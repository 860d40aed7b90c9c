"""Limits and defaults the units of work obey (from the [DEFAULT] section)."""

from __future__ import annotations

import attrs

AUTO_DELETE_PORT_OWNERS = ("network:dhcp",)


@attrs.frozen
class CoreSettings:
    base_mac: str = "fa:16:3e:00:00:00"
    mac_generation_retries: int = 16
    max_fixed_ips_per_port: int = 5
    max_dns_nameservers: int = 5
    max_subnet_host_routes: int = 20
    allow_overlapping_ips: bool = True
    force_gateway_on_subnet: bool = False
