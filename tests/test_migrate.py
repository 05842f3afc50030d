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


def test_upgrade_keeps_existing_data(empty_database_url):
    """Each revision upgrades a database that already holds data written at the one before."""
    from sqlalchemy import text

    engine = make_engine(empty_database_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO profiles (id, traits, trait_sources, created_at, updated_at) "
                    "VALUES "
                    "('p1', '{\"name\": \"Ada\"}', '{}', '2026-01-01', '2026-01-01'),"
                    " ('p2', '{}', '{}', '2026-01-01', '2026-01-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO merges (survivor_id, merged_id, reason, actor, created_at) "
                    "VALUES ('p1', 'p2', 'same email', 'test', '2026-01-02')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO events (source, message_id, type, timestamp, received_at, "
                    "payload) VALUES ('web', 'm1', 'track', '2026-01-01', '2026-01-01', "
                    '\'{"event": "x"}\')'
                )
            )
        upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT kind FROM merges")).scalar_one() == "merge"
            assert conn.execute(text("SELECT error FROM events")).one() == (None,)
            assert conn.execute(text("SELECT count(*) FROM profiles")).scalar_one() == 2
    finally:
        engine.dispose()
