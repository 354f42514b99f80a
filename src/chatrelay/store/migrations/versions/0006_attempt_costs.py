"""attempt_costs: what every request to an upstream cost

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 17:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempt_costs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=True),
        sa.Column("api_key_id", sa.String(length=40), nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("upstream", sa.String(length=200), nullable=False),
        sa.Column("billing", sa.String(length=16), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("requested_tokens", sa.Integer(), nullable=False),
        sa.Column("paid_tokens", sa.Integer(), nullable=False),
        sa.Column("paid_cost", sa.BigInteger(), nullable=True),
        sa.Column("used_cost", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempt_costs")),
    )
    op.create_index("ix_attempt_costs_created", "attempt_costs", ["created_at"], unique=False)
    op.create_index(
        "ix_attempt_costs_user_created", "attempt_costs", ["user_id", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_attempt_costs_user_created", table_name="attempt_costs")
    op.drop_index("ix_attempt_costs_created", table_name="attempt_costs")
    op.drop_table("attempt_costs")
