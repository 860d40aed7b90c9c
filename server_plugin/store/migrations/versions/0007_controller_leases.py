"""controller_leases: the topology sync and the lost-state watchdog, single-flight across processes

Revision ID: 0007_controller_leases
Revises: 0006_nova_events
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_controller_leases"
down_revision = "0006_nova_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "controller_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("held_until", sa.BigInteger(), nullable=True),
        sa.Column("requested", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("running", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("ok_server", sa.String(length=255), nullable=True),
        sa.Column("ok_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("controller_leases")
