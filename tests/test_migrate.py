from __future__ import annotations

import pytest
from conftest import make_config
from sqlalchemy import inspect

from cdp.db.engine import make_engine
from cdp.db.migrate import current_revision, head_revision, upgrade
from cdp.db.models import Base
from cdp.errors import NotMigratedError
from cdp.runtime import Runtime


def test_upgrade_from_empty_creates_every_table_and_is_idempotent(empty_database_url):
    engine = make_engine(empty_database_url)
    try:
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        upgrade(engine)  # re-run: nothing to do, nothing breaks
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_models_match_the_migrations(database_url):
    """Autogenerate finds nothing to do: every model change came with a revision."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_server_refuses_an_unmigrated_database(empty_database_url):
    with pytest.raises(NotMigratedError) as info:
        Runtime.start(make_config(empty_database_url))
    assert "has no cdp schema yet" in str(info.value)
    assert "run `cdp migrate`" in str(info.value)


def test_auto_migrate_upgrades_on_start(empty_database_url):
    from cdp.config import DatabaseConfig

    config = make_config(
        empty_database_url, database=DatabaseConfig(url=empty_database_url, auto_migrate=True)
    )
    runtime = Runtime.start(config)
    try:
        assert current_revision(runtime.engine) == head_revision()
    finally:
        runtime.close()
