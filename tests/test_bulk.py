"""cdp.db.bulk: rows written by the driver-level fast paths (executemany; COPY on PostgreSQL)
read back exactly as rows written by a plain SQLAlchemy insert, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, Text, cast, insert, select
from sqlalchemy.exc import IntegrityError

from cdp.db import bulk
from cdp.db.models import Event, Profile

EVENTS, PROFILES = Event.__table__, Profile.__table__
COLUMNS = [c.name for c in EVENTS.columns]
COMPARED = [c for c in COLUMNS if c not in ("id", "source")]
"""The two copies of a row differ only in their id and source."""

AWKWARD_TEXT = [
    "plain",
    "",  # an empty string is not NULL
    "tab\there, newline\nthere, carriage return\r",
    "back\\slash, \\N, \\t and a lone \\",  # COPY's own escapes, as data
    "quotes \" and ' and , ; |",
    "Ünïcödé: 東京, עברית, emoji 🎉👩‍👩‍👧, combining é",
    "x" * 250,  # fits name (255) and user_id (512)
]
BERLIN = timezone(timedelta(hours=1))
NEW_YORK = timezone(timedelta(hours=-5))


def _payload(i: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"m-{i}",
        "traits": {
            "email": f"person{i}@example.com",
            "name": AWKWARD_TEXT[i % len(AWKWARD_TEXT)],
            "visits": i,
            "score": i / 7,
            "vip": i % 3 == 0,
            "nothing": None,
            "tags": ["a", "b", {"nested": [1, 2.5, None, True]}],
            "big": 2**70 + i,  # beyond 64 bits: the standard library's json writes it
        },
        "context": {"consent": {"categoryPreferences": {"newsletter": i % 2 == 0}}},
        "empty": {},
        "escapes": "\\N\t\n\u0001",
    }


def _rows(count: int, source: str, start_id: int) -> list[list[Any]]:
    base = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    rows = []
    for i in range(count):
        at = base + timedelta(seconds=i, microseconds=i)
        values = {
            "id": start_id + i,
            "source": source,
            "message_id": f"m-{i}",
            "type": "identify",
            "name": None if i % 2 else AWKWARD_TEXT[i % len(AWKWARD_TEXT)],
            "profile_id": None if i % 5 == 0 else f"p-{i:034d}",
            "user_id": AWKWARD_TEXT[(i + 3) % len(AWKWARD_TEXT)],
            "anonymous_id": None if i % 3 else f"anon-{i}",
            "timestamp": [at, at.astimezone(BERLIN), at.astimezone(NEW_YORK)][i % 3],
            "original_timestamp": None if i % 4 else datetime(1970, 1, 1, tzinfo=UTC),
            "sent_at": None if i % 2 else datetime(1, 1, 2, 0, 0, 0, 1, tzinfo=UTC),
            "received_at": datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC),
            "processed_at": None if i % 7 == 0 else at + timedelta(days=365 * 30),
            "error": None if i % 6 else "error: " + AWKWARD_TEXT[i % len(AWKWARD_TEXT)],
            "payload": _payload(i),
        }
        rows.append([values[c] for c in COLUMNS])
    return rows


def _write_both(engine: Engine, count: int) -> None:
    fast = _rows(count, "fast", 1)
    plain = _rows(count, "plain", count + 1)
    with engine.begin() as conn:
        bulk.insert_rows(conn, EVENTS, COLUMNS, fast)
    with engine.begin() as conn:
        conn.execute(insert(EVENTS), [dict(zip(COLUMNS, row, strict=True)) for row in plain])


def _read(engine: Engine, source: str) -> list[tuple[Any, ...]]:
    """Each row's values as SQLAlchemy reads them, and the payload as the database holds it."""
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(*[EVENTS.c[c] for c in COMPARED], cast(EVENTS.c.payload, Text))
                .where(EVENTS.c.source == source)
                .order_by(EVENTS.c.id)
            )
        ]


@pytest.mark.parametrize("count", [1, bulk.COPY_MIN_ROWS - 1, bulk.COPY_MIN_ROWS, 3000])
def test_fast_path_rows_read_back_as_a_plain_insert_writes_them(engine, count):
    _write_both(engine, count)
    fast, plain = _read(engine, "fast"), _read(engine, "plain")
    assert len(fast) == count
    assert fast == plain
    # And as they went in: the same datetimes (as UTC), JSON, NULLs, empty strings and text.
    expected = _rows(count, "fast", 1)
    for got, want in zip(fast, expected, strict=True):
        want_values = dict(zip(COLUMNS, want, strict=True))
        assert got[:-1] == tuple(want_values[c] for c in COMPARED)
        assert got[COMPARED.index("timestamp")].tzinfo == UTC


def test_postgresql_payloads_stay_jsonb_objects(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only")
    _write_both(engine, 50)
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT source, pg_typeof(payload)::text, jsonb_typeof(payload), "
            "payload -> 'traits' ->> 'email', payload -> 'traits' -> 'big' "
            "FROM events WHERE message_id = 'm-7' ORDER BY source"
        ).all()
    big = 2**70 + 7
    assert found == [
        ("fast", "jsonb", "object", "person7@example.com", big),
        ("plain", "jsonb", "object", "person7@example.com", big),
    ]


def test_postgresql_uses_copy_from_the_threshold_and_sqlite_executemany(engine, monkeypatch):
    copies: list[int] = []
    real_copy = bulk._copy

    def counting_copy(conn: Any, sql: str, rows: list[tuple]) -> None:
        copies.append(len(rows))
        real_copy(conn, sql, rows)

    monkeypatch.setattr(bulk, "_copy", counting_copy)
    for count, start in ((bulk.COPY_MIN_ROWS - 1, 1), (bulk.COPY_MIN_ROWS, 1000)):
        with engine.begin() as conn:
            bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(count, f"s{count}", start))
    expected = [bulk.COPY_MIN_ROWS] if engine.dialect.name == "postgresql" else []
    assert copies == expected
    with engine.connect() as conn:
        assert conn.scalar(select(EVENTS.c.id).order_by(EVENTS.c.id.desc()).limit(1)) == (
            1000 + bulk.COPY_MIN_ROWS - 1
        )


def test_large_batches_of_profiles_with_generated_rows(engine):
    at = datetime(2026, 1, 1, tzinfo=UTC)
    count = 20_000
    rows = (
        (f"p-{i:08d}", {"email": f"p{i}@example.com", "n": i, "ü": "ß"}, {}, at, at)
        for i in range(count)  # any iterable: a generator too
    )
    columns = ("id", "traits", "trait_sources", "created_at", "updated_at")
    with engine.begin() as conn:
        bulk.insert_rows(conn, PROFILES, columns, rows)
    with engine.connect() as conn:
        stored = conn.execute(
            select(PROFILES.c.id, PROFILES.c.traits, PROFILES.c.merged_into).order_by(PROFILES.c.id)
        ).all()
    assert len(stored) == count
    assert stored[12345] == (
        "p-00012345",
        {"email": "p12345@example.com", "n": 12345, "ü": "ß"},
        None,
    )


def test_a_failed_copy_raises_integrity_error_and_rolls_back_to_the_savepoint(engine):
    count = bulk.COPY_MIN_ROWS * 3
    with engine.begin() as conn:
        bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(count, "fast", 1))
        savepoint = conn.begin_nested()
        with pytest.raises(IntegrityError):
            # the same (source, message_id) again, under new ids
            bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(count, "fast", count + 1))
        savepoint.rollback()
        bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(count, "other", count + 1))
    with engine.connect() as conn:
        assert conn.execute(select(EVENTS.c.source, EVENTS.c.id).order_by(EVENTS.c.id)).all() == [
            ("fast", i) for i in range(1, count + 1)
        ] + [("other", i) for i in range(count + 1, 2 * count + 1)]


def test_rows_written_in_a_savepoint_go_when_it_is_rolled_back(engine):
    with engine.begin() as conn:
        with conn.begin_nested() as savepoint:
            bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(100, "gone", 1))
            savepoint.rollback()
        bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(100, "kept", 101))
    with engine.connect() as conn:
        assert {r.source for r in conn.execute(select(EVENTS.c.source))} == {"kept"}


def test_a_connection_without_a_transaction_yet_commits_what_it_wrote(engine):
    with engine.connect() as conn:
        bulk.insert_rows(conn, EVENTS, COLUMNS, _rows(100, "fast", 1))
        conn.commit()
    with engine.connect() as conn:
        assert len(conn.execute(select(EVENTS.c.id)).all()) == 100


def test_no_rows_write_nothing(engine):
    with engine.begin() as conn:
        bulk.insert_rows(conn, EVENTS, COLUMNS, [])
        bulk.update_rows(conn, EVENTS, ["error"], "id", [])
    with engine.connect() as conn:
        assert conn.execute(select(EVENTS.c.id)).all() == []
