"""l3: routers, router interfaces, floating IPs, router:external networks

Revision ID: 0004_l3
Revises: 0003_agents
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_l3"
down_revision = "0003_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("networks", sa.Column("router_external", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_table(
        "routers",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("gw_port_id", sa.String(length=36), nullable=True),
        sa.Column("enable_snat", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["gw_port_id"], ["ports.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_routers_tenant_id", "routers", ["tenant_id"])
    op.create_table(
        "routerports",
        sa.Column("port_id", sa.String(length=36), nullable=False),
        sa.Column("router_id", sa.String(length=36), nullable=False),
        sa.Column("port_type", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["port_id"], ["ports.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["router_id"], ["routers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("port_id"),
    )
    op.create_index("ix_routerports_router_id", "routerports", ["router_id"])
    op.create_table(
        "floatingips",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("floating_network_id", sa.String(length=36), nullable=False),
        sa.Column("floating_ip_address", sa.String(length=64), nullable=False),
        sa.Column("floating_port_id", sa.String(length=36), nullable=False),
        sa.Column("fixed_port_id", sa.String(length=36), nullable=True),
        sa.Column("fixed_ip_address", sa.String(length=64), nullable=True),
        sa.Column("router_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["fixed_port_id"], ["ports.id"]),
        sa.ForeignKeyConstraint(["floating_network_id"], ["networks.id"]),
        sa.ForeignKeyConstraint(["floating_port_id"], ["ports.id"]),
        sa.ForeignKeyConstraint(["router_id"], ["routers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("floating_network_id", "fixed_port_id", "fixed_ip_address", name="uniq_floatingips0fixed_ip"),
    )
    for column in ("fixed_port_id", "floating_network_id", "floating_port_id", "router_id", "tenant_id"):
        op.create_index(f"ix_floatingips_{column}", "floatingips", [column])


def downgrade() -> None:
    for column in ("fixed_port_id", "floating_network_id", "floating_port_id", "router_id", "tenant_id"):
        op.drop_index(f"ix_floatingips_{column}", table_name="floatingips")
    op.drop_table("floatingips")
    op.drop_index("ix_routerports_router_id", table_name="routerports")
    op.drop_table("routerports")
    op.drop_index("ix_routers_tenant_id", table_name="routers")
    op.drop_table("routers")
    with op.batch_alter_table("networks") as batch_op:
        batch_op.drop_column("router_external")
