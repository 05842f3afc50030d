"""decisions: saved offers, the decision log, presentations and responses

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "offers",
        sa.Column("provider", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("definition", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider", "key", name=op.f("pk_offers")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("placement", sa.String(length=128), nullable=True),
        sa.Column("strategy", sa.String(length=128), nullable=False),
        sa.Column("strategy_version", sa.String(length=64), nullable=False),
        sa.Column("holdout", sa.Boolean(), nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("offers", JSON, nullable=False),
        sa.Column("filtered", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(
        op.f("ix_decisions_profile_id_created_at"), "decisions", ["profile_id", "created_at"]
    )
    op.create_table(
        "presentations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("offer_id", sa.String(length=255), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presentations")),
    )
    op.create_index(
        op.f("ix_presentations_profile_id_created_at"),
        "presentations",
        ["profile_id", "created_at"],
    )
    op.create_index(
        op.f("ix_presentations_offer_id_created_at"), "presentations", ["offer_id", "created_at"]
    )
    op.create_index(op.f("ix_presentations_decision_id"), "presentations", ["decision_id"])
    op.create_table(
        "responses",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=36), nullable=False),
        sa.Column("offer_id", sa.String(length=255), nullable=False),
        sa.Column("profile_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
    )
    op.create_index(
        op.f("ix_responses_profile_id_created_at"), "responses", ["profile_id", "created_at"]
    )
    op.create_index(
        op.f("ix_responses_offer_id_channel_outcome"),
        "responses",
        ["offer_id", "channel", "outcome"],
    )
    op.create_index(op.f("ix_responses_decision_id"), "responses", ["decision_id"])


def downgrade() -> None:
    op.drop_table("responses")
    op.drop_table("presentations")
    op.drop_index(op.f("ix_decisions_profile_id_created_at"), table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("offers")
