"""Owner secrets on notes and lists (issue 22): the SHA-256 of each one's owner secret and when it was last edited;
rows written before are kept with no owner (nobody can change them). /lists pages by created_at, so it is indexed.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feature_lists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_feature_lists_created_at"), ["created_at"], unique=False)

    with op.batch_alter_table("feature_notes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feature_notes", schema=None) as batch_op:
        batch_op.drop_column("edited_at")
        batch_op.drop_column("owner_hash")

    with op.batch_alter_table("feature_lists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_lists_created_at"))
        batch_op.drop_column("edited_at")
        batch_op.drop_column("owner_hash")
