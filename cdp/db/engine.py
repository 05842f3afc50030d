"""Creating the engine for the configured database, with the settings each backend needs."""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalise_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean the psycopg 3 driver this package installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def json_dumps(value: Any) -> str:
    """orjson for speed (payloads and traits are written on every event); the standard library
    for what orjson refuses (integers beyond 64 bits), so nothing valid is rejected."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False)


def json_loads(text: str | bytes) -> Any:
    """orjson, except for text with a run of 19+ digits: orjson reads integers beyond 64 bits as
    floats, and a stored value must come back as it went in."""
    if _LONG_DIGITS.search(text if isinstance(text, str) else text.decode()):
        return json.loads(text)
    return orjson.loads(text)


_LONG_DIGITS = re.compile(r"\d{19}")


def make_engine(url: str, immediate: bool = False, **kwargs: Any) -> Engine:
    """`immediate`: on SQLite, every transaction takes the write lock at BEGIN (for writers that
    read before they write, which would otherwise fail when another writer got there first)."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            # As many connections as request threads (Starlette's pool has 40): a new SQLite
            # connection costs its PRAGMAs, and waiting for one costs more.
            pool_size=20,
            max_overflow=30,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves (SQLAlchemy's
        # documented recipe) so that SAVEPOINTs work and BEGIN IMMEDIATE is possible.
        begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin))
        return engine
    return create_engine(
        url,
        pool_size=10,
        max_overflow=30,
        pool_pre_ping=True,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        **kwargs,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # see the "begin" listener above
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer. synchronous=NORMAL in WAL mode survives a process
    # crash (kill -9); only an OS crash or power loss can lose the last transactions.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Index-heavy writes (events, identifiers) touch pages all over the file: a 64 MB page
    # cache and checkpoints every ~40 MB of WAL instead of ~4 MB write each page less often.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.close()
