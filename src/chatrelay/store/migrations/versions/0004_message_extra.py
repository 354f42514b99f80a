"""messages keep every key of the message as sent (tool calls, parts, reasoning...) in extra,
and the bytes of their inline attachments

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 19:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Both nullable: the messages stored before are plain text, which is exactly NULL here.
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("extra", sa.JSON(none_as_null=True), nullable=True))
        batch_op.add_column(sa.Column("attachment_bytes", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_messages_user_attachments",
            ["user_id", "attachment_bytes"],
            unique=False,
            sqlite_where=sa.text("attachment_bytes IS NOT NULL"),
            postgresql_where=sa.text("attachment_bytes IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_user_attachments")
        batch_op.drop_column("attachment_bytes")
        batch_op.drop_column("extra")
