"""`sql` source: import the rows of a database table, or of a SELECT, from any SQLAlchemy URL.

Rows are read incrementally by keyset pagination on (cursor, key): each batch is one short query
`WHERE (cursor, key) > (last) ORDER BY cursor, key LIMIT batch_size`, so memory is bounded by the
batch, no transaction stays open between batches, and rows that tie on a non-unique cursor (say
`updated_at`) are neither skipped nor repeated at a batch boundary. The checkpoint is the last
(cursor, key) pair, typed in JSON so that datetimes, decimals and the like round-trip exactly.

A row's record key is its key and cursor values: reading it again is a replay, while a row
updated since (its cursor moved forward) is read again as a new version, with a new messageId.

Names are never interpolated into SQL: table and column names are checked against the database
(reflection, or the query's own result columns) and quoted by SQLAlchemy; values are bound.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

from cdp.components import RecordBatch, SourceConnector
from cdp.config import EnvValue
from cdp.db.engine import normalise_url
from cdp.errors import UserError
from cdp.hookspecs import hookimpl
from cdp.sources.records import SourceRecord

_NAME = re.compile(r"[^\W\d]\w*")
"""An unquoted SQL identifier (letters, digits, `_`; Unicode letters too): anything else is
refused at load, so an odd string can never reach the database, even quoted."""
_LEADING_COMMENTS = re.compile(r"\A(\s+|--[^\n]*(\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_READ_ONLY_DIALECTS = {"postgresql", "mysql", "mariadb"}


class SqlSourceError(UserError):
    """The source's database refused what its config asks for; the message names the option."""


class SqlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: SecretStr
    """A SQLAlchemy URL. From the environment (`{ env = "…" }`) always; literally in the file
    only when it holds no password (a SQLite file, or a user authenticated otherwise)."""
    query: str | None = None
    """A SELECT written by the admin, read as a subquery: `SELECT … FROM (query) AS src`."""
    table: str | None = Field(None, validate_default=True)
    """A table or view, `name` or `schema.name` (give either table or query)."""
    cursor: str
    """The column rows are read in order of, e.g. `updated_at` or `id`."""
    key: str | None = None
    """The column identifying a row; default: the table's single-column primary key, else the
    cursor."""
    batch_size: int = Field(1000, ge=1, le=100_000)
    """Rows per query, per transaction and per checkpoint."""

    @field_validator("url", mode="before")
    @classmethod
    def _url_secret(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, EnvValue):
            url = _parse_url(value)
            if url.password is not None or any("pass" in name.lower() for name in url.query):
                raise ValueError(
                    "holds a password; secrets are not kept in config files: "
                    'write url = { env = "VARIABLE_NAME" }'
                )
        return value

    @field_validator("url")
    @classmethod
    def _url_usable(cls, value: SecretStr) -> SecretStr:
        # Never echo the URL in an error: it may hold a password.
        dialect = _parse_url(value.get_secret_value()).get_dialect()
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            raise ValueError(
                f"the {dialect.name} driver {dialect.driver!r} is not installed ({exc}); install "
                f"it, or name an installed driver in the URL ({dialect.name}+<driver>://…)"
            ) from None
        return value

    @field_validator("query")
    @classmethod
    def _one_select(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip().rstrip(";").rstrip()
        body = _LEADING_COMMENTS.sub("", text)
        if not re.match(r"(?i)(select|with)\b", body):
            raise ValueError("must be a SELECT (or WITH … SELECT) statement")
        if ";" in text:
            raise ValueError("must be one SELECT statement, without ';'")
        return text

    @field_validator("table")
    @classmethod
    def _table_or_query(cls, value: str | None, info: ValidationInfo) -> str | None:
        query = info.data.get("query")
        if value is not None and query is not None:
            raise ValueError("give either table or query, not both")
        if value is None and query is None and "query" in info.data:
            raise ValueError('give table = "name" or query = "SELECT …"')
        if value is not None and not all(_NAME.fullmatch(part) for part in value.split(".", 1)):
            raise ValueError(
                f"{value!r} is not a table name (letters, digits and _, as name or schema.name); "
                "for any other name write a query"
            )
        return value

    @field_validator("cursor", "key")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a column name (letters, digits and _); "
                "for any other name write a query that renames the column"
            )
        return value


def _parse_url(text: str) -> URL:
    try:
        url = make_url(normalise_url(text))
        url.get_dialect()
    except NoSuchModuleError:  # a kind of ArgumentError
        raise ValueError("names an unknown database dialect") from None
    except ArgumentError:
        raise ValueError("is not a SQLAlchemy URL (dialect+driver://user@host/database)") from None
    return url


class _Rows:
    """What to read: the rows' columns, the cursor and key columns among them."""

    def __init__(self, source: sa.FromClause, cursor: str, key: str) -> None:
        self.columns = list(source.c)
        self.cursor = source.c[cursor]
        self.key = source.c[key]


class SqlSource(SourceConnector):
    name = "sql"
    Options = SqlOptions
    options: SqlOptions

    def read(self, checkpoint: str | None) -> Iterator[RecordBatch]:
        options = self.options
        url = make_url(normalise_url(options.url.get_secret_value()))
        _check_sqlite_file(url)
        engine = sa.create_engine(url)
        try:
            rows = self._rows(engine)
            last = _load_checkpoint(checkpoint)
            while True:
                stmt = sa.select(*rows.columns).where(
                    rows.cursor.is_not(None), rows.key.is_not(None)
                )
                if last is not None:
                    stmt = stmt.where(_after(rows, *last))
                order = [rows.cursor] if rows.key is rows.cursor else [rows.cursor, rows.key]
                stmt = stmt.order_by(*order).limit(options.batch_size)
                with _failing("reading rows failed"), engine.connect() as conn:
                    _read_only(conn)
                    found = conn.execute(stmt).mappings().all()
                if not found:
                    return
                records = [self._record(row, rows) for row in found]
                _check_unique(found, rows)
                last = (found[-1][rows.cursor.name], found[-1][rows.key.name])
                yield RecordBatch(records, _dump_checkpoint(*last))
                if len(found) < options.batch_size:
                    return
        finally:
            engine.dispose()

    def _rows(self, engine: Engine) -> _Rows:
        options = self.options
        with _failing("url: cannot connect to the database"):
            conn = engine.connect()
        with conn:
            _read_only(conn)
            if options.table is not None:
                source, names, primary = _reflect(conn, options.table)
                where = f"table {options.table!r}"
            else:
                assert options.query is not None
                source, primary = _subquery(conn, options.query), []
                names = list(source.c.keys())
                where = "the query's columns"
        for option in ("cursor", "key"):
            column = getattr(options, option)
            if column is not None and column not in names:
                raise SqlSourceError(
                    f"{option}: no column {column!r} in {where} (columns: {', '.join(names)})"
                )
        key = options.key or (primary[0] if len(primary) == 1 else options.cursor)
        return _Rows(source, options.cursor, key)

    def _record(self, row: Mapping[str, Any], rows: _Rows) -> SourceRecord:
        fields = {name: jsonable(value) for name, value in row.items()}
        key, cursor = fields[rows.key.name], fields[rows.cursor.name]
        # The cursor is part of the key: an updated row (cursor moved on) is a new record.
        ident = [key] if rows.key is rows.cursor else [key, cursor]
        text = json.dumps(ident, ensure_ascii=False, separators=(",", ":"), default=str)
        return SourceRecord(
            fields,
            key=text,
            location=self.options.table or "query",
            raw=json.dumps(fields, ensure_ascii=False, default=str),
        )


def _reflect(conn: Connection, name: str) -> tuple[sa.TableClause, list[str], list[str]]:
    schema, _, table_name = name.rpartition(".")
    inspector = sa.inspect(conn)
    try:
        columns = [c["name"] for c in inspector.get_columns(table_name, schema or None)]
        primary = inspector.get_pk_constraint(table_name, schema or None)
    except NoSuchTableError:
        hint = "" if schema else " (a table of another schema is written schema.name)"
        raise SqlSourceError(f"table: no table or view {name!r} in the database{hint}") from None
    except SQLAlchemyError as exc:
        raise SqlSourceError(f"table: cannot read its columns: {_reason(exc)}") from exc
    table = sa.table(table_name, *(sa.column(c) for c in columns), schema=schema or None)
    return table, columns, list(primary.get("constrained_columns") or [])


def _subquery(conn: Connection, query: str) -> sa.Subquery:
    # A colon is literal SQL here, not a bind parameter (`::date`, '12:30'); the newline ends a
    # trailing `-- comment` before the subquery's closing parenthesis.
    text = sa.text(query.replace(":", r"\:") + "\n")
    probe = sa.select(sa.literal_column("*")).select_from(text.columns().subquery("src")).limit(0)
    with _failing("query: the database refused it"):
        names = list(conn.execute(probe).keys())
    return text.columns(*(sa.column(n) for n in names)).subquery("src")


def _after(rows: _Rows, cursor: Any, key: Any) -> sa.ColumnElement[bool]:
    """Rows after (cursor, key) in (cursor, key) order; written out rather than as a row-value
    comparison, which not every database has, and so that an index on the cursor serves it."""
    # Untyped binds: the driver gets back the very value (and type) it gave us.
    c, k = (sa.literal(v, type_=sa.types.NullType()) for v in (cursor, key))
    if rows.key is rows.cursor:
        return rows.cursor > c
    return sa.and_(rows.cursor >= c, sa.or_(rows.cursor > c, rows.key > k))


def _check_unique(found: list[Any], rows: _Rows) -> None:
    # Rows come ordered by (cursor, key): two equal neighbours mean the key is not unique, and one
    # row would be dropped as a replay of the other (or skipped at a batch boundary).
    names = (rows.cursor.name, rows.key.name)
    for before, after in pairwise(found):
        if all(before[n] == after[n] for n in names):
            raise SqlSourceError(
                f"key: two rows have {rows.key.name} = {jsonable(after[rows.key.name])!r}"
                + ("" if rows.key is rows.cursor else f" at the same {rows.cursor.name}")
                + "; set key to a column that identifies a row (e.g. the primary key)"
            )


def _read_only(conn: Connection) -> None:
    """Read in a READ ONLY transaction where the database has them (it is never committed
    anyway): a query calling a function with side effects fails instead of writing."""
    if conn.dialect.name in _READ_ONLY_DIALECTS:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")


def _check_sqlite_file(url: URL) -> None:
    # sqlite3 would create a missing file, and the error would be a puzzling "no table".
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:" or url.query.get("uri"):
        return
    if not os.path.isfile(path):
        raise SqlSourceError(f"url: no SQLite database file at {path!r}")


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Turns a database error into a SqlSourceError saying what failed, and why."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise SqlSourceError(f"{what}: {_reason(exc)}") from exc


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's message, first line: without SQLAlchemy's echo of the SQL and its links."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# --- values ---------------------------------------------------------------------------------------

_TYPES: dict[str, Any] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "bytes": bytes.fromhex,
    "uuid": UUID,
}


def _typed(value: Any) -> Any:
    """A cursor or key value as JSON that `_untyped` turns back into the same Python value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, memoryview):
        value = value.tobytes()
    for name, kind in (("datetime", datetime), ("date", date), ("time", time)):
        if isinstance(value, kind):
            return {name: value.isoformat()}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, UUID):
        return {"uuid": str(value)}
    raise SqlSourceError(
        f"cursor: a {type(value).__name__} value cannot be a cursor or key "
        "(use a number, text, date or time column)"
    )


def _untyped(value: Any) -> Any:
    if isinstance(value, dict):
        ((name, text),) = value.items()
        return _TYPES[name](text)
    return value


def _dump_checkpoint(cursor: Any, key: Any) -> str:
    return json.dumps({"cursor": _typed(cursor), "key": _typed(key)}, separators=(",", ":"))


def _load_checkpoint(text: str | None) -> tuple[Any, Any] | None:
    if not text:
        return None
    data = json.loads(text)
    return _untyped(data["cursor"]), _untyped(data["key"])


def jsonable(value: Any) -> Any:
    """A column value as a JSON value the mapping can use: decimals as numbers (as text when a
    float would change them), dates and times in ISO-8601, bytes as text (hex unless UTF-8)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, memoryview | bytes | bytearray):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)  # UUID, network addresses, enums …


@hookimpl
def register_sources() -> list[type[SourceConnector]]:
    return [SqlSource]
