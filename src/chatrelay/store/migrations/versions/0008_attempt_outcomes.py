"""attempt_costs: how each attempt went (outcome, first token, duration, failed over), for
the figures per upstream

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempt_costs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("outcome", sa.String(length=16), nullable=False, server_default="ok")
        )
        batch_op.add_column(sa.Column("first_token_ms", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("duration_ms", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("failed_over", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.create_index(
            "ix_attempt_costs_upstream_created", ["upstream", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("attempt_costs", schema=None) as batch_op:
        batch_op.drop_index("ix_attempt_costs_upstream_created")
        batch_op.drop_column("failed_over")
        batch_op.drop_column("duration_ms")
        batch_op.drop_column("first_token_ms")
        batch_op.drop_column("outcome")
