"""nova_events: port events for Nova, journaled with the status change until delivered

Revision ID: 0006_nova_events
Revises: 0004_l3 (the integrator re-chains it after 0005_security_groups)
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_nova_events"
down_revision = "0005_security_groups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nova_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("server_uuid", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_nova_events_not_before", "nova_events", ["not_before"])


def downgrade() -> None:
    op.drop_index("ix_nova_events_not_before", table_name="nova_events")
    op.drop_table("nova_events")
