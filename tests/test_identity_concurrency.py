"""Identity resolution stays correct when several processes ingest the same people at once.

How it is guaranteed: every write transaction that resolves identities (`Pipeline.ingest` for
requests, `Pipeline.process_backlog` for the backlog, in cdp/ingest/pipeline.py) first calls
`lock_identity` (cdp/identity/merge.py). On PostgreSQL that takes one transaction-scoped advisory
lock, `pg_advisory_xact_lock(7400002)`, held until commit or rollback, so identity resolution is
serialised across every server and worker process: a transaction reads the identifiers and
profiles (at READ COMMITTED, each statement sees everything committed before it, including what
the previous lock holder wrote), decides, merges and commits before the next one reads. On SQLite
the same holds because writers open their transactions with BEGIN IMMEDIATE (the database's
single write lock). Events are stored in that same transaction, under that lock: `store` skips
any (source, messageId) already stored (the unique constraint backs this up), so a message is
stored and applied exactly once even when a replay reaches another server at the same moment.

The tests: for each person, four messages that each link two of the person's identifiers
(anonymousId + e-mail, userId + e-mail, userId + phone, anonymousId + phone), each carrying a
trait of its own, are sent at the same moment to different processes, in several rounds (each
round brings the person a new anonymousId, e-mail and phone, merged into the profile of earlier
rounds). At the end each person must be exactly one live profile holding all their identifiers,
events and traits, with every merged-away profile explained by a `merges` row. Also: the same
batch sent to every server at once is stored once, and racing messages never push a profile past
an identifier type's limit.

PostgreSQL only: skipped unless CDP_TEST_DATABASE_URL names a PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import (
    CdpServer,
    cdp_env,
    create_collect_key,
    identity_problems,
    owners,
    wait_processed,
)
from sqlalchemy import Engine, select

from cdp.db.models import Event, Merge, Profile
from cdp.identity.rules import Rules

pytestmark = [
    pytest.mark.skipif(
        not os.environ.get("CDP_TEST_DATABASE_URL"),
        reason="needs PostgreSQL: set CDP_TEST_DATABASE_URL",
    ),
    pytest.mark.parametrize("backend", ["postgresql"]),
]

PEOPLE = 50
ROUNDS = 4
LETTERS = "ABCD"
SERVERS = 3
TIMEOUT = 30.0


# --- people and their messages --------------------------------------------------------------------


def user_id(i: int) -> str:
    return f"cust-{i:03d}"


def anonymous_id(i: int, r: int) -> str:
    return f"anon-{i:03d}-r{r}"


def email(i: int, r: int) -> str:
    return f"p{i:03d}.r{r}@example.org"


def phone(i: int, r: int) -> str:
    return f"+49151{r:02d}{i:06d}"  # valid German mobile numbers, already in E.164


def expected_identifiers(i: int, rounds: int) -> set[tuple[str, str]]:
    found = {("user_id", user_id(i))}
    for r in range(rounds):
        found |= {("anonymous_id", anonymous_id(i, r)), ("email", email(i, r))}
        found.add(("phone", phone(i, r)))
    return found


def trait(letter: str, r: int) -> str:
    return f"trait_{letter}_r{r}"


def person_message(i: int, r: int, letter: str) -> dict[str, Any]:
    """Message `letter` of person i in round r: it links two of the person's identifiers."""
    base = {
        "messageId": f"{letter}-{i:03d}-r{r}-{uuid.uuid4().hex[:8]}",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
    }
    mark = {trait(letter, r): f"{letter}{i}"}
    if letter == "A":
        traits = {"email": email(i, r), **mark}
        return {**base, "type": "identify", "anonymousId": anonymous_id(i, r), "traits": traits}
    if letter == "B":
        traits = {"email": email(i, r), **mark}
        return {**base, "type": "identify", "userId": user_id(i), "traits": traits}
    if letter == "C":
        base["context"]["traits"] = {"phone": phone(i, r), **mark}
        return {**base, "type": "track", "userId": user_id(i), "event": "Order Completed"}
    base["context"]["traits"] = {"phone": phone(i, r), **mark}
    return {**base, "type": "page", "anonymousId": anonymous_id(i, r), "name": "Checkout"}


def person_of(message_id: str) -> int:
    return int(message_id.split("-")[1])


# --- checks ---------------------------------------------------------------------------------------


def assert_people_resolved(engine: Engine, sent: dict[str, int], rounds: int) -> int:
    """One live profile per person with all their identifiers, events and traits; merges rows
    explain every merged-away profile. `sent`: {messageId: person}. Returns how many merges."""
    problems = identity_problems(engine)
    assert not problems, problems
    owner_of = owners(engine)
    profile_of: dict[int, str] = {}
    for i in sorted(set(sent.values())):
        expected = expected_identifiers(i, rounds)
        holders = {owner_of.get(key) for key in expected}
        assert len(holders) == 1 and None not in holders, f"person {i}: {holders}"
        profile_of[i] = holders.pop()  # type: ignore[assignment]
    by_profile: dict[str, set[tuple[str, str]]] = {}
    for key, profile_id in owner_of.items():
        by_profile.setdefault(profile_id, set()).add(key)
    for i, profile_id in profile_of.items():
        assert by_profile[profile_id] == expected_identifiers(i, rounds), f"person {i}"

    with engine.connect() as conn:
        live = {
            r.id: r.traits
            for r in conn.execute(
                select(Profile.id, Profile.traits).where(Profile.merged_into.is_(None))
            )
        }
        merged = dict(
            conn.execute(
                select(Profile.id, Profile.merged_into).where(Profile.merged_into.is_not(None))
            ).all()
        )
        events = dict(conn.execute(select(Event.message_id, Event.profile_id)).all())
        event_ids = dict(conn.execute(select(Event.id, Event.message_id)).all())
        merges = conn.execute(select(Merge.survivor_id, Merge.merged_id, Merge.event_id)).all()
    assert set(live) == set(profile_of.values()), "live profiles that are nobody's"

    assert set(events) == set(sent), "events stored are not the messages sent"
    misplaced = [m for m, i in sent.items() if events[m] != profile_of[i]]
    assert not misplaced, f"{len(misplaced)} events not on their person's profile: {misplaced[:3]}"

    lost = {
        i: missing
        for i, profile_id in profile_of.items()
        if (
            missing := [
                trait(letter, r)
                for r in range(rounds)
                for letter in LETTERS
                if live[profile_id].get(trait(letter, r)) != f"{letter}{i}"
            ]
        )
    }
    assert not lost, f"traits lost on {len(lost)} people, e.g. {next(iter(lost.items()))}"

    # Each merged-away profile: merged once, by an event of the person it was merged into.
    assert len(merges) == len(merged)
    assert {m.merged_id for m in merges} == set(merged)
    for m in merges:
        person = person_of(event_ids[m.event_id])
        final = merged[m.merged_id]
        assert final == profile_of[person], (m, person)
        survivor = m.survivor_id
        for _ in range(len(merged) + 1):  # follow later merges of the survivor, bounded
            if survivor not in merged:
                break
            survivor = merged[survivor]
        assert survivor == final, m
    return len(merges)


# --- through HTTP: three `cdp serve` processes ------------------------------------------------


def test_servers_ingesting_the_same_people_at_once_keep_one_profile_each(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    key = create_collect_key(database_url, tmp_path, name="concurrency")
    servers = [CdpServer(database_url, tmp_path, f"server{n}") for n in range(SERVERS)]
    sent: dict[str, int] = {}
    errors: list[str] = []
    try:
        for server in servers:
            server.start()
        urls = [f"{server.url}/v1/batch" for server in servers]
        for r in range(ROUNDS):
            messages = {
                (i, letter): person_message(i, r, letter)
                for i in range(PEOPLE)
                for letter in LETTERS
            }
            sent.update({m["messageId"]: i for (i, _), m in messages.items()})
            if r % 2 == 0:
                units = [[messages[(i, letter)] for letter in LETTERS] for i in range(PEOPLE)]
                errors += _send_together(urls, key, units)
            else:
                errors += _send_in_batches(urls, key, messages, r)
            assert not errors, errors[:5]
        # A client retrying through a load balancer: one batch sent to every server at once.
        # Each message is stored once; one server accepts it, the others report a duplicate.
        replay = [
            {
                "type": "track",
                "userId": user_id(i),
                "event": "Checkout Retried",
                "messageId": f"R-{i:03d}-{uuid.uuid4().hex[:8]}",
            }
            for i in range(PEOPLE)
        ]
        sent.update({m["messageId"]: i for i, m in enumerate(replay)})
        results = _send_everywhere(urls, key, replay)
        assert [r["success"] for r in results] == [True] * SERVERS, results
        assert sum(r["accepted"] for r in results) == PEOPLE, results
        assert sum(r["duplicates"] for r in results) == PEOPLE * (SERVERS - 1), results
        wait_processed(engine, timeout=TIMEOUT)
        for server in servers:
            assert server.process is not None and server.process.poll() is None
            assert not server.errors_logged(), server.errors_logged()[:3]
        merges = assert_people_resolved(engine, sent, ROUNDS)
        assert merges > 0, "the races should have made separate profiles to merge"
        print(f"\n{len(sent)} messages, {PEOPLE} people, {merges} merges")
    finally:
        for server in servers:
            server.stop()


def test_servers_racing_to_add_identifiers_keep_the_limits(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Limits hold under races: eight e-mails of one user sent at once to three servers leave
    exactly five on the profile (the e-mail limit); one kiosk's anonymousId sent at once with
    two different userIds never puts two user ids on one profile (the user_id limit)."""
    key = create_collect_key(database_url, tmp_path, name="limits")
    servers = [CdpServer(database_url, tmp_path, f"server{n}") for n in range(SERVERS)]
    people, emails, pairs = 15, 8, 20

    def identify(message_id: str, **fields: Any) -> dict[str, Any]:
        return {"type": "identify", "messageId": message_id, **fields}

    inboxes = [
        [
            identify(f"E-{i}-{j}", userId=f"owner-{i}", traits={"email": f"c{i}.{j}@example.net"})
            for j in range(emails)
        ]
        for i in range(people)
    ]
    kiosks = [
        [
            identify(f"K-{p}-{n}", userId=f"visitor-{p}-{n}", anonymousId=f"kiosk-{p}")
            for n in range(2)
        ]
        for p in range(pairs)
    ]
    try:
        for server in servers:
            server.start()
        urls = [f"{server.url}/v1/batch" for server in servers]
        errors = _send_together(urls, key, inboxes) + _send_together(urls, key, kiosks)
        assert not errors, errors[:5]
        wait_processed(engine, timeout=TIMEOUT)
        for server in servers:
            assert not server.errors_logged(), server.errors_logged()[:3]
    finally:
        for server in servers:
            server.stop()

    problems = identity_problems(engine)
    assert not problems, problems
    owner_of = owners(engine)
    limits = {name: spec.limit for name, spec in Rules().types.items()}
    per_profile: dict[tuple[str, str], int] = {}
    for (type_, _), profile_id in owner_of.items():
        per_profile[(profile_id, type_)] = per_profile.get((profile_id, type_), 0) + 1
    over = {k: n for k, n in per_profile.items() if limits[k[1]] is not None and n > limits[k[1]]}
    assert not over, f"identifier limits broken: {over}"

    with engine.connect() as conn:
        events = dict(conn.execute(select(Event.message_id, Event.profile_id)).all())
    for i in range(people):
        profile_id = owner_of[("user_id", f"owner-{i}")]
        kept = [j for j in range(emails) if ("email", f"c{i}.{j}@example.net") in owner_of]
        assert len(kept) == limits["email"], (i, kept)
        assert {owner_of[("email", f"c{i}.{j}@example.net")] for j in kept} == {profile_id}
        assert {events[f"E-{i}-{j}"] for j in range(emails)} == {profile_id}
    for p in range(pairs):
        visitors = [owner_of[("user_id", f"visitor-{p}-{n}")] for n in range(2)]
        assert visitors[0] != visitors[1], f"kiosk {p}: two user ids on one profile"
        assert owner_of[("anonymous_id", f"kiosk-{p}")] in visitors
        assert [events[f"K-{p}-{n}"] for n in range(2)] == visitors


def _send_together(urls: list[str], key: str, units: list[list[dict[str, Any]]]) -> list[str]:
    """Each unit's messages (a person's, say) released together by a barrier, each in its own
    request to a different server than its neighbour's; three units in flight at a time.
    Returns what went wrong (a non-200, or fewer messages accepted than sent)."""
    lanes, width = SERVERS, len(units[0])
    barriers = [threading.Barrier(width) for _ in range(lanes)]
    errors: list[str] = []

    def send(lane: int, k: int) -> None:
        with httpx.Client(timeout=TIMEOUT, auth=(key, "")) as client:
            for u in range(lane, len(units), lanes):
                try:
                    barriers[lane].wait(timeout=TIMEOUT)
                except threading.BrokenBarrierError:
                    errors.append(f"lane {lane}: barrier broken")
                    return
                response = client.post(urls[(u + k) % SERVERS], json={"batch": [units[u][k]]})
                if response.status_code != 200 or response.json()["accepted"] != 1:
                    errors.append(f"unit {u} #{k}: {response.status_code} {response.text}")

    _run_threads([(send, (lane, k)) for lane in range(lanes) for k in range(width)])
    return errors


def _send_in_batches(
    urls: list[str], key: str, messages: dict[tuple[int, str], dict[str, Any]], r: int
) -> list[str]:
    """Four batches released together, each holding a different message of every person, to
    three servers (so every transaction touches every person)."""
    barrier = threading.Barrier(len(LETTERS))
    errors: list[str] = []

    def send(t: int) -> None:
        batch = [messages[(i, LETTERS[(i + t + r) % 4])] for i in range(PEOPLE)]
        with httpx.Client(timeout=TIMEOUT, auth=(key, "")) as client:
            barrier.wait(timeout=TIMEOUT)
            response = client.post(urls[t % SERVERS], json={"batch": batch})
        if response.status_code != 200 or response.json()["accepted"] != PEOPLE:
            errors.append(f"batch {t}: {response.status_code} {response.text[:300]}")

    _run_threads([(send, (t,)) for t in range(len(LETTERS))])
    return errors


def _send_everywhere(urls: list[str], key: str, batch: list[dict[str, Any]]) -> list[dict]:
    """The same batch to every server, released together; returns the response bodies."""
    barrier = threading.Barrier(len(urls))
    results: list[dict] = [{} for _ in urls]

    def send(n: int) -> None:
        with httpx.Client(timeout=TIMEOUT, auth=(key, "")) as client:
            barrier.wait(timeout=TIMEOUT)
            response = client.post(urls[n], json={"batch": batch})
        results[n] = {"status": response.status_code, **response.json()}

    _run_threads([(send, (n,)) for n in range(len(urls))])
    return results


def _run_threads(targets: list[tuple[Any, tuple[Any, ...]]]) -> None:
    failures: list[BaseException] = []

    def guarded(fn: Any, args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), "a sender thread is stuck"
    if failures:
        raise failures[0]


# --- without HTTP: OS processes calling ingest_now --------------------------------------------

WORKER = """
import json, sys
from datetime import UTC, datetime
from cdp.collect.messages import parse_batch
from cdp.config import Config, DatabaseConfig
from cdp.ingest.pipeline import ingest_now
from cdp.runtime import Runtime

spec = json.loads(open(sys.argv[1]).read())
runtime = Runtime.start(Config(database=DatabaseConfig(url=spec["url"])))
try:
    for batch in spec["rounds"]:
        messages, errors = parse_batch(json.dumps({"batch": batch}).encode(), datetime.now(UTC))
        assert not errors, errors
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            sys.exit(3)
        for message in messages:  # one transaction per message
            ingest_now(runtime, [message], "src")
        print("done", flush=True)
finally:
    runtime.close()
"""


def test_processes_calling_ingest_now_for_the_same_people_keep_one_profile_each(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    workers = len(LETTERS)
    rounds = 3
    plans: list[list[list[dict[str, Any]]]] = [[] for _ in range(workers)]
    sent: dict[str, int] = {}
    for r in range(rounds):
        for t in range(workers):
            batch = [person_message(i, r, LETTERS[(i + t + r) % 4]) for i in range(PEOPLE)]
            plans[t].append(batch)
            sent.update({m["messageId"]: i for i, m in enumerate(batch)})

    processes: list[subprocess.Popen[str]] = []
    lines: list[queue.Queue[str]] = []
    try:
        for t in range(workers):
            spec = tmp_path / f"worker{t}.json"
            spec.write_text(json.dumps({"url": database_url, "rounds": plans[t]}))
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(spec)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=cdp_env(database_url),
                cwd=tmp_path,
            )
            processes.append(process)
            lines.append(_lines_of(process))
        for r in range(rounds):
            for t in range(workers):
                _expect(lines[t], "ready", processes[t], f"worker {t} round {r}")
            for process in processes:  # released together
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            for t in range(workers):
                _expect(lines[t], "done", processes[t], f"worker {t} round {r}")
        for process in processes:
            assert process.wait(timeout=TIMEOUT) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    wait_processed(engine, timeout=TIMEOUT)
    merges = assert_people_resolved(engine, sent, rounds)
    assert merges > 0, "the races should have made separate profiles to merge"
    print(f"\n{len(sent)} messages, {PEOPLE} people, {merges} merges")


def _lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return found


def _expect(lines: queue.Queue[str], word: str, process: subprocess.Popen[str], who: str) -> None:
    """Wait (bounded) for the line `word` from a worker; fail with what it printed otherwise."""
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"{who}: no {word!r} in {TIMEOUT} s: {seen}") from None
        if line == word:
            return
        seen.append(line)
        if process.poll() is not None and lines.empty():
            raise AssertionError(f"{who} exited {process.returncode}: " + "\n".join(seen))
