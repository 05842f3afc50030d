"""Segments (issue 5): bulk recompute against hand-written SQL, and ingestion with definitions.

    python bench/run.py segments                       # both parts on SQLite, in a temp dir
    python bench/run.py segments -- --part recompute \\
        --database-url postgresql+psycopg://postgres@127.0.0.1/test
    python bench/segments.py --part recompute --profiles 100000 --events 1000000 --explain
    python bench/segments.py --part ingest --database-url postgresql+psycopg://postgres@127.0.0.1/test

**recompute**: a fresh migrated database is filled with SQL (`--profiles` profiles, `--events`
applied events over the last 120 days), one segment is saved ("did Order Completed with total >
50 at least 2 times in the last 30 days") and three things are timed, best of `--repeat` after a
warm-up: (a) a hand-written query for the same set, counted; (b) the compiled `members` query,
counted; (c) `service.recompute` of the segment, first run (everyone enters: memberships and
timeline events written) and steady state (nothing changes). Target: b/a and c/a within 2x.

**ingest**: bench/ingest.py's run (same traffic, same server) twice: with no definitions, and
with 50 segments and 20 computed traits defined before the timed traffic. Target: events/s with
definitions >= 0.5 x without.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement, Executable

from cdp.config import Config, DatabaseConfig
from cdp.db.engine import make_engine
from cdp.db.migrate import upgrade
from cdp.db.models import Profile, Segment, SegmentMembership, UTCDateTime, utcnow
from cdp.runtime import Runtime
from cdp.segments import definitions, service
from cdp.segments.compiler import Compiler
from cdp.segments.conditions import Condition
from cdp.segments.membership import SOURCE as TIMELINE_SOURCE

HERE = Path(__file__).resolve().parent
DAY = 86_400
KEY = "repeat_buyers"
CONDITION = {
    "event": "Order Completed",
    "where": [{"property": "total", "op": ">", "value": 50}],
    "within": "30d",
    "count": {"op": ">=", "value": 2},
}
GAP_HOURS = 6
"""No generated event is between 30 days and 30 days minus this ago, so no event leaves the
30-day window while the benchmark runs and the steady state really changes nothing."""


def _ingest_module() -> Any:
    """bench/ingest.py (bench/ is not a package), loaded once."""
    name = "bench_ingest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "ingest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


ingest = _ingest_module()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/segments.py")
    parser.add_argument("--part", choices=("all", "recompute", "ingest"), default="all")
    ingest.add_options(parser)  # --database-url, --users, --batches, --concurrency, --seed
    parser.add_argument(
        "--profiles", type=int, help="recompute: profiles (1,000,000 on PostgreSQL, 100,000 SQLite)"
    )
    parser.add_argument(
        "--events", type=int, help="recompute: events (10,000,000 on PostgreSQL, 1,000,000 SQLite)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="recompute: timed runs of each")
    parser.add_argument(
        "--explain", action="store_true", help="recompute: print the query plans (with timings)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat: at least 1")
    status = 0
    if args.part in ("all", "recompute"):
        status = max(status, bench_recompute(args))
    if args.part in ("all", "ingest"):
        status = max(status, bench_ingest(args))
    return status


# --- 1. bulk recompute ---------------------------------------------------------------------------


def bench_recompute(args: argparse.Namespace) -> int:
    with (
        tempfile.TemporaryDirectory() as tmp,
        ingest._database(args.database_url, Path(tmp)) as url,
    ):
        engine = make_engine(url)
        try:
            upgrade(engine)
            pg = engine.dialect.name == "postgresql"
            profiles = args.profiles or (1_000_000 if pg else 100_000)
            events = args.events or (10_000_000 if pg else 1_000_000)
            print(f"recompute: {_server(engine)}, {os.cpu_count()} cores", flush=True)
            started = time.perf_counter()
            now = utcnow()
            (_load_postgresql if pg else _load_sqlite)(engine, profiles, events, now)
            print(
                f"loaded {profiles:,} profiles and {events:,} events in "
                f"{time.perf_counter() - started:.0f} s ({_size(engine)})",
                flush=True,
            )
            return _time_recompute(engine, url, args)
        finally:
            engine.dispose()


def _time_recompute(engine: Engine, url: str, args: argparse.Namespace) -> int:
    runtime = Runtime.start(Config(database=DatabaseConfig(url=url)))
    try:
        with runtime.writing() as session:  # saved without the recompute upsert_segment does
            definitions.save_segment(session, runtime.config, KEY, CONDITION)
        with engine.connect() as conn:
            condition = definitions.load(conn).segments[KEY].condition
        dialect = engine.dialect.name
        print(f"segment {KEY!r}: {CONDITION}")
        if args.explain:
            _explain(engine, condition)

        timings: dict[str, list[float]] = {"a": [], "b": [], "c1": [], "c2": []}
        counts: set[int] = set()
        for i in range(args.repeat + 1):  # the first round is the warm-up
            now = utcnow()
            for label, count in (
                ("a", lambda c, now=now: _hand_written(c, dialect, now)),
                ("b", lambda c, now=now: _compiled(c, dialect, now, condition)),
            ):
                with engine.connect() as conn:
                    start = time.perf_counter()
                    counts.add(count(conn))
                    if i:
                        timings[label].append(time.perf_counter() - start)
        if len(counts) != 1:
            print(f"MISMATCH: hand-written and compiled counts differ: {sorted(counts)}")
            return 1
        (members,) = counts

        failed = False
        for i in range(args.repeat + 1):
            _reset(engine)
            start = time.perf_counter()
            changes = service.recompute(runtime, [KEY])
            elapsed = time.perf_counter() - start
            entered = sum(c.entered for c in changes)
            if entered != members or len(changes) != members:
                print(f"MISMATCH: first run: {entered} entered of {len(changes)}, not {members}")
                failed = True
            if i:
                timings["c1"].append(elapsed)
        _analyze(engine, "segment_memberships")
        for i in range(args.repeat + 1):
            start = time.perf_counter()
            changes = service.recompute(runtime, [KEY])
            elapsed = time.perf_counter() - start
            if changes:
                print(f"MISMATCH: steady state: {len(changes)} changes, expected none")
                failed = True
            if i:
                timings["c2"].append(elapsed)
        if args.explain:
            _explain_changes(engine, condition)
    finally:
        runtime.close()

    best = {k: min(v) for k, v in timings.items()}
    print(f"members: {members:,} (hand-written and compiled counts agree)")
    rows = (
        ("a", "(a) hand-written SQL, counted"),
        ("b", "(b) compiled members query, counted"),
        ("c1", f"(c) recompute, first run ({members:,} enter)"),
        ("c2", "(c) recompute, steady state (no change)"),
    )
    print(f"{'':46} {'best s':>8}  runs (s)")
    for key, label in rows:
        runs = " ".join(f"{t:.2f}" for t in timings[key])
        print(f"{label:46} {best[key]:8.2f}  {runs}")
    ratios = [(f"{k}/a", best[k] / best["a"]) for k in ("b", "c1", "c2")]
    met = all(r <= 2 for _, r in ratios)
    print(
        "ratios: "
        + ", ".join(f"{name} {r:.2f}" for name, r in ratios)
        + f" (target <= 2: {'met' if met else 'NOT met'})"
    )
    return 1 if failed else 0


def _hand_written(conn: Connection, dialect: str, now: datetime) -> int:
    total = (
        "(payload->'properties'->>'total')::float"
        if dialect == "postgresql"
        else "json_extract(payload, '$.properties.total')"
    )
    return int(conn.scalar(_hand_written_sql(total), {"since": now - timedelta(days=30)}) or 0)


def _hand_written_sql(total: str) -> Any:
    return text(
        "SELECT count(*) FROM (SELECT profile_id FROM events "
        f"WHERE name = 'Order Completed' AND timestamp >= :since AND {total} > 50 "
        "GROUP BY profile_id HAVING count(*) >= 2) AS buyers"
    ).bindparams(bindparam("since", type_=UTCDateTime()))


def _compiled(conn: Connection, dialect: str, now: datetime, condition: Condition) -> int:
    members = Compiler(dialect, now).members(condition).subquery()
    return int(conn.scalar(select(func.count()).select_from(members)) or 0)


def _reset(engine: Engine) -> None:
    """Back to no memberships and no timeline events, for another first run."""
    with engine.begin() as conn:
        conn.execute(SegmentMembership.__table__.delete())
        conn.execute(text("DELETE FROM events WHERE source = :s"), {"s": TIMELINE_SOURCE})
        conn.execute(Segment.__table__.update().values(computed_at=None))
    if engine.dialect.name == "postgresql":
        with _autocommit(engine) as conn:
            conn.exec_driver_sql("VACUUM events")
            conn.exec_driver_sql("VACUUM ANALYZE segment_memberships")


def _analyze(engine: Engine, table: str) -> None:
    with _autocommit(engine) as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")


@contextmanager
def _autocommit(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn
        if engine.dialect.name == "sqlite":
            conn.commit()


# --- query plans ---------------------------------------------------------------------------------


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, its parameters bound as SQLAlchemy binds them."""

    inherit_cache = False

    def __init__(self, statement: Any, prefix: str) -> None:
        self.statement = statement
        self.prefix = prefix


@compiles(Explain)
def _compile_explain(element: Explain, compiler: Any, **kw: Any) -> str:
    return f"{element.prefix} {compiler.process(element.statement, **kw)}"


def _plan(engine: Engine, title: str, statement: Any, params: dict[str, Any] | None = None) -> None:
    pg = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS)" if pg else "EXPLAIN QUERY PLAN"
    with engine.connect() as conn:
        start = time.perf_counter()
        rows = conn.execute(Explain(statement, prefix), params or {}).all()
        elapsed = time.perf_counter() - start
    print(f"\n-- {title}" + ("" if pg else f" (plan only; explained in {elapsed:.2f} s)"))
    for row in rows:
        print("   " + (row[0] if pg else "  " * (row[1] > 0) + str(row[-1])))
    print(flush=True)


def _explain(engine: Engine, condition: Condition) -> None:
    dialect = engine.dialect.name
    now = utcnow()
    total = (
        "(payload->'properties'->>'total')::float"
        if dialect == "postgresql"
        else "json_extract(payload, '$.properties.total')"
    )
    _plan(engine, "(a) hand-written", _hand_written_sql(total), {"since": now - timedelta(30)})
    members = Compiler(dialect, now).members(condition).subquery()
    _plan(engine, "(b) compiled members", select(func.count()).select_from(members))


def _explain_changes(engine: Engine, condition: Condition) -> None:
    compiler = Compiler(engine.dialect.name, utcnow())
    _plan(engine, "(c) compiled changes, steady state", compiler.changes(KEY, condition))


# --- loading -------------------------------------------------------------------------------------
#
# Profiles: id i -> '00000000-0000-7000-8000-' + 12 hex digits of i, traits email / plan / visits /
# country. Events: a handful of names and types in realistic shares, each with the properties
# a shop would send, timestamps spread evenly over the last 120 days (in insertion order, as a
# live table is), a profile drawn with a long tail (profile p gets events in proportion to
# 1/sqrt(p): a few heavy users, most people with a handful of events), processed_at set.
#
#   share  type   name              properties
#   30 %   track  Product Viewed    product_id, sku, price, category
#   12 %   track  Product Added     sku, price, quantity
#    8 %   track  Checkout Started  total, currency      (a `total` outside Order Completed)
#   10 %   track  Order Completed   order_id, total (10 to 300, most below 100), currency, items
#   12 %   track  Login             method
#    2 %   track  Signed Up         plan
#   26 %   page   Home / Product / Cart / Search    path, referrer, title

_NAMES = (
    (0.30, "track", "Product Viewed"),
    (0.42, "track", "Product Added"),
    (0.50, "track", "Checkout Started"),
    (0.60, "track", "Order Completed"),
    (0.72, "track", "Login"),
    (0.74, "track", "Signed Up"),
)
_PG_PROFILES = """
INSERT INTO profiles (id, traits, trait_sources, computed_traits, created_at, updated_at)
SELECT '00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'),
       jsonb_build_object(
         'email', 'person' || g || '@example.com',
         'plan', CASE WHEN g % 10 < 7 THEN 'free' WHEN g % 10 < 9 THEN 'pro' ELSE 'enterprise' END,
         'visits', 1 + (g * 7919) % 50,
         'country', (ARRAY['DE', 'FR', 'US', 'GB', 'NL', 'ES'])[(1 + g % 6)::int]),
       '{}'::jsonb, '{}'::jsonb,
       CAST(:now AS timestamptz) - make_interval(secs => (g * 104729) % 10368000), :now
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g
"""
_PG_EVENTS = """
INSERT INTO events (source, message_id, type, name, profile_id, user_id, timestamp,
                    original_timestamp, sent_at, received_at, processed_at, payload)
SELECT 'bench', 'msg-' || g, type, name, '00000000-0000-7000-8000-' || lpad(to_hex(p), 12, '0'),
       'user-' || p, ts, ts, ts, ts, ts,
       jsonb_build_object(
         'type', type, CASE WHEN type = 'page' THEN 'name' ELSE 'event' END, name,
         'userId', 'user-' || p, 'messageId', 'msg-' || g,
         'timestamp', to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
         'properties', CASE name
           WHEN 'Product Viewed' THEN jsonb_build_object(
             'product_id', 'P-' || (g % 5000), 'sku', 'SKU-' || (100 + g % 900),
             'price', round((5 + 295 * r3)::numeric, 2),
             'category', (ARRAY['shoes', 'shirts', 'bags', 'hats', 'toys'])[(1 + g % 5)::int])
           WHEN 'Product Added' THEN jsonb_build_object(
             'sku', 'SKU-' || (100 + g % 900), 'price', round((5 + 295 * r3)::numeric, 2),
             'quantity', 1 + g % 3)
           WHEN 'Checkout Started' THEN jsonb_build_object(
             'total', round((10 + 390 * r3)::numeric, 2), 'currency', 'EUR')
           WHEN 'Order Completed' THEN jsonb_build_object(
             'order_id', 'O-' || g, 'total', round((10 + 290 * r3 * r3)::numeric, 2),
             'currency', 'EUR', 'items', 1 + g % 4)
           WHEN 'Login' THEN jsonb_build_object(
             'method', CASE WHEN g % 3 = 0 THEN 'google' ELSE 'password' END)
           WHEN 'Signed Up' THEN jsonb_build_object('plan', 'free')
           ELSE jsonb_build_object(
             'path', '/' || lower(name), 'referrer', 'https://www.google.com/', 'title', name)
         END,
         'context', jsonb_build_object(
           'library', jsonb_build_object('name', 'analytics.js', 'version', '2.11.1'),
           'ip', '203.0.113.7',
           'userAgent', 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'))
FROM (
  SELECT g, r3,
         least(:profiles, 1 + floor(:profiles * r2 * r2)::bigint) AS p,
         CAST(:now AS timestamptz) - make_interval(secs => CASE
           WHEN age > :gap_from AND age <= :gap_to THEN age + :gap ELSE age END) AS ts,
         CASE {types} ELSE 'page' END AS type,
         CASE {names}
           ELSE (ARRAY['Home', 'Product', 'Cart', 'Search'])[(1 + g % 4)::int] END AS name
  FROM (
    SELECT g, r1, r2, r3, (:events - g)::float8 / :events * :span + r4 * 60 AS age
    FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3, random() AS r4
          FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g) AS drawn
  ) AS aged
) AS chosen
"""
_SQLITE_PROFILES = """
INSERT INTO profiles (id, traits, trait_sources, computed_traits, created_at, updated_at)
WITH RECURSIVE seq(g) AS (SELECT :lo UNION ALL SELECT g + 1 FROM seq WHERE g < :hi)
SELECT printf('00000000-0000-7000-8000-%012x', g),
       json_object(
         'email', 'person' || g || '@example.com',
         'plan', CASE WHEN g % 10 < 7 THEN 'free' WHEN g % 10 < 9 THEN 'pro' ELSE 'enterprise' END,
         'visits', 1 + (g * 7919) % 50,
         'country', json_extract('["DE", "FR", "US", "GB", "NL", "ES"]', '$[' || (g % 6) || ']')),
       '{}', '{}',
       strftime('%Y-%m-%d %H:%M:%f', :now - (g * 104729) % 10368000, 'unixepoch') || '000',
       strftime('%Y-%m-%d %H:%M:%f', :now, 'unixepoch') || '000'
FROM seq
"""
_SQLITE_EVENTS = """
INSERT INTO events (source, message_id, type, name, profile_id, user_id, timestamp,
                    original_timestamp, sent_at, received_at, processed_at, payload)
WITH RECURSIVE seq(g) AS (SELECT :lo UNION ALL SELECT g + 1 FROM seq WHERE g < :hi),
drawn AS MATERIALIZED (  -- each random() once per row, not once per use
  SELECT g, random() / 18446744073709551616.0 + 0.5 AS r1,
         random() / 18446744073709551616.0 + 0.5 AS r2,
         random() / 18446744073709551616.0 + 0.5 AS r3,
         random() / 18446744073709551616.0 + 0.5 AS r4
  FROM seq
),
aged AS (
  SELECT g, r1, r2, r3, CAST(:events - g AS REAL) / :events * :span + r4 * 60 AS age FROM drawn
),
chosen AS MATERIALIZED (
  SELECT g, r3, min(:profiles, 1 + CAST(:profiles * r2 * r2 AS INTEGER)) AS p,
         :now - CASE WHEN age > :gap_from AND age <= :gap_to THEN age + :gap ELSE age END AS at,
         CASE {types} ELSE 'page' END AS type,
         CASE {names} ELSE json_extract('["Home", "Product", "Cart", "Search"]',
                                        '$[' || (g % 4) || ']') END AS name
  FROM aged
)
SELECT 'bench', 'msg-' || g, type, name, printf('00000000-0000-7000-8000-%012x', p),
       'user-' || p, ts, ts, ts, ts, ts,
       json_object(
         'type', type, CASE WHEN type = 'page' THEN 'name' ELSE 'event' END, name,
         'userId', 'user-' || p, 'messageId', 'msg-' || g,
         'timestamp', strftime('%Y-%m-%dT%H:%M:%fZ', at, 'unixepoch'),
         'properties', CASE name
           WHEN 'Product Viewed' THEN json_object(
             'product_id', 'P-' || (g % 5000), 'sku', 'SKU-' || (100 + g % 900),
             'price', round(5 + 295 * r3, 2),
             'category', json_extract('["shoes", "shirts", "bags", "hats", "toys"]',
                                      '$[' || (g % 5) || ']'))
           WHEN 'Product Added' THEN json_object(
             'sku', 'SKU-' || (100 + g % 900), 'price', round(5 + 295 * r3, 2),
             'quantity', 1 + g % 3)
           WHEN 'Checkout Started' THEN json_object(
             'total', round(10 + 390 * r3, 2), 'currency', 'EUR')
           WHEN 'Order Completed' THEN json_object(
             'order_id', 'O-' || g, 'total', round(10 + 290 * r3 * r3, 2),
             'currency', 'EUR', 'items', 1 + g % 4)
           WHEN 'Login' THEN json_object(
             'method', CASE WHEN g % 3 = 0 THEN 'google' ELSE 'password' END)
           WHEN 'Signed Up' THEN json_object('plan', 'free')
           ELSE json_object(
             'path', '/' || lower(name), 'referrer', 'https://www.google.com/', 'title', name)
         END,
         'context', json_object(
           'library', json_object('name', 'analytics.js', 'version', '2.11.1'),
           'ip', '203.0.113.7',
           'userAgent', 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0'))
FROM (SELECT *, strftime('%Y-%m-%d %H:%M:%f', at, 'unixepoch') || '000' AS ts FROM chosen)
"""


def _cases() -> tuple[str, str]:
    types = " ".join(f"WHEN r1 < {share} THEN '{type_}'" for share, type_, _ in _NAMES)
    names = " ".join(f"WHEN r1 < {share} THEN '{name}'" for share, _, name in _NAMES)
    return types, names


def _event_params(profiles: int, events: int) -> dict[str, Any]:
    return {
        "profiles": profiles,
        "events": events,
        "span": 120 * DAY,
        "gap_from": 30 * DAY - GAP_HOURS * 3600,
        "gap_to": 30 * DAY,
        "gap": GAP_HOURS * 3600,
    }


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(1, total + 1, size):
        yield lo, min(total, lo + size - 1)


def _progress(what: str, hi: int, total: int, started: float) -> None:
    print(f"  {what}: {hi:,} of {total:,} ({time.perf_counter() - started:.0f} s)", flush=True)


def _load_postgresql(engine: Engine, profiles: int, events: int, now: datetime) -> None:
    types, names = _cases()
    events_sql = text(_PG_EVENTS.format(types=types, names=names))
    started = time.perf_counter()
    with engine.begin() as conn:
        recreate = _drop_secondary_postgresql(conn)
    for lo, hi in _chunks(profiles, 1_000_000):
        with engine.begin() as conn:
            conn.execute(text(_PG_PROFILES), {"now": now, "lo": lo, "hi": hi})
        _progress("profiles", hi, profiles, started)
    for lo, hi in _chunks(events, 1_000_000):
        with engine.begin() as conn:
            params = {"now": now, "lo": lo, "hi": hi, **_event_params(profiles, events)}
            conn.execute(events_sql, params)
        _progress("events", hi, events, started)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '1GB'")
        for statement in recreate:
            conn.exec_driver_sql(statement)
    _progress("indexes rebuilt", events, events, started)
    with _autocommit(engine) as conn:
        conn.exec_driver_sql("VACUUM ANALYZE profiles")
        conn.exec_driver_sql("VACUUM ANALYZE events")
    _progress("vacuumed and analyzed", events, events, started)


def _drop_secondary_postgresql(conn: Connection) -> list[str]:
    """Drop the unique constraints and indexes of profiles and events (not the primary keys),
    returning the statements that recreate them exactly: building them after loading is much
    faster than maintaining them row by row."""
    recreate = []
    for name, table, definition in conn.execute(
        text(
            "SELECT conname, conrelid::regclass::text, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'u' "
            "AND conrelid IN ('profiles'::regclass, 'events'::regclass)"
        )
    ):
        conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        recreate.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for name, definition in conn.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('profiles', 'events') "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
    ):
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
        recreate.append(definition)
    return recreate


def _load_sqlite(engine: Engine, profiles: int, events: int, now: datetime) -> None:
    types, names = _cases()
    events_sql = _SQLITE_EVENTS.format(types=types, names=names)
    epoch = now.timestamp()
    started = time.perf_counter()
    with engine.begin() as conn:
        indexes = conn.execute(
            text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                "AND tbl_name IN ('profiles', 'events')"
            )
        ).all()
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
    for lo, hi in _chunks(profiles, 250_000):
        with engine.begin() as conn:
            conn.execute(text(_SQLITE_PROFILES), {"now": epoch, "lo": lo, "hi": hi})
        _progress("profiles", hi, profiles, started)
    for lo, hi in _chunks(events, 250_000):
        with engine.begin() as conn:
            params = {"now": epoch, "lo": lo, "hi": hi, **_event_params(profiles, events)}
            conn.execute(text(events_sql), params)
        _progress("events", hi, events, started)
    with engine.begin() as conn:
        for _, sql in indexes:
            conn.exec_driver_sql(sql)
        conn.exec_driver_sql("ANALYZE")
    _progress("indexes rebuilt and analyzed", events, events, started)


def _server(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            version = conn.scalar(text("SHOW server_version"))
            settings = ", ".join(
                f"{name} {conn.scalar(text(f'SHOW {name}'))}"
                for name in ("shared_buffers", "work_mem", "max_parallel_workers_per_gather")
            )
            return f"PostgreSQL {version} ({settings})"
        return f"SQLite {conn.scalar(text('SELECT sqlite_version()'))}"


def _size(engine: Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            return (
                "events "
                + str(conn.scalar(text("SELECT pg_size_pretty(pg_total_relation_size('events'))")))
                + " with indexes, profiles "
                + str(
                    conn.scalar(text("SELECT pg_size_pretty(pg_total_relation_size('profiles'))"))
                )
            )
    path = Path(engine.url.database or "")
    return f"database file {path.stat().st_size / 2**20:,.0f} MB"


# --- 2. ingestion with definitions ---------------------------------------------------------------
#
# Over what bench/ingest.py sends: identify (traits email, plan, visits), track Product Viewed /
# Product Added / Order Completed (properties sku, price), page Home (path, referrer), all
# timestamped within the last 24 hours.

COMPUTED: dict[str, dict[str, Any]] = {
    "orders": {"aggregate": "count", "event": "Order Completed"},
    "orders_1h": {"aggregate": "count", "event": "Order Completed", "within": "1h"},
    "orders_7d": {"aggregate": "count", "event": "Order Completed", "within": "7d"},
    "revenue": {"aggregate": "sum", "event": "Order Completed", "property": "price"},
    "revenue_7d": {
        "aggregate": "sum",
        "event": "Order Completed",
        "property": "price",
        "within": "7d",
    },
    "largest_order": {"aggregate": "max", "event": "Order Completed", "property": "price"},
    "smallest_order": {"aggregate": "min", "event": "Order Completed", "property": "price"},
    "average_order": {"aggregate": "avg", "event": "Order Completed", "property": "price"},
    "views": {"aggregate": "count", "event": "Product Viewed"},
    "views_6h": {"aggregate": "count", "event": "Product Viewed", "within": "6h"},
    "adds": {"aggregate": "count", "event": "Product Added"},
    "expensive_views": {
        "aggregate": "count",
        "event": "Product Viewed",
        "where": [{"property": "price", "op": ">", "value": 200}],
    },
    "last_viewed_sku": {"aggregate": "last", "event": "Product Viewed", "property": "sku"},
    "first_viewed_sku": {"aggregate": "first", "event": "Product Viewed", "property": "sku"},
    "viewed_skus": {"aggregate": "unique_count", "event": "Product Viewed", "property": "sku"},
    "favourite_sku": {"aggregate": "most_frequent", "event": "Product Viewed", "property": "sku"},
    "bought_skus": {"aggregate": "unique_list", "event": "Order Completed", "property": "sku"},
    "page_views": {"aggregate": "count", "event": "*", "type": "page"},
    "last_path": {"aggregate": "last", "event": "*", "type": "page", "property": "path"},
    "events_24h": {"aggregate": "count", "event": "*", "within": "24h"},
}


def _trait(name: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"trait": name, "op": op} | ({} if op == "exists" else {"value": value})


def _computed(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"computed": name, "op": op, "value": value}


def _did(event: str, within: str | None = None, **more: Any) -> dict[str, Any]:
    return {"event": event} | ({"within": within} if within else {}) | more


def _count(op: str, value: Any) -> dict[str, Any]:
    return {"count": {"op": op, "value": value}}


def _of(aggregate: str, prop: str, op: str, value: Any) -> dict[str, Any]:
    return {aggregate: {"property": prop, "op": op, "value": value}}


OC, PV, PA = "Order Completed", "Product Viewed", "Product Added"
SEGMENTS: dict[str, dict[str, Any]] = {
    # traits (10)
    "plan_pro": _trait("plan", "=", "pro"),
    "plan_free": _trait("plan", "=", "free"),
    "frequent_visitors": _trait("visits", ">", 30),
    "mid_visits": _trait("visits", "between", [10, 20]),
    "has_email_trait": _trait("email", "exists"),
    "example_domain": _trait("email", "contains", "@example.com"),
    "not_pro": {"not": _trait("plan", "=", "pro")},
    "paying_plans": _trait("plan", "in", ["pro", "enterprise"]),
    "low_visit_free": {"and": [_trait("plan", "=", "free"), _trait("visits", "<", 5)]},
    "pro_or_frequent": {"or": [_trait("plan", "=", "pro"), _trait("visits", ">=", 45)]},
    # identifiers and consent (4)
    "known_users": {"identifier": "user_id", "op": "exists"},
    "has_email_id": {"identifier": "email", "op": "exists"},
    "anonymous_only": {"not": {"identifier": "user_id", "op": "exists"}},
    "marketing_ok": {"consent": "marketing", "op": "=", "value": "granted"},
    # event history, mostly with windows (15)
    "bought_1h": _did(OC, "1h"),
    "bought_24h": _did(OC, "24h"),
    "repeat_buyers_7d": _did(OC, "7d", **_count(">=", 2)),
    "big_spenders_7d": _did(OC, "7d", **_of("sum", "price", ">", 400)),
    "big_order_1d": _did(OC, "1d", where=[{"property": "price", "op": ">", "value": 250}]),
    "browsers_6h": _did(PV, "6h", **_count(">=", 3)),
    "cart_abandoners": {"and": [_did(PA, "24h"), {"not": _did(OC, "24h")}]},
    "window_shoppers": {"and": [_did(PV, "7d", **_count(">=", 5)), {"not": _did(OC)}]},
    "never_bought": {"not": _did(OC)},
    "cheap_viewers": _did(PV, "7d", **_of("max", "price", "<", 50)),
    "high_average": _did(OC, "30d", **_of("avg", "price", ">", 150)),
    "page_visitors_1h": {"event": "*", "type": "page", "within": "1h"},
    "active_24h": {"event": "*", "within": "24h", **_count(">=", 3)},
    "sku_500_fans": _did(PV, "7d", where=[{"property": "sku", "op": "=", "value": "SKU-500"}]),
    "no_small_orders": _did(OC, "30d", **_of("min", "price", ">=", 100)),
    # computed traits (12)
    "loyal": _computed("orders", ">=", 3),
    "high_value": _computed("revenue", ">", 500),
    "recent_spenders": _computed("revenue_7d", ">", 300),
    "explorers": _computed("viewed_skus", ">=", 5),
    "bought_sku_500": {"computed": "bought_skus", "op": "contains", "value": "SKU-500"},
    "big_ticket": _computed("largest_order", ">=", 280),
    "bargain_hunters": _computed("smallest_order", "<=", 20),
    "mid_average": _computed("average_order", "between", [100, 200]),
    "engaged": _computed("events_24h", ">=", 10),
    "readers": _computed("page_views", ">=", 2),
    "orders_this_hour": _computed("orders_1h", ">=", 1),
    "viewers_not_adding": {"and": [_computed("views", ">=", 3), _computed("adds", "=", 0)]},
    # segments of segments (5)
    "vip": {"and": [{"segment": "high_value"}, {"segment": "plan_pro"}]},
    "vip_active": {"and": [{"segment": "vip"}, {"segment": "active_24h"}]},
    "lapsed_vip": {"and": [{"segment": "vip"}, {"not": {"segment": "bought_24h"}}]},
    "win_back": {"or": [{"segment": "cart_abandoners"}, {"segment": "window_shoppers"}]},
    "pro_browsers": {"and": [{"segment": "plan_pro"}, {"segment": "browsers_6h"}]},
    # mixed (4)
    "pro_repeat_buyers": {"and": [_trait("plan", "=", "pro"), _did(OC, "7d", **_count(">=", 2))]},
    "free_spenders": {"and": [_trait("plan", "=", "free"), _computed("revenue", ">", 300)]},
    "emailable_buyers": {
        "and": [{"identifier": "email", "op": "exists"}, _computed("orders", ">=", 1)]
    },
    "recent_expensive_taste": {
        "or": [
            _computed("expensive_views", ">=", 2),
            _did(PV, "1h", **_of("max", "price", ">", 290)),
        ]
    },
}
assert len(SEGMENTS) == 50 and len(COMPUTED) == 20


def _define(url: str) -> None:
    """Save the 20 computed traits and the 50 segments (each save recomputes it in bulk)."""
    runtime = Runtime.start(Config(database=DatabaseConfig(url=url)))
    try:
        started = time.perf_counter()
        for key, definition in COMPUTED.items():
            service.upsert_computed(runtime, key, definition)
        for key, definition in SEGMENTS.items():
            service.upsert_segment(runtime, key, definition)
        print(
            f"  defined {len(COMPUTED)} computed traits and {len(SEGMENTS)} segments in "
            f"{time.perf_counter() - started:.1f} s (each saved and recomputed in bulk)",
            flush=True,
        )
    finally:
        runtime.close()


def bench_ingest(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    warm, timed = ingest._traffic(rng, args.users, args.batches)
    runs: dict[str, Any] = {}
    status = 0
    backend = "sqlite"
    for label, define in (("none", None), ("with", _define)):
        what = "no definitions" if define is None else f"{len(SEGMENTS)} segments, 20 computed"
        print(f"ingest ({what}): {args.users:,} known people, {len(timed):,} timed batches")
        with (
            tempfile.TemporaryDirectory() as tmp,
            ingest._database(args.database_url, Path(tmp)) as url,
        ):
            backend = url.split(":", 1)[0].split("+")[0]
            run = ingest.run_server(url, Path(tmp), warm, timed, args.concurrency, define)
            errors = _log_errors(run.log)
            if errors:
                print(f"  server logged {len(errors)} errors; the first:\n    {errors[0]}")
                status = 1
            if run.failures:
                status = 1
            print(
                f"  {run.events / run.elapsed:,.0f} events/s ({run.events:,} events applied in "
                f"{run.elapsed:.1f} s); ack p50 {_pct(run.latencies, 0.5):.0f} ms, "
                f"p99 {_pct(run.latencies, 0.99):.0f} ms; {run.failures} failed requests",
                flush=True,
            )
            if define is not None:
                try:
                    status = max(status, _check(url))
                except Exception as exc:  # still report the rates
                    print(f"  check failed: {exc!r}")
                    status = 1
        runs[label] = run
    rate = {k: r.events / r.elapsed for k, r in runs.items()}
    ratio = rate["with"] / rate["none"]
    print(
        f"backend {backend}: {rate['none']:,.0f} events/s without definitions, "
        f"{rate['with']:,.0f} with {len(SEGMENTS)} segments and {len(COMPUTED)} computed traits; "
        f"ratio {ratio:.2f} (target >= 0.5: {'met' if ratio >= 0.5 else 'NOT met'})"
    )
    return status


def _pct(latencies: list[float], p: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else 0.0


def _log_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line[:300] for line in lines if "ERROR" in line or "Traceback" in line]


def _check(url: str) -> int:
    """Incremental upkeep against a bulk recompute right after the run: a full recompute should
    find next to nothing to change (only what windows expired meanwhile)."""
    runtime = Runtime.start(Config(database=DatabaseConfig(url=url)))
    try:
        before = _computed_values(runtime)
        with runtime.sessions() as session:
            members = session.scalar(
                select(func.count())
                .select_from(SegmentMembership)
                .where(SegmentMembership.left_at.is_(None))
            )
            timed_segments = definitions.load(session).timed_segments()
        started = time.perf_counter()
        changes = service.recompute(runtime)
        elapsed = time.perf_counter() - started
        after = _computed_values(runtime)
    finally:
        runtime.close()
    drift: Counter[str] = Counter()
    rose: Counter[str] = Counter()
    for profile_id, values in after.items():
        old = before.get(profile_id, {})
        for key in set(values) | set(old):
            new_value, old_value = values.get(key), old.get(key)
            if new_value != old_value:
                drift[key] += 1
                if isinstance(new_value, int | float) and new_value > (old_value or 0):
                    rose[key] += 1
    moved = Counter(c.segment_key for c in changes)
    print(
        f"  check: a bulk recompute of everything took {elapsed:.1f} s over {len(after):,} "
        f"profiles ({members:,} memberships); it changed {len(changes)} memberships "
        f"{dict(moved.most_common(8)) or ''} and {sum(drift.values())} computed values "
        f"{dict(drift.most_common(8)) or ''}"
    )
    # Time alone can move what has a window (and what reads or refers to it) since the events
    # were applied, but a windowed count can only fall as time passes: one that rises, like any
    # change to what has no window, is a disagreement between incremental and bulk upkeep.
    timed = set(timed_segments)
    timed_counts = {k for k, d in COMPUTED.items() if "within" in d and d["aggregate"] == "count"}
    timed_computed = {k for k, d in COMPUTED.items() if "within" in d}
    unexplained = {k for k in moved if k not in timed} | {
        k for k in drift if k not in timed_computed
    }
    unexplained |= {k for k in rose if k in timed_counts}
    if unexplained:
        print(
            f"  MISMATCH: incremental and bulk disagree on {sorted(unexplained)} (windowed "
            f"counts that rose: {dict(rose) or 'none'})"
        )
        return 1
    return 0


def _computed_values(runtime: Runtime) -> dict[str, dict[str, Any]]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Profile.id, Profile.computed_traits).where(Profile.merged_into.is_(None))
        )
        return {profile_id: values or {} for profile_id, values in rows}


if __name__ == "__main__":
    sys.exit(main())
