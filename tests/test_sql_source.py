"""The `sql` source against real databases: a SQLite file, the PostgreSQL server and the
MariaDB/MySQL server, each read into the CDP store on every backend (the `backend` fixture).

The source databases: `CDP_TEST_SOURCE_POSTGRES_URL` (default: `CDP_TEST_DATABASE_URL`, else
postgresql+psycopg://postgres@127.0.0.1:5432/test), where each test gets a throw-away schema, and
`CDP_TEST_SOURCE_MYSQL_URL` (default mysql+pymysql://root@127.0.0.1:3306/test), where each test
gets a throw-away database. A server that does not answer is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from cdp_plugins.sql_source import SqlSourceError, _dump_checkpoint, _load_checkpoint, jsonable
from identity_helpers import live_profiles
from source_helpers import duplicated_message_ids, entry, events, rejects, started, state
from sqlalchemy.engine import make_url

from cdp.config import ComponentEntry, Config, EnvValue, PluginsConfig, load_config
from cdp.db.models import SourceState
from cdp.errors import ConfigError
from cdp.plugins import PluginHost
from cdp.sources.spec import load_sources
from cdp.sources.sync import SyncProgress, sync_source

POSTGRES_URL = os.environ.get(
    "CDP_TEST_SOURCE_POSTGRES_URL",
    os.environ.get("CDP_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
MYSQL_URL = os.environ.get("CDP_TEST_SOURCE_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
HOST = PluginHost(PluginsConfig())
T = datetime(2026, 3, 1, 10, 0, 0)
PROFILES = {
    "identifiers": {"user_id": "id", "email": "email"},
    "traits": {"first_name": "first_name", "plan": "plan", "balance": "balance"},
    "consents": {"newsletter": "newsletter"},
    "timestamp": "updated_at",
}


# --- the source databases ------------------------------------------------------------------------


@dataclass
class SourceDb:
    kind: str
    url: str
    engine: sa.Engine
    schema: str | None
    """PostgreSQL: the throw-away schema the tables are in (config names them schema.table)."""

    def name(self, table: str) -> str:
        return f"{self.schema}.{table}" if self.schema else table

    def tables(self) -> dict[str, sa.Table]:
        meta = sa.MetaData(schema=self.schema)
        tables = {
            "customers": sa.Table(
                "customers",
                meta,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                sa.Column("email", sa.String(100)),
                sa.Column("first_name", sa.String(50)),
                sa.Column("plan", sa.String(20)),
                sa.Column("newsletter", sa.Boolean),
                sa.Column("balance", sa.Numeric(10, 2)),
                sa.Column("updated_at", sa.DateTime),
            ),
            # No primary key: the connector must be told the key.
            "changes": sa.Table(
                "changes",
                meta,
                sa.Column("id", sa.Integer, nullable=False),
                sa.Column("email", sa.String(100)),
                sa.Column("updated_at", sa.DateTime),
            ),
            "orders": sa.Table(
                "orders",
                meta,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                sa.Column("customer_id", sa.Integer),
                sa.Column("status", sa.String(20)),
                sa.Column("total", sa.Numeric(10, 2)),
                sa.Column("created_at", sa.DateTime),
            ),
        }
        meta.create_all(self.engine)
        return tables

    def insert(self, table: sa.Table, *rows: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.insert(), list(rows))

    def update(self, table: sa.Table, id_: int, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.id == id_).values(**values))


_unreachable: dict[str, str] = {}


def _reachable(kind: str, url: str) -> None:
    if kind not in _unreachable:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        try:
            with engine.connect():
                _unreachable[kind] = ""
        except sa.exc.SQLAlchemyError as exc:
            _unreachable[kind] = str(getattr(exc, "orig", exc)).splitlines()[0]
        finally:
            engine.dispose()
    if _unreachable[kind]:
        shown = make_url(url).render_as_string(hide_password=True)
        pytest.skip(f"the {kind} server at {shown} is unreachable: {_unreachable[kind]}")


@contextmanager
def source_database(kind: str, tmp_path: Path) -> Iterator[SourceDb]:
    name = f"sqlsrc_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'crm.db'}"
        engine = sa.create_engine(url)
        yield SourceDb(kind, url, engine, None)
        engine.dispose()
        return
    if kind == "postgresql":
        _reachable(kind, POSTGRES_URL)
        url = POSTGRES_URL
        admin = sa.create_engine(url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        try:
            yield SourceDb(kind, url, admin, name)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
            admin.dispose()
        return
    _reachable(kind, MYSQL_URL)
    admin = sa.create_engine(MYSQL_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    url = make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    try:
        yield SourceDb(kind, url, engine, None)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE `{name}`")
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def source_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SourceDb]:
    with source_database(request.param, tmp_path) as db:
        yield db


def sql_entry(db: SourceDb, name: str = "crm", **keys: object) -> ComponentEntry:
    keys.setdefault("mapping", PROFILES)
    return entry(name=name, type_="sql", url=EnvValue(db.url), **keys)


def connector(url: str, **options: object):
    return HOST.create(
        "source", ComponentEntry(name="t", type="sql", url=EnvValue(url), **options), "s[0]"
    )


def customer(id_: int, at: datetime, plan: str = "silver", **fields: object) -> dict:
    row = {
        "id": id_,
        "email": f"user{id_}@example.com",
        "first_name": f"First {id_}",
        "plan": plan,
        "newsletter": id_ % 2 == 1,
        "balance": Decimal(f"{id_}.50"),
        "updated_at": at,
    }
    return {**row, **fields}


def at(hours: int) -> datetime:
    return T.replace(hour=T.hour + hours)


# --- importing through the pipeline --------------------------------------------------------------


def test_first_sync_imports_every_row_as_a_profile(source_db, database_url):
    customers = source_db.tables()["customers"]
    # Inserted out of order, with a tie on updated_at (rows 2 and 3) across the batches of 2.
    source_db.insert(
        customers,
        customer(3, at(1)),
        customer(1, at(0), balance=Decimal("12.00"), newsletter=None),
        customer(2, at(1), email=None),
        customer(5, at(3)),
        customer(4, at(2)),
    )
    table = source_db.name("customers")
    with started(
        database_url, sql_entry(source_db, table=table, cursor="updated_at", batch_size=2)
    ) as runtime:
        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.rejected) == (5, 5, 0)
        stored = events(runtime)
        assert [e.user_id for e in stored] == ["1", "2", "3", "4", "5"]
        assert {e.type for e in stored} == {"identify"}
        assert stored[0].payload["traits"] == {
            "first_name": "First 1",
            "plan": "silver",
            "balance": 12,  # a whole Decimal is an integer
            "email": "user1@example.com",
        }
        assert stored[1].payload["traits"]["balance"] == 2.5
        assert "email" not in stored[1].payload["traits"]  # NULL is absent
        assert "consent" not in stored[0].payload.get("context", {})
        assert stored[2].payload["context"]["consent"] == {
            "categoryPreferences": {"newsletter": True}
        }
        assert stored[3].payload["context"]["consent"] == {
            "categoryPreferences": {"newsletter": False}
        }
        assert [e.timestamp for e in stored] == [at(h).replace(tzinfo=UTC) for h in (0, 1, 1, 2, 3)]
        # The record key: the key column (the primary key, by default) and the cursor.
        assert re.fullmatch(r'crm:\[1,"2026-03-01[T ]10:00:00(\.0+)?"\]', stored[0].message_id)
        assert len(live_profiles(runtime)) == 5
        assert json.loads(state(runtime).checkpoint)["key"] == 5
        assert (state(runtime).status, state(runtime).rows_imported) == ("completed", 5)


def test_a_rerun_imports_only_new_and_updated_rows(source_db, database_url):
    customers = source_db.tables()["customers"]
    source_db.insert(customers, *(customer(i, at(i)) for i in (1, 2, 3)))
    table = source_db.name("customers")
    with started(database_url, sql_entry(source_db, table=table, cursor="updated_at")) as runtime:
        assert sync_source(runtime, "crm").imported == 3
        assert sync_source(runtime, "crm").read == 0

        source_db.update(customers, 2, plan="gold", updated_at=at(5))
        source_db.insert(customers, customer(4, at(4)))
        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.duplicates) == (2, 2, 0)
        stored = events(runtime)
        assert [e.user_id for e in stored] == ["1", "2", "3", "4", "2"]
        first, update = (e for e in stored if e.user_id == "2")
        assert first.message_id != update.message_id  # the update is not dropped as a replay
        assert update.payload["traits"]["plan"] == "gold"
        (profile,) = [
            p for p in live_profiles(runtime) if p.traits.get("email") == "user2@example.com"
        ]
        assert profile.traits["plan"] == "gold"
        assert sync_source(runtime, "crm").read == 0

        # Without its checkpoint the source is read again from the start: every row a replay.
        with runtime.transaction() as session:
            session.get(SourceState, "crm").checkpoint = None
        again = sync_source(runtime, "crm")
        assert (again.read, again.imported, again.duplicates) == (4, 0, 4)
        assert len(events(runtime)) == 5


def test_a_query_source_imports_events_and_rejects_what_cannot_be_mapped(source_db, database_url):
    tables = source_db.tables()
    customers, orders = tables["customers"], tables["orders"]
    source_db.insert(
        customers, customer(1, at(0)), customer(2, at(0)), customer(3, at(0), email=None)
    )
    order = {"status": "paid", "created_at": at(1)}
    source_db.insert(
        orders,
        {**order, "id": 10, "customer_id": 1, "total": Decimal("19.90")},
        {**order, "id": 11, "customer_id": 2, "total": Decimal("5.00"), "status": "cancelled"},
        {**order, "id": 12, "customer_id": 2, "total": Decimal("5.00")},
        {**order, "id": 13, "customer_id": 3, "total": Decimal("7.00")},  # no e-mail: rejected
        {**order, "id": 14, "customer_id": 1, "total": Decimal("1.00"), "status": "paid:test"},
    )
    # A colon and a percent sign inside a literal, and a trailing comment, stay the admin's SQL.
    query = (
        f"SELECT o.id AS order_id, c.email, o.total, o.created_at "
        f"FROM {source_db.name('orders')} o JOIN {source_db.name('customers')} c "
        "ON c.id = o.customer_id WHERE o.status = 'paid' AND o.status NOT LIKE '%:test' "
        "-- only paid orders"
    )
    mapping = {
        "identifiers": {"email": "email"},
        "event": "Order Completed",
        "timestamp": "created_at",
        "properties": {"revenue": "total", "order_id": "order_id"},
    }
    source = sql_entry(
        source_db, name="orders", kind="events", mapping=mapping, query=query, cursor="order_id"
    )
    with started(database_url, source) as runtime:
        summary = sync_source(runtime, "orders")
        assert (summary.read, summary.imported, summary.rejected) == (3, 2, 1)
        stored = events(runtime, "orders")
        assert [(e.type, e.name, e.message_id) for e in stored] == [
            ("track", "Order Completed", "orders:[10]"),
            ("track", "Order Completed", "orders:[12]"),
        ]
        assert [e.payload["properties"] for e in stored] == [
            {"revenue": 19.9, "order_id": 10},
            {"revenue": 5, "order_id": 12},
        ]
        (reject,) = rejects(runtime, "orders")
        assert reject.location == "query"
        assert reject.reason == "mapping.identifiers: every identifier field is empty ('email')"
        assert json.loads(reject.raw)["order_id"] == 13

        source_db.insert(orders, {**order, "id": 15, "customer_id": 2, "total": Decimal("2.25")})
        again = sync_source(runtime, "orders")
        assert (again.read, again.imported) == (1, 1)
        assert events(runtime, "orders")[-1].payload["properties"]["revenue"] == 2.25


class Stop(Exception):
    pass


def test_a_rerun_after_a_failure_midway_imports_each_row_exactly_once(source_db, database_url):
    customers = source_db.tables()["customers"]
    source_db.insert(customers, *(customer(i, at(i % 3)) for i in range(1, 8)))
    table = source_db.name("customers")
    with started(
        database_url, sql_entry(source_db, table=table, cursor="updated_at", batch_size=3)
    ) as runtime:

        def stop_after_two_batches(progress: SyncProgress) -> None:
            if progress.summary.read == 6:
                raise Stop("stopped by the test")

        with pytest.raises(Stop):
            sync_source(runtime, "crm", stop_after_two_batches)
        assert (state(runtime).status, state(runtime).rows_read) == ("failed", 6)
        assert len(events(runtime)) == 6
        # A row whose cursor is behind the checkpoint is not read (the cursor must only grow).
        source_db.insert(customers, customer(8, at(0)))

        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.duplicates) == (1, 1, 0)
        assert sorted(int(e.user_id) for e in events(runtime)) == list(range(1, 8))
        assert duplicated_message_ids(runtime) == 0


def test_database_faults_fail_the_sync_naming_the_option(source_db, database_url):
    source_db.tables()
    table = source_db.name("customers")
    bad = [
        sql_entry(source_db, name="a", table=source_db.name("custmers"), cursor="id"),
        sql_entry(source_db, name="b", table=table, cursor="changed_at"),
        sql_entry(source_db, name="c", table=table, cursor="id", key="customer_no"),
        sql_entry(source_db, name="d", query=f"SELECT id, emial FROM {table}", cursor="id"),
    ]
    with started(database_url, *bad) as runtime:
        errors = {}
        for source in bad:
            with pytest.raises(SqlSourceError) as info:
                sync_source(runtime, source.name)
            errors[source.name] = str(info.value)
            assert state(runtime, source.name).last_error == f"SqlSourceError: {info.value}"
    assert errors["a"].startswith(f"table: no table or view {source_db.name('custmers')!r}")
    columns = "columns: id, email, first_name, plan, newsletter, balance, updated_at"
    assert errors["b"] == f"cursor: no column 'changed_at' in table {table!r} ({columns})"
    assert errors["c"] == f"key: no column 'customer_no' in table {table!r} ({columns})"
    assert errors["d"].startswith("query: the database refused it: ")
    assert "emial" in errors["d"]


def test_a_database_that_cannot_be_reached_fails_naming_the_url(tmp_path):
    missing = tmp_path / "nowhere.db"
    with pytest.raises(SqlSourceError, match=r"^url: no SQLite database file at "):
        list(connector(f"sqlite:///{missing}", table="customers", cursor="id").read(None))
    assert not missing.exists()  # not created by the attempt
    closed = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=3"
    with pytest.raises(SqlSourceError, match=r"^url: cannot connect to the database: .+"):
        list(connector(closed, table="customers", cursor="id").read(None))


# --- reading: batches, ties, checkpoints ---------------------------------------------------------


def test_ties_on_the_cursor_across_batch_boundaries_are_neither_skipped_nor_repeated(source_db):
    changes = source_db.tables()["changes"]
    # Five rows share one updated_at; batches of 2 cut through them twice.
    times = {1: at(0), 2: at(1), 3: at(1), 4: at(1), 5: at(1), 6: at(1), 7: at(2), 8: at(2)}
    source_db.insert(
        changes,
        *(
            {"id": i, "email": f"u{i}@example.com", "updated_at": times[i]}
            for i in (6, 2, 8, 4, 1, 7, 3, 5)
        ),
    )
    options = {"table": source_db.name("changes"), "cursor": "updated_at", "key": "id"}
    batches = list(connector(source_db.url, batch_size=2, **options).read(None))
    assert [[r["id"] for r in b.records] for b in batches] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert len({r.key for b in batches for r in b.records}) == 8
    for number, batch in enumerate(batches):
        resumed = list(connector(source_db.url, batch_size=2, **options).read(batch.checkpoint))
        assert [r.key for b in resumed for r in b.records] == [
            r.key for b in batches[number + 1 :] for r in b.records
        ]
    checkpoint = json.loads(batches[1].checkpoint)
    assert checkpoint["key"] == 4
    if source_db.kind == "sqlite":  # SQLite holds date-times as text, and gives them back so
        assert checkpoint["cursor"].startswith("2026-03-01 11:00:00")
    else:
        assert checkpoint["cursor"] == {"datetime": "2026-03-01T11:00:00"}
    # Without a key the cursor would be the key, and it is not unique: refused, not lossy.
    options.pop("key")
    with pytest.raises(SqlSourceError, match=r"^key: two rows have updated_at = .*set key to"):
        list(connector(source_db.url, batch_size=10, **options).read(None))


def test_a_batch_is_one_bounded_query(source_db):
    customers = source_db.tables()["customers"]
    source_db.insert(customers, *(customer(i, at(0)) for i in range(1, 6)))
    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", listener)
    try:
        source = connector(
            source_db.url, table=source_db.name("customers"), cursor="id", batch_size=2
        )
        assert [len(b.records) for b in source.read(None)] == [2, 2, 1]
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", listener)
    # Each batch is its own LIMITed query: memory is bounded by batch_size, however big the table.
    reads = [s for s in statements if "email" in s]  # not the reflection's queries
    assert len(reads) == 3 and all("LIMIT" in s for s in reads)


def test_a_query_runs_in_a_read_only_transaction_on_postgresql(tmp_path):
    with source_database("postgresql", tmp_path) as db:
        with db.engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SEQUENCE "{db.schema}".ids')
        query = f"SELECT nextval('{db.schema}.ids') AS id"
        with pytest.raises(SqlSourceError, match="read-only transaction"):
            list(connector(db.url, query=query, cursor="id").read(None))
        with db.engine.connect() as conn:  # nothing was written
            last = conn.exec_driver_sql(f'SELECT last_value, is_called FROM "{db.schema}".ids')
            assert tuple(last.one()) == (1, False)


def test_values_become_json_and_checkpoints_round_trip():
    assert jsonable(Decimal("12.50")) == 12.5 and jsonable(Decimal("3.00")) == 3
    assert jsonable(Decimal("0.1")) == 0.1
    assert jsonable(Decimal("1.000000000000000000001")) == "1.000000000000000000001"
    assert jsonable(datetime(2026, 3, 1, 10, tzinfo=UTC)) == "2026-03-01T10:00:00+00:00"
    assert jsonable(date(2026, 3, 1)) == "2026-03-01" and jsonable(time(9, 30)) == "09:30:00"
    assert jsonable(b"ada") == "ada" and jsonable(memoryview(b"\xff\x00")) == "ff00"
    some_uuid = uuid.uuid4()
    assert jsonable(some_uuid) == str(some_uuid)
    assert jsonable({"a": [Decimal("1.5"), None]}) == {"a": [1.5, None]}
    for value in (
        datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 10),
        date(2026, 3, 1),
        Decimal("10.10"),
        b"\x00\xff",
        some_uuid,
        "2026-03-01 10:00:00",
        42,
        1.25,
    ):
        cursor, key = _load_checkpoint(_dump_checkpoint(value, 7))
        assert (cursor, key) == (value, 7) and type(cursor) is type(value)
    aware = _load_checkpoint(_dump_checkpoint(datetime(2026, 3, 1, 10, tzinfo=UTC), 1))[0]
    assert aware.tzinfo is not None


# --- config --------------------------------------------------------------------------------------


def config_error(**keys: object) -> str:
    config = Config(sources=[entry(type_="sql", **keys)])
    with pytest.raises(ConfigError) as info:
        load_sources(config, HOST)
    message = str(info.value)
    assert message.endswith(" (source 'crm')")
    return message.removesuffix(" (source 'crm')")


SQLITE = "sqlite:///crm.db"
TABLE = {"url": SQLITE, "table": "customers", "cursor": "id"}
QUERY = {"url": SQLITE, "cursor": "id"}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {**TABLE, "query": "SELECT 1 AS id"},
            "table: Value error, give either table or query, not both",
        ),
        (QUERY, 'table: Value error, give table = "name" or query = "SELECT …"'),
        ({"table": "customers", "cursor": "id"}, "url: Field required"),
        ({"url": SQLITE, "table": "customers"}, "cursor: Field required"),
        (
            {**TABLE, "table": "customers; DROP TABLE customers --"},
            "table: Value error, 'customers; DROP TABLE customers --' is not a table name",
        ),
        ({**TABLE, "table": 'customers" --'}, "table: Value error, 'customers\" --' is not"),
        ({**TABLE, "table": "a.b.c"}, "table: Value error, 'a.b.c' is not a table name"),
        (
            {**TABLE, "cursor": "id) OR (1=1"},
            "cursor: Value error, 'id) OR (1=1' is not a column name",
        ),
        ({**TABLE, "key": "id; --"}, "key: Value error, 'id; --' is not a column name"),
        (
            {**QUERY, "query": "DELETE FROM customers"},
            "query: Value error, must be a SELECT (or WITH … SELECT) statement",
        ),
        (
            {**QUERY, "query": "-- harmless?\nUPDATE customers SET plan = 'x'"},
            "query: Value error, must be a SELECT",
        ),
        (
            {**QUERY, "query": "SELECT 1 AS id; DROP TABLE customers"},
            "query: Value error, must be one SELECT statement, without ';'",
        ),
        (
            {**TABLE, "url": "postgresql://crm:s3cret@db/crm"},
            "url: Value error, holds a password; secrets are not kept in config files",
        ),
        (
            {**TABLE, "url": "postgresql://crm@db/crm?password=s3cret"},
            "url: Value error, holds a password",
        ),
        ({**TABLE, "url": "not a url"}, "url: Value error, is not a SQLAlchemy URL"),
        ({**TABLE, "url": "nosuchdb://h/db"}, "url: Value error, names an unknown database"),
        ({**TABLE, "batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({**TABLE, "tabel": "customers"}, "tabel: unknown key"),
    ],
)
def test_malformed_or_hostile_config_is_refused_naming_the_key(keys, expected):
    message = config_error(**keys)
    assert message.startswith(f"cdp.toml: sources[0].{expected}"), message
    assert "s3cret" not in message


def test_a_missing_driver_is_a_config_error():
    if importlib.util.find_spec("pymssql") is not None:
        pytest.skip("pymssql is installed here")
    message = config_error(url="mssql+pymssql://crm@db/crm", table="customers", cursor="id")
    assert message.startswith("cdp.toml: sources[0].url: Value error, the mssql driver 'pymssql'")


def test_the_url_with_its_password_comes_from_the_environment():
    url = EnvValue("postgresql://crm:s3cret@db.internal/crm")
    (source,) = load_sources(
        Config(sources=[entry(type_="sql", url=url, table="crm.customers", cursor="updated_at")]),
        HOST,
    )
    assert source.connector.options.url.get_secret_value() == url
    assert "s3cret" not in repr(source.connector.options)
    # A URL without a password may be written in the file; a query's leading comments are fine.
    (source,) = load_sources(
        Config(
            sources=[
                entry(type_="sql", url=SQLITE, query="/* x */ -- y\n select 1 AS id;", cursor="id")
            ]
        ),
        HOST,
    )
    assert source.connector.options.query == "/* x */ -- y\n select 1 AS id"


def test_the_examples_in_the_docs_are_valid(tmp_path):
    text = (Path(__file__).parent.parent / "docs" / "sources.md").read_text(encoding="utf-8")
    section = text[text.index("## Databases (`sql`)") :]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    names = []
    for number, block in enumerate(blocks):
        file = tmp_path / f"example{number}.toml"
        file.write_text(block, encoding="utf-8")
        environ = {"CRM_DATABASE_URL": "postgresql+psycopg://reader:pw@db.internal/crm"}
        names += [source.name for source in load_sources(load_config(file, environ), HOST)]
    assert names == ["customers", "paid_orders"]
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if 'type = "sql"' in b]
    (tmp_path / "readme.toml").write_text(block, encoding="utf-8")
    config = load_config(tmp_path / "readme.toml", {"CRM_DATABASE_URL": "postgresql://r:pw@db/crm"})
    assert [source.name for source in load_sources(config, HOST)] == ["customers"]
