"""SQLAlchemy models: every Quantum object the plugin keeps.

Uniqueness that IPAM relies on is enforced by the database itself, so two
servers on one database can never hand out the same IP (primary key of
``ipallocations``) or MAC (unique ``network_id, mac_address``).
"""

from __future__ import annotations

import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)


class Base(DeclarativeBase):
    pass


class Network(Base):
    __tablename__ = "networks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    # The l3 extension's ``router:external`` (Quantum keeps it in a table of its own, externalnetworks).
    router_external: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The port-security extension's default for the network's new ports (Neutron: networksecuritybindings).
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    subnets: Mapped[list[Subnet]] = relationship(back_populates="network", order_by="Subnet.created_at, Subnet.id")


class Subnet(Base):
    __tablename__ = "subnets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)

    network: Mapped[Network] = relationship(back_populates="subnets")
    allocation_pools: Mapped[list[AllocationPool]] = relationship(cascade="all, delete-orphan", order_by="AllocationPool.position")
    dns_nameservers: Mapped[list[DNSNameServer]] = relationship(cascade="all, delete-orphan", order_by="DNSNameServer.position")
    host_routes: Mapped[list[HostRoute]] = relationship(cascade="all, delete-orphan", order_by="HostRoute.position")


class AllocationPool(Base):
    __tablename__ = "ipallocationpools"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"), index=True)
    first_ip: Mapped[str] = mapped_column(String(64))
    last_ip: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)


class DNSNameServer(Base):
    __tablename__ = "dnsnameservers"

    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(128), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class HostRoute(Base):
    __tablename__ = "subnetroutes"

    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"), primary_key=True)
    destination: Mapped[str] = mapped_column(String(64), primary_key=True)
    nexthop: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class Port(Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address", name="uniq_ports0network_id0mac_address"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    mac_address: Mapped[str] = mapped_column(String(32))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="DOWN")
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    binding_host_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    binding_profile: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    # The port-security extension (Neutron: portsecuritybindings); a column: no extra row per port.
    port_security_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    fixed_ips: Mapped[list[IPAllocation]] = relationship(cascade="all, delete-orphan", order_by="IPAllocation.position")
    network: Mapped[Network] = relationship(viewonly=True)
    # Loaded with the port (one batched SELECT each per query); a new port starts with empty lists (no load).
    security_group_bindings: Mapped[list[SecurityGroupPortBinding]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="SecurityGroupPortBinding.security_group_id"
    )
    allowed_address_pairs: Mapped[list[AllowedAddressPair]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="AllowedAddressPair.position"
    )


class IPAllocation(Base):
    __tablename__ = "ipallocations"

    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id", ondelete="CASCADE"), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class JournalEntry(Base):
    """A change committed to the store whose controller call has not finished yet.

    Written in the same transaction as the change, removed once the controller
    answered (closed in batches a moment later: on PostgreSQL up to ``CLOSE_DELAY``, see
    controller/mirror.py) or the change was undone. Entries left after a crash mean the
    controllers may not have seen those changes: the server re-syncs at start.
    """

    __tablename__ = "controller_journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(36))
    op: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class AgentEvent(Base):
    """A change that matters to one host's agent, numbered in commit order.

    Written in the same transaction as the change; agents watch this sequence
    (per host) and resume from the last number they saw.
    """

    __tablename__ = "agent_events"
    __table_args__ = (Index("ix_agent_events_host_seq", "host", "seq"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class NovaEvent(Base):
    """A port event for Nova (network-vif-plugged/unplugged/deleted) not yet delivered.

    Written in the same transaction as the port's status change or deletion
    (store/nova_events.py); a sender claims a batch (``claimed_by``/``claimed_until``,
    a lease so that a dead server's claim runs out), posts it to Nova, and
    deletes the rows; a failed batch waits until ``not_before``.
    """

    __tablename__ = "nova_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    server_uuid: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(36))  # the port id
    status: Mapped[str] = mapped_column(String(16))  # completed or failed
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    not_before: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)


class Agent(Base):
    """An agent's last heartbeat (report_state), for GET /v2.0/agents."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_type", "host", name="uniq_agents0agent_type0host"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_type: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255), default="")
    host: Mapped[str] = mapped_column(String(255))
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    configurations: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_timestamp: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class Router(Base):
    """An l3 router; its gateway is a hidden port (``network:router_gateway``) on an external network."""

    __tablename__ = "routers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    admin_state_up: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    gw_port_id: Mapped[str | None] = mapped_column(ForeignKey("ports.id"), nullable=True)
    enable_snat: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class RouterPort(Base):
    """A router's interface: the port (``network:router_interface``) that joins it to a subnet.

    Interfaces are these rows, not every port whose device_owner says so: a port a
    client labels ``network:router_interface`` by hand is no interface.
    """

    __tablename__ = "routerports"

    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    router_id: Mapped[str] = mapped_column(ForeignKey("routers.id", ondelete="CASCADE"), index=True)
    port_type: Mapped[str] = mapped_column(String(255), default="network:router_interface")


class FloatingIP(Base):
    """A floating IP: a hidden port (``network:floatingip``) on an external network, mapped to a fixed IP."""

    __tablename__ = "floatingips"
    __table_args__ = (UniqueConstraint("floating_network_id", "fixed_port_id", "fixed_ip_address", name="uniq_floatingips0fixed_ip"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    floating_network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    floating_ip_address: Mapped[str] = mapped_column(String(64))
    floating_port_id: Mapped[str] = mapped_column(ForeignKey("ports.id"), index=True)
    fixed_port_id: Mapped[str | None] = mapped_column(ForeignKey("ports.id"), nullable=True, index=True)
    fixed_ip_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    router_id: Mapped[str | None] = mapped_column(ForeignKey("routers.id"), nullable=True, index=True)


# -- security groups (the security-group, port-security and allowed-address-pairs extensions) ---------------


class SecurityGroup(Base):
    __tablename__ = "securitygroups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)

    rules: Mapped[list[SecurityGroupRule]] = relationship(
        cascade="all, delete-orphan", foreign_keys="SecurityGroupRule.security_group_id", order_by="SecurityGroupRule.id"
    )


class DefaultSecurityGroup(Base):
    """A tenant's ``default`` group: one per tenant, made sure by the primary key (two servers racing: one wins)."""

    __tablename__ = "default_security_group"

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("securitygroups.id", ondelete="CASCADE"), unique=True)


class SecurityGroupRule(Base):
    __tablename__ = "securitygrouprules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255), index=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("securitygroups.id", ondelete="CASCADE"), index=True)
    remote_group_id: Mapped[str | None] = mapped_column(ForeignKey("securitygroups.id", ondelete="CASCADE"), nullable=True, index=True)
    direction: Mapped[str] = mapped_column(String(16))
    ethertype: Mapped[str] = mapped_column(String(40))
    protocol: Mapped[str | None] = mapped_column(String(40), nullable=True)
    port_range_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_range_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_ip_prefix: Mapped[str | None] = mapped_column(String(255), nullable=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime] = mapped_column(DateTime, default=utcnow)


class SecurityGroupPortBinding(Base):
    """A port in a group; the group cannot go while it has ports (no cascade from the group).

    ``host`` is the port's ``binding:host_id``, kept here so that "which hosts have a port in this group" (asked at
    every member change) reads the (group, host) index only: bound members, never every member's port row.
    """

    __tablename__ = "securitygroupportbindings"
    __table_args__ = (Index("ix_securitygroupportbindings_group_host", "security_group_id", "host"),)

    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    security_group_id: Mapped[str] = mapped_column(ForeignKey("securitygroups.id"), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), default="", server_default="")


class AllowedAddressPair(Base):
    __tablename__ = "allowedaddresspairs"

    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True)
    mac_address: Mapped[str] = mapped_column(String(32), primary_key=True)
    ip_address: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class ControllerLease(Base):
    """Work that one process at a time does for every server on this database: the topology sync of
    a controller pool, and its lost-state watchdog (store/leases.py says how).

    ``holder`` holds the lease until ``held_until`` (milliseconds since the epoch; the holder renews
    it while it works, so a killed holder's lease runs out). For the sync, ``requested`` counts the
    requests; a run takes the count of the moment it reads the store as its ``running`` generation
    and, when it lands, ``done`` becomes at least that (``failed`` if it did not): a request is
    satisfied by the first run whose generation reaches its own.
    """

    __tablename__ = "controller_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    held_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    requested: Mapped[int] = mapped_column(BigInteger, default=0)
    done: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    running: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # ms: the running generation's store read
    ok_server: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the last run that landed: where
    ok_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # and when it landed (ms)
    status: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: the holder's progress, the last result
