"""spend limits in money for users and API keys; disabled users

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 17:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # All nullable: NULL is "the default" (a user) or "none of its own" (a key), "enabled".
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spend_limit", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spend_limit", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("spend_limit")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled_at")
        batch_op.drop_column("spend_limit")
