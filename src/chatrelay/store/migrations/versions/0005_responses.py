"""responses: what a Responses API request asked, beside the answer it made

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 17:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_responses_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["messages.id"], name=op.f("fk_responses_id_messages"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_responses_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    op.create_index(
        op.f("ix_responses_conversation_id"), "responses", ["conversation_id"], unique=False
    )
    op.create_index(op.f("ix_responses_user_id"), "responses", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_responses_user_id"), table_name="responses")
    op.drop_index(op.f("ix_responses_conversation_id"), table_name="responses")
    op.drop_table("responses")
