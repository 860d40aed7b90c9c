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


@attrs.frozen
class DatabaseSettings:
    """How long the store waits for the database (the [DATABASE] section), in seconds.

    Without bounds a partitioned database hangs every request; with them an
    unreachable database turns into a quick 503 (see ``store.outage``).
    """

    connect_timeout: float = 5.0  # to open a connection, and for the ping of a pooled one
    statement_timeout: float = 30.0  # for one statement (server-side where the backend can) and for lock waits
    pool_timeout: float = 10.0  # for a free connection from the pool
    retry_interval: float = 1.0  # while the database is unavailable: between attempts to reach it again
