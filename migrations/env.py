"""Alembic environment, for `cdp migrate` (which passes its connection) and the alembic CLI."""

from alembic import context
from sqlalchemy import text

from cdp.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes migrating at once (several servers starting) take turns.
        connection.execute(text("SELECT pg_advisory_xact_lock(7400001)"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs via table copies
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    # Plain `alembic upgrade head`: the database of the cdp config (cdp.toml / CDP_DATABASE_URL).
    from cdp.config import load_config
    from cdp.db.engine import make_engine

    engine = make_engine(load_config().database.url)
    with engine.begin() as conn:
        run_migrations(conn)
