"""segments and computed traits: definitions, memberships, computed values, scores

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Existing profiles get an empty object, so no reader ever sees NULL.
    with op.batch_alter_table("profiles") as batch:
        batch.add_column(sa.Column("computed_traits", JSON, server_default="{}", nullable=False))
    op.create_table(
        "segments",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_segments")),
    )
    op.create_table(
        "segment_memberships",
        sa.Column("segment_key", sa.String(length=128), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("segment_key", "profile_id", name=op.f("pk_segment_memberships")),
    )
    op.create_index(
        op.f("ix_segment_memberships_profile_id"), "segment_memberships", ["profile_id"]
    )
    op.create_table(
        "computed_traits",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_computed_traits")),
    )
    op.create_table(
        "scores",
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("profile_id", "name", name=op.f("pk_scores")),
    )


def downgrade() -> None:
    op.drop_table("scores")
    op.drop_table("computed_traits")
    op.drop_index(op.f("ix_segment_memberships_profile_id"), table_name="segment_memberships")
    op.drop_table("segment_memberships")
    op.drop_table("segments")
    with op.batch_alter_table("profiles") as batch:
        batch.drop_column("computed_traits")
