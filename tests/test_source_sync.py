from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from identity_helpers import identifiers, live_profiles, msg, send
from source_helpers import duplicated_message_ids, entry, events, rejects, started, state
from sqlalchemy import select, update

from cdp.db.engine import make_engine
from cdp.db.models import Event, SourceState, utcnow
from cdp.sources.claim import SourceBusy, claim_source, release
from cdp.sources.sync import SyncProgress, sync_source


def write_crm(path, count: int, bad_every: int = 0) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write("Id,Email,First,Newsletter\n")
        for i in range(1, count + 1):
            if bad_every and i % bad_every == 0:
                out.write(f",,Nobody {i},yes\n")  # no identifier: rejected
            else:
                out.write(f"{i},user{i}@example.com,First {i},{'yes' if i % 2 else 'no'}\n")


class Stop(Exception):
    pass


def test_a_failed_sync_resumes_from_its_checkpoint_mid_file(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    write_crm(path, 10)
    with started(database_url, entry(path=str(path), batch_size=4)) as runtime:
        seen: list[int] = []

        def stop_after_first(progress: SyncProgress) -> None:
            seen.append(progress.summary.read)
            raise Stop("stopped by the test")

        with pytest.raises(Stop):
            sync_source(runtime, "crm", stop_after_first)
        after_kill = state(runtime)
        assert (after_kill.status, after_kill.last_error) == ("failed", "Stop: stopped by the test")
        assert after_kill.running_since is None and after_kill.rows_read == 4
        assert [e.user_id for e in events(runtime)] == ["1", "2", "3", "4"]

        summary = sync_source(runtime, "crm")
        assert (summary.read, summary.imported, summary.duplicates) == (6, 6, 0)
        assert [e.user_id for e in events(runtime)] == [str(i) for i in range(1, 11)]
        assert (state(runtime).status, state(runtime).last_error) == ("completed", None)


def test_progress_reports_bytes_of_the_file(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    write_crm(path, 5)
    reports: list[tuple[int, int | None, int | None]] = []
    with started(database_url, entry(path=str(path), batch_size=2)) as runtime:
        sync_source(runtime, "crm", lambda p: reports.append((p.summary.read, p.done, p.total)))
    size = path.stat().st_size
    assert [r[0] for r in reports] == [2, 4, 5]
    assert {r[2] for r in reports} == {size}
    assert reports[-1][1] == size and reports[0][1] < reports[1][1] < size


def test_a_second_sync_of_a_source_is_refused_while_one_runs(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    write_crm(path, 3)
    with started(database_url, entry(path=str(path))) as runtime:
        claim = claim_source(runtime, "crm")
        with pytest.raises(SourceBusy, match=r"source 'crm' is being synced by .+:\d+ since"):
            sync_source(runtime, "crm")
        assert events(runtime) == []
        release(runtime, claim, None)
        assert sync_source(runtime, "crm").imported == 3


def test_a_claim_left_by_a_killed_or_silent_sync_is_taken_over(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    write_crm(path, 2)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with started(database_url, entry(path=str(path))) as runtime:
        claim_source(runtime, "crm")
        with runtime.transaction() as session:
            session.execute(
                update(SourceState).values(claimed_by=f"{socket.gethostname()}:{gone.pid}")
            )
        assert sync_source(runtime, "crm").imported == 2

        claim_source(runtime, "crm")  # held by this live process, but silent for too long
        with runtime.transaction() as session:
            session.execute(update(SourceState).values(heartbeat_at=utcnow() - timedelta(hours=1)))
        assert sync_source(runtime, "crm").read == 0


def test_a_crm_row_and_a_web_visitor_with_the_same_email_are_one_profile(database_url, tmp_path):
    path = tmp_path / "crm.csv"
    path.write_text("Email,First,Plan\nAda@Example.com ,Ada,gold\n", encoding="utf-8")
    mapping = {"identifiers": {"email": "Email"}, "traits": {"first_name": "First", "plan": "Plan"}}
    with started(database_url, entry(path=str(path), mapping=mapping)) as runtime:
        send(runtime, msg("identify", anonymousId="cookie-1", traits={"email": "ada@example.com"}))
        assert sync_source(runtime, "crm").imported == 1
        (profile,) = live_profiles(runtime)
        assert profile.traits["plan"] == "gold" and profile.traits["first_name"] == "Ada"
        ids = identifiers(runtime, profile.id)
        assert ("email", "ada@example.com") in ids and ("anonymous_id", "cookie-1") in ids
        send(runtime, msg("track", anonymousId="cookie-1", event="Viewed"))
        assert len(live_profiles(runtime)) == 1


def test_sigkill_mid_import_then_rerun_imports_every_row_exactly_once(database_url, tmp_path):
    rows, bad_every = 20_000, 1_000
    path = tmp_path / "crm.csv"
    write_crm(path, rows, bad_every)
    config = tmp_path / "cdp.toml"
    config.write_text(
        f"""
[[sources]]
name = "crm"
type = "csv"
kind = "profiles"
path = "{path}"
batch_size = 100
[sources.mapping]
identifiers = {{ user_id = "Id", email = "Email" }}
traits = {{ first_name = "First" }}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "CDP_DATABASE_URL": database_url, "CDP_CONFIG": str(config)}
    command = [sys.executable, "-m", "cdp", "sources", "sync", "crm"]
    engine = make_engine(database_url)

    def rows_read() -> int:
        with engine.connect() as conn:
            return conn.scalar(select(SourceState.rows_read)) or 0

    try:
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while rows_read() < 2_000:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = rows_read()
        assert 2_000 <= killed_at < rows
        with engine.connect() as conn:
            assert conn.scalar(select(SourceState.status)) == "running"  # never released

        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert "crm: read" in rerun.stdout
    finally:
        engine.dispose()

    with started(database_url) as runtime:
        imported = events(runtime)
        assert len(imported) == rows - rows // bad_every
        assert duplicated_message_ids(runtime) == 0
        assert len({e.user_id for e in imported}) == len(imported)
        found = rejects(runtime)
        assert sorted(r.row_number for r in found) == [
            i + 1 for i in range(bad_every, rows + 1, bad_every)
        ]
        final = state(runtime)
        assert final.status == "completed"
        assert final.rows_read == rows - killed_at
        assert final.rows_imported + killed_at - (killed_at // bad_every) == len(imported)
        with runtime.sessions() as session:
            assert session.scalar(select(Event.id).where(Event.processed_at.is_(None))) is None
