"""identity resolution: event processing errors, group memberships, split records

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch_op:
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("merges") as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), server_default="merge", nullable=False)
        )
    op.create_table(
        "profile_groups",
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("group_id", sa.String(length=512), nullable=False),
        sa.Column(
            "traits", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"], ["profiles.id"], name=op.f("fk_profile_groups_profile_id_profiles")
        ),
        sa.PrimaryKeyConstraint("profile_id", "group_id", name=op.f("pk_profile_groups")),
    )


def downgrade() -> None:
    op.drop_table("profile_groups")
    with op.batch_alter_table("merges") as batch_op:
        batch_op.drop_column("kind")
    with op.batch_alter_table("events") as batch_op:
        batch_op.drop_column("error")
