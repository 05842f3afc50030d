from __future__ import annotations

import json
import shutil

from source_helpers import entry, events, rejects, started, state

from cdp.config import PluginsConfig
from cdp.plugins import PluginHost
from cdp.sources.records import RecordError
from cdp.sources.sync import sync_source

HEADER = "Id;Email;First;Newsletter\n"


def connector(type_: str, **options):
    from cdp.config import ComponentEntry

    host = PluginHost(PluginsConfig())
    return host.create("source", ComponentEntry(name="t", type=type_, **options), "sources[0]")


def test_csv_with_semicolons_and_latin1(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_bytes(
        (HEADER + "1;ada@example.com;Jürgen;ja\n2;bob@example.com;Bob;no\n").encode("latin-1")
    )
    mapping = {
        "identifiers": {"user_id": "Id", "email": "Email"},
        "traits": {"first_name": "First"},
    }
    with started(
        database_url, entry(path=str(path), delimiter=";", encoding="latin-1", mapping=mapping)
    ) as runtime:
        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.rejected) == (2, 2, 0)
        stored = events(runtime)
        assert [e.payload["traits"] for e in stored] == [
            {"first_name": "Jürgen", "email": "ada@example.com"},
            {"first_name": "Bob", "email": "bob@example.com"},
        ]
        assert [e.user_id for e in stored] == ["1", "2"]


def test_csv_without_header_uses_columns(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text('1,ada@example.com,"Ada, Countess",yes\n', encoding="utf-8")
    with started(
        database_url,
        entry(path=str(path), has_header=False, columns=["Id", "Email", "First", "Newsletter"]),
    ) as runtime:
        assert sync_source(runtime, "crm").imported == 1
        (event,) = events(runtime)
        assert event.payload["traits"] == {
            "first_name": "Ada, Countess",
            "email": "ada@example.com",
        }
        assert event.payload["context"]["consent"] == {"categoryPreferences": {"newsletter": True}}


def test_jsonl_events(database_url, tmp_path):
    path = tmp_path / "orders.jsonl"
    lines = [
        {"user": "u1", "at": "2026-01-02T03:04:05Z", "total": 19.9, "id": "o1"},
        {"user": "u2", "at": "2026-01-03T00:00:00Z", "total": 5, "id": "o2"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    mapping = {
        "identifiers": {"user_id": "user"},
        "event": "Order Completed",
        "timestamp": "at",
        "properties": {"revenue": "total"},
        "message_id": "id",
    }
    with started(
        database_url,
        entry(name="shop", type_="jsonl", path=str(path), kind="events", mapping=mapping),
    ) as runtime:
        assert sync_source(runtime, "shop").imported == 2
        stored = events(runtime, "shop")
        assert [(e.type, e.name, e.message_id, e.user_id) for e in stored] == [
            ("track", "Order Completed", "shop:o1", "u1"),
            ("track", "Order Completed", "shop:o2", "u2"),
        ]
        assert stored[0].payload["properties"] == {"revenue": 19.9}
        assert stored[0].timestamp.isoformat() == "2026-01-02T03:04:05+00:00"


def test_a_glob_of_two_files_and_a_file_already_imported_is_not_imported_twice(
    database_url, tmp_path
):
    (tmp_path / "crm-1.csv").write_text(HEADER.replace(";", ",") + "1,a@example.com,A,yes\n")
    (tmp_path / "crm-2.csv").write_text(HEADER.replace(";", ",") + "2,b@example.com,B,no\n")
    with started(database_url, entry(path=str(tmp_path / "crm-*.csv"))) as runtime:
        first = sync_source(runtime, "crm")
        assert (first.read, first.imported) == (2, 2)
        assert sync_source(runtime, "crm").read == 0
        # The same export again under another name: known by its content, skipped.
        shutil.copy(tmp_path / "crm-1.csv", tmp_path / "crm-1-copy.csv")
        (tmp_path / "crm-3.csv").write_text(HEADER.replace(";", ",") + "3,c@example.com,C,\n")
        third = sync_source(runtime, "crm")
        assert (third.read, third.imported) == (1, 1)
        assert [e.user_id for e in events(runtime)] == ["1", "2", "3"]
        done = json.loads(state(runtime).checkpoint)["done"]
        assert sorted(done.values()) == [str(tmp_path / f"crm-{n}.csv") for n in (1, 2, 3)]


def test_bad_rows_go_to_rejects_and_the_rest_imports(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    rows = [
        b"Id,Email,First,Newsletter",
        b"1,a@example.com,A,yes",
        b"2,b@example.com,B",  # a field short
        b",,C,yes",  # no identifier
        b"4,d@example.com,D,maybe",  # not a consent
        b"5,e@example.com,\xff\xfe,no",  # not UTF-8
        b"",
        b'6,f@example.com,"F',
        b'second line",yes',
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    with started(database_url, entry(path=str(path), batch_size=2)) as runtime:
        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.rejected) == (6, 2, 4)
        assert [e.user_id for e in events(runtime)] == ["1", "6"]
        assert events(runtime)[1].payload["traits"]["first_name"] == "F\nsecond line"
        found = [(r.row_number, r.raw, r.reason, r.location) for r in rejects(runtime)]
        assert found == [
            (3, "2,b@example.com,B", "has 3 fields; the header has 4", str(path)),
            (
                4,
                ",,C,yes",
                "mapping.identifiers: every identifier field is empty ('Id', 'Email')",
                str(path),
            ),
            (
                5,
                "4,d@example.com,D,maybe",
                "mapping.consents.newsletter: 'maybe' in field 'Newsletter' is neither granted "
                "(yes, true, 1, on, granted) nor denied (no, false, 0, off, denied)",
                str(path),
            ),
            (
                6,
                "5,e@example.com,\ufffd\ufffd,no",
                "not valid utf-8: invalid start byte at byte 16",
                str(path),
            ),
        ]
        assert {r.run_started_at for r in rejects(runtime)} == {state(runtime).last_run_at}
        assert (state(runtime).rows_read, state(runtime).rows_rejected) == (6, 4)


def test_jsonl_bad_lines_are_records_with_reasons(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n{"a": \n\n{"a": 2}\n', encoding="utf-8")
    source = connector("jsonl", path=str(path))
    records = [r for batch in source.read(None) for r in batch.records]
    assert [(r.row, type(r).__name__) for r in records] == [
        (1, "SourceRecord"),
        (2, "RecordError"),
        (3, "RecordError"),
        (5, "SourceRecord"),
    ]
    assert records[1].reason == "is a JSON list, not an object"
    assert records[2].reason.startswith("not valid JSON: Expecting value")
    assert isinstance(records[2], RecordError) and records[2].raw == '{"a": '


def test_reading_streams_batches_and_resumes_mid_file(tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("Id,Email\n" + "".join(f"{i},u{i}@example.com\n" for i in range(1, 8)))
    source = connector("csv", path=str(path), batch_size=3)
    batches = list(source.read(None))
    assert [[r["Id"] for r in b.records] for b in batches] == [
        ["1", "2", "3"], ["4", "5", "6"], ["7"],
    ]  # fmt: skip
    assert source.position() == (path.stat().st_size, path.stat().st_size)
    # Resume after the first batch: the rest, with the same keys as in a whole run.
    resumed = list(connector("csv", path=str(path), batch_size=3).read(batches[0].checkpoint))
    assert [r["Id"] for b in resumed for r in b.records] == ["4", "5", "6", "7"]
    assert [r.key for b in resumed for r in b.records] == [
        r.key for b in batches[1:] for r in b.records
    ]
    assert json.loads(batches[0].checkpoint)["file"]["line"] == 4
    assert list(connector("csv", path=str(path)).read(batches[-1].checkpoint)) == []
