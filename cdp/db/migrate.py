"""Running the alembic migrations from the installed package, and checking a database is current."""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from cdp.errors import NotMigratedError


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(files("cdp_migrations")))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_current(engine: Engine, auto_migrate: bool) -> None:
    """Refuse to run on a schema other than head, unless configured to upgrade it here."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if auto_migrate:
        upgrade(engine)
        return
    where = engine.url.render_as_string(hide_password=True)
    state = "has no cdp schema yet" if current is None else f"is at revision {current}"
    raise NotMigratedError(
        f"the database {where} {state}, and this version needs {head}: run `cdp migrate` "
        "(or set database.auto_migrate = true)"
    )
