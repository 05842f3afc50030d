"""The running server's state: config, database, plugins. Built once per process (or per test)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cdp.bus import Bus
from cdp.config import Config
from cdp.db.engine import make_engine
from cdp.db.migrate import ensure_current
from cdp.identity.rules import Rules
from cdp.plugins import PluginHost


@dataclass
class Runtime:
    config: Config
    engine: Engine
    plugins: PluginHost
    sessions: sessionmaker[Session]
    writers: sessionmaker[Session]
    """Sessions for writers that read first (identity resolution): on SQLite their transactions
    take the write lock at BEGIN; on PostgreSQL they are ordinary sessions."""
    rules: Rules
    """The identity rules of `config.identity`, compiled once."""
    bus: Bus = field(default_factory=Bus)
    """What this process committed, for GraphQL subscriptions."""
    caches: dict[str, Any] = field(default_factory=dict)
    """Per-process state of the layers above the store (e.g. the decider's caches), by name."""

    @classmethod
    def start(
        cls,
        config: Config,
        extra_plugins: Iterable[tuple[str, object]] = (),
        check_schema: bool = True,
    ) -> Runtime:
        """Load plugins and open the database; refuse an un-migrated schema unless told not to."""
        plugins = PluginHost(config.plugins, extra=extra_plugins)
        engine = make_engine(config.database.url)
        try:
            if check_schema:
                ensure_current(engine, config.database.auto_migrate)
        except BaseException:
            engine.dispose()
            raise
        write_engine = engine
        if engine.dialect.name == "sqlite":
            write_engine = make_engine(config.database.url, immediate=True)
        runtime = cls(
            config,
            engine,
            plugins,
            sessions=sessionmaker(engine, expire_on_commit=False),
            writers=sessionmaker(write_engine, expire_on_commit=False),
            rules=Rules(config.identity),
        )
        plugins.notify("startup", runtime=runtime)
        return runtime

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self.sessions.begin() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A write transaction (see `writers`) that commits on success."""
        with self.writers.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
        self.writers.kw["bind"].dispose()
