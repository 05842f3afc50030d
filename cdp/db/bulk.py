"""Bulk writes straight on the driver, for the few statements run once per ingested event.

`conn.execute(insert(table), rows)` spends more time in SQLAlchemy than in the database: for
every row it builds a parameter dict and runs each column's bind processor through several
layers. Here SQLAlchemy compiles the statement once per dialect (parameterised, with the driver's
placeholders and casts), the columns' own bind processors convert the values (so they are stored
exactly as SQLAlchemy would store them), and the rows go to `exec_driver_sql` as plain tuples
(dicts for a named paramstyle).

On PostgreSQL (psycopg 3), `insert_rows` with `COPY_MIN_ROWS` rows or more sends them with
`COPY table (columns) FROM STDIN` instead: the same converted values, written by psycopg's
`Copy.write_row` in the text format, so each lands in its column as the INSERT's cast would put
it (a `Jsonb` payload is its JSON text, read by jsonb's input function). The values must be of
their column's type, as the bind processors give them (a bool for a text column would be stored
as COPY writes it, `t`, not as the INSERT's cast would, `true`). The rows go as one stream of
data instead of a Bind/Execute each, and the server plans nothing per row. SQLite keeps
executemany: sqlite3 runs it in C over one prepared statement, SQLite's fast path already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Connection, Table, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

Processor = Callable[[Any], Any] | None

COPY_MIN_ROWS = 10
"""From this many rows, `insert_rows` uses COPY on PostgreSQL. A COPY costs one more round trip
(the server answers the COPY before the data goes): measured on the events table, it breaks even
with executemany at 2 to 5 rows and takes half the time from 100 rows on."""


def insert_rows(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """INSERT one row per item of `rows`, each holding the values of `columns` in order."""
    statement = _insert(conn.dialect, table, tuple(columns))
    converted = _convert(rows, statement.processors)
    if not converted:
        return
    # Only inside a transaction: SQLAlchemy must know of it to commit it (every caller has one).
    if statement.copy is not None and len(converted) >= COPY_MIN_ROWS and conn.in_transaction():
        _copy(conn, statement.copy, converted)
    else:
        _executemany(conn, statement, converted)


def update_rows(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    key: str,
    rows: Iterable[Sequence[Any]],
) -> None:
    """UPDATE `columns` of the row whose `key` column is the last value of each item of `rows`."""
    statement = _update(conn.dialect, table, tuple(columns), key)
    converted = _convert(rows, statement.processors)
    if converted:
        _executemany(conn, statement, converted)


def next_ids(conn: Connection, table: Table, count: int) -> list[int]:
    """`count` new ids for `table`'s autoincrement `id`, taken before inserting, so that the rows
    need no RETURNING (which makes SQLite insert row by row) nor a read-back.

    The caller must hold the identity lock: on SQLite it is the write lock, so max(id) + 1 is
    what SQLite would assign anyway; on PostgreSQL the ids come from the column's sequence.
    """
    if not count:
        return []
    if conn.dialect.name == "postgresql":
        return list(
            conn.execute(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"
                ),
                {"t": table.name, "n": count},
            ).scalars()
        )
    first = (conn.execute(select(func.max(table.c.id))).scalar() or 0) + 1
    return list(range(first, first + count))


@dataclass(frozen=True)
class _Statement:
    sql: str
    """As SQLAlchemy compiles it for the driver: its placeholders, its casts."""
    names: tuple[str, ...] | None
    """The bound parameters' names, in the order of each row's values; None: positional."""
    processors: tuple[Processor, ...]
    copy: str | None = None
    """The same insert as `COPY … FROM STDIN`, where the driver has COPY (psycopg 3)."""


def _executemany(conn: Connection, statement: _Statement, converted: list[tuple]) -> None:
    if statement.names is not None:  # a named paramstyle (psycopg's pyformat)
        names = statement.names
        conn.exec_driver_sql(
            statement.sql, [dict(zip(names, row, strict=True)) for row in converted]
        )
    else:
        conn.exec_driver_sql(statement.sql, converted)


def _copy(conn: Connection, sql: str, converted: list[tuple]) -> None:
    """COPY the rows on the connection's own transaction (savepoints included)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(sql) as copy:
            for row in converted:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy would raise it
        raise DBAPIError.instance(
            sql, None, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True
        ) from exc


def _convert(rows: Iterable[Sequence[Any]], processors: Sequence[Processor]) -> list[tuple]:
    active = [(i, p) for i, p in enumerate(processors) if p is not None]
    if not active:
        return [tuple(row) for row in rows]
    # A value shared by consecutive rows (a batch's received_at, a chunk's processed_at) is
    # converted once: the same object gives the same result.
    last_in: list[Any] = [object()] * len(processors)
    last_out: list[Any] = [None] * len(processors)
    out = []
    for row in rows:
        values = list(row)
        for i, process in active:
            value = values[i]
            if value is None:
                continue
            if value is not last_in[i]:
                last_in[i], last_out[i] = value, process(value)
            values[i] = last_out[i]
        out.append(tuple(values))
    return out


@lru_cache(maxsize=64)  # per (engine dialect, table, columns): a handful
def _insert(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> _Statement:
    statement = insert(table).values({c: bindparam(c) for c in columns})
    compiled = _compile(dialect, statement, columns, [table.c[c] for c in columns])
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return compiled
    quote = dialect.identifier_preparer
    names = ", ".join(quote.format_column(table.c[c]) for c in columns)
    copy = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
    return _Statement(compiled.sql, compiled.names, compiled.processors, copy)


@lru_cache(maxsize=64)
def _update(dialect: Dialect, table: Table, columns: tuple[str, ...], key: str) -> _Statement:
    # "b_": SQLAlchemy reserves the column names for the SET clause's own parameters.
    statement = (
        update(table)
        .where(table.c[key] == bindparam(f"b_{key}"))
        .values({c: bindparam(f"b_{c}") for c in columns})
    )
    names = tuple(f"b_{c}" for c in (*columns, key))
    return _compile(dialect, statement, names, [table.c[c] for c in (*columns, key)])


def _compile(
    dialect: Dialect, statement: Any, names: Sequence[str], columns: Sequence[Column[Any]]
) -> _Statement:
    compiled = statement.compile(dialect=dialect)
    processors = tuple(c.type._cached_bind_processor(dialect) for c in columns)
    if not compiled.positional:  # named (psycopg's pyformat): rows become dicts
        return _Statement(compiled.string, tuple(names), processors)
    # Positional (sqlite3's qmark): the values go in the placeholders' order, which is the
    # order of `names` for these simple statements.
    if tuple(compiled.positiontup) != tuple(names):
        raise NotImplementedError(f"placeholders in another order: {compiled.positiontup}")
    return _Statement(compiled.string, None, processors)
