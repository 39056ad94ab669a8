"""The first schema: the app database exactly as qscope wrote it before migrations (each feature's tables made
by SQLAlchemy's create_all on first use, as at commit 09f5f29).

Such a database may hold some of these tables already (a feature nobody used made none): upgrading it from no
revision keeps every table it has (qscope.appdb.migrate checks their columns against `metadata` first) and
creates the missing ones, which is why this revision creates with checkfirst.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

metadata = sa.MetaData()
WHEN = sa.DateTime(timezone=True)

sa.Table(
    "steer_runs",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=False),
)
sa.Table(
    "steer_eval_jobs",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("updated_at", WHEN, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("progress", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=False),
)
sa.Table(
    "steer_recipes",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("title", sa.String(400), nullable=False),
    sa.Column("verdict", sa.String(40), nullable=False),
    sa.Column("strength", sa.Float, nullable=True),
    sa.Column("result", sa.Text, nullable=False),
)
sa.Table(
    "feature_notes",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False, index=True),
    sa.Column("sae_id", sa.String(300), nullable=False, index=True),
    sa.Column("feature", sa.Integer, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("author", sa.String(80), nullable=False),
)
sa.Table(
    "feature_lists",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
)
sa.Table(
    "feature_list_items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("list_id", sa.String(16), sa.ForeignKey("feature_lists.id"), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("sae_id", sa.String(300), nullable=False),
    sa.Column("feature", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)
sa.Table(
    "discover_records",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", WHEN, nullable=False),
    sa.Column("model_id", sa.String(200), nullable=False),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("figure", sa.Float, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
)


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
