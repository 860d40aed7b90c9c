"""security groups: groups, rules, port bindings, port security, allowed address pairs; agent_events(host, seq)

Revision ID: 0005_security_groups
Revises: 0004_l3
Create Date: 2026-12-01

Key lengths stay within MariaDB's 3072-byte InnoDB limit with utf8mb4 (4 bytes a character): the widest keys
are securitygroupportbindings' (group, host) index (1164 bytes) and default_security_group's tenant_id (1020).
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_security_groups"
down_revision = "0004_l3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("networks", sa.Column("port_security_enabled", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.add_column("ports", sa.Column("port_security_enabled", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.create_index("ix_agent_events_host_seq", "agent_events", ["host", "seq"])
    op.create_table(
        "securitygroups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_securitygroups_tenant_id", "securitygroups", ["tenant_id"])
    op.create_table(
        "default_security_group",
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["security_group_id"], ["securitygroups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id"),
        sa.UniqueConstraint("security_group_id"),
    )
    op.create_table(
        "securitygrouprules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.Column("remote_group_id", sa.String(length=36), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("ethertype", sa.String(length=40), nullable=False),
        sa.Column("protocol", sa.String(length=40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(length=255), nullable=True),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["security_group_id"], ["securitygroups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["remote_group_id"], ["securitygroups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("tenant_id", "security_group_id", "remote_group_id"):
        op.create_index(f"ix_securitygrouprules_{column}", "securitygrouprules", [column])
    op.create_table(
        "securitygroupportbindings",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("security_group_id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), server_default="", nullable=False),
        sa.ForeignKeyConstraint(["port_id"], ["ports.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["security_group_id"], ["securitygroups.id"]),
        sa.PrimaryKeyConstraint("port_id", "security_group_id"),
    )
    op.create_index("ix_securitygroupportbindings_group_host", "securitygroupportbindings", ["security_group_id", "host"])
    op.create_table(
        "allowedaddresspairs",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("mac_address", sa.String(length=32), nullable=False),
        sa.Column("ip_address", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["port_id"], ["ports.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("port_id", "mac_address", "ip_address"),
    )


def downgrade() -> None:
    op.drop_table("allowedaddresspairs")
    op.drop_index("ix_securitygroupportbindings_group_host", table_name="securitygroupportbindings")
    op.drop_table("securitygroupportbindings")
    for column in ("tenant_id", "security_group_id", "remote_group_id"):
        op.drop_index(f"ix_securitygrouprules_{column}", table_name="securitygrouprules")
    op.drop_table("securitygrouprules")
    op.drop_table("default_security_group")
    op.drop_index("ix_securitygroups_tenant_id", table_name="securitygroups")
    op.drop_table("securitygroups")
    op.drop_index("ix_agent_events_host_seq", table_name="agent_events")
    with op.batch_alter_table("ports") as batch_op:
        batch_op.drop_column("port_security_enabled")
    with op.batch_alter_table("networks") as batch_op:
        batch_op.drop_column("port_security_enabled")
