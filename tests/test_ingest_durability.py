"""Nothing acknowledged is lost: `cdp serve` killed with SIGKILL during ingestion, then restarted.

A real server process takes `/v1/batch` requests from several client threads; it is killed while
requests are in flight. Clients then retry every batch that did not get a 200 against the
restarted server, as Segment's libraries do. Every acknowledged message must be stored exactly
once, and every stored event applied to the right person's one live profile. A second test checks
that events stored but left unprocessed by a crash (the backlog) are applied by the restarted
server's writer without any request.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from servers import (
    CdpServer,
    create_collect_key,
    identity_problems,
    live_profile_count,
    owners,
    unprocessed,
    wait_processed,
    wait_until,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from cdp.collect.messages import parse_batch
from cdp.db.models import Event, Merge
from cdp.ingest.pipeline import event_row, store

SOURCE = "durability"
BATCH = 50
USERS = 300
DEVICES = 2
SENDERS = 4
LIBRARY = {"name": "analytics-python", "version": "2.3.3"}


# --- a population of users and the messages their apps send -------------------------------------


def user_id(k: int) -> str:
    return f"user-{k:04d}"


def anonymous_id(k: int, device: int) -> str:
    return f"anon-{k:04d}-{device}-{uuid.UUID(int=k * 16 + device).hex[-8:]}"


def email(k: int) -> str:
    return f"user{k:04d}@example.com"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def message(type_: str, **fields: Any) -> dict[str, Any]:
    """A message shaped as segment-analytics-python sends it, with a fresh messageId."""
    return {
        "type": type_,
        "messageId": str(uuid.uuid4()),
        "timestamp": now_iso(),
        "context": {"library": dict(LIBRARY), "ip": "127.0.0.1"},
        "integrations": {},
        **fields,
    }


def identify(k: int, device: int) -> dict[str, Any]:
    traits = {"email": email(k), "name": f"User {k}", "plan": ("free", "pro")[k % 2]}
    return message(
        "identify", userId=user_id(k), anonymousId=anonymous_id(k, device), traits=traits
    )


def random_message(rng: random.Random) -> dict[str, Any]:
    """Users recur (USERS of them); identify links a device's anonymousId to the user, so profiles
    made by anonymous events and by userId-only events get merged."""
    k, device = rng.randrange(USERS), rng.randrange(DEVICES)
    kind = rng.random()
    if kind < 0.2:
        return identify(k, device)
    if kind < 0.55:
        props = {"product_id": f"p-{rng.randrange(100)}", "price": rng.randrange(1, 500) / 10}
        return message(
            "track", anonymousId=anonymous_id(k, device), event="Product Viewed", properties=props
        )
    if kind < 0.8:
        props = {"order_id": str(uuid.uuid4())[:8], "total": rng.randrange(1, 9000) / 10}
        return message("track", userId=user_id(k), event="Order Completed", properties=props)
    return message(
        "page", anonymousId=anonymous_id(k, device), name="Pricing", properties={"path": "/pricing"}
    )


def link_batches(users: set[int]) -> list[list[dict[str, Any]]]:
    """Every user's every device identified once more, so that each user ends as one profile."""
    messages = [identify(k, d) for k in sorted(users) for d in range(DEVICES)]
    return [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]


def user_of(user: str | None, anonymous: str | None) -> int:
    text = user or anonymous
    assert text is not None
    return int(text.split("-")[1])


# --- clients --------------------------------------------------------------------------------------


@dataclass
class Senders:
    """SENDERS threads posting batches of BATCH random messages until stopped; records which
    batches got a 200 (acknowledged) and which did not (to be retried)."""

    url: str
    key: str
    max_batches: int = 4000
    max_seconds: float = 20.0
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    in_flight: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(SENDERS):
            thread = threading.Thread(target=self._send, args=(random.Random(n),), daemon=True)
            thread.start()
            self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)
            assert not thread.is_alive(), "a sender thread is stuck"

    def _send(self, rng: random.Random) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=15.0, auth=(self.key, "")) as client:
            while not self.stop.is_set() and time.monotonic() < deadline:
                batch = [random_message(rng) for _ in range(BATCH)]
                with self.lock:
                    if len(self.batches) >= self.max_batches:
                        return
                    number = len(self.batches)
                    self.batches.append(batch)
                    self.in_flight += 1
                try:
                    response = client.post(
                        f"{self.url}/v1/batch", json={"batch": batch, "sentAt": now_iso()}
                    )
                except httpx.TransportError:
                    continue  # the server died: this batch is retried later
                finally:
                    with self.lock:
                        self.in_flight -= 1
                if response.status_code == 200 and response.json()["accepted"] == BATCH:
                    with self.lock:
                        self.acked.add(number)
                else:
                    with self.lock:
                        self.failures.append(f"{response.status_code} {response.text[:200]}")

    def message_ids(self, numbers: set[int] | None = None) -> set[str]:
        chosen = range(len(self.batches)) if numbers is None else numbers
        return {m["messageId"] for n in chosen for m in self.batches[n]}


def post_batch(url: str, key: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/batch",
        json={"batch": batch, "sentAt": now_iso()},
        auth=(key, ""),
        timeout=30.0,
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- checks ---------------------------------------------------------------------------------------


def stored_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Event.message_id).where(Event.source == SOURCE)))


def assert_each_user_is_one_profile(engine: Engine, users: set[int]) -> None:
    """Each user's identifiers all on one live profile of their own, and all their events too."""
    problems = identity_problems(engine)
    assert not problems, problems
    owner_of = owners(engine)
    profile_of_user: dict[int, str] = {}
    for k in users:
        expected = {("user_id", user_id(k)), ("email", email(k))}
        expected |= {("anonymous_id", anonymous_id(k, d)) for d in range(DEVICES)}
        found = {owner_of.get(key) for key in expected}
        assert len(found) == 1 and None not in found, (k, found)
        profile_of_user[k] = found.pop()  # type: ignore[assignment]
    assert len(set(profile_of_user.values())) == len(users), "two users share a profile"
    assert live_profile_count(engine) == len(users)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.message_id, Event.user_id, Event.anonymous_id, Event.profile_id)
        ).all()
    misplaced = [
        r for r in rows if profile_of_user[user_of(r.user_id, r.anonymous_id)] != r.profile_id
    ]
    assert not misplaced, f"{len(misplaced)} events not on their user's profile: {misplaced[:3]}"


# --- tests ----------------------------------------------------------------------------------------


def test_sigkill_during_ingestion_loses_no_acknowledged_event(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    key = create_collect_key(database_url, tmp_path, name=SOURCE)
    server = CdpServer(database_url, tmp_path)
    try:
        server.start()
        senders = Senders(server.url, key)
        senders.start()
        time.sleep(2.5)
        # Kill while requests are in flight (bounded wait for a moment when several are).
        wait_until(lambda: senders.in_flight >= 2, timeout=5.0, interval=0.001)
        senders.stop.set()  # no new requests; those in flight are cut by the kill
        in_flight_at_kill = senders.in_flight
        server.kill()
        senders.join()
        assert in_flight_at_kill > 0
        assert senders.acked, f"nothing acknowledged before the kill: {senders.failures[:3]}"
        assert not senders.failures, senders.failures[:3]
        pending = set(range(len(senders.batches))) - senders.acked
        assert pending, "every batch was acknowledged: the kill hit nothing in flight"

        acked_ids = senders.message_ids(senders.acked)
        pending_ids = senders.message_ids(pending)
        sent_ids = acked_ids | pending_ids
        assert len(sent_ids) == BATCH * len(senders.batches), "messageIds must be unique"

        server.start()
        before_retry = stored_ids(engine)
        assert len(before_retry) == len(set(before_retry))
        lost = acked_ids - set(before_retry)
        assert not lost, f"{len(lost)} acknowledged messages lost in the crash"
        committed_unacked = pending_ids & set(before_retry)

        # Clients retry what was not acknowledged; a replay is reported as a duplicate.
        retried = [post_batch(server.url, key, senders.batches[n]) for n in sorted(pending)]
        assert sum(r["duplicates"] for r in retried) == len(committed_unacked)
        assert sum(r["accepted"] for r in retried) == len(pending_ids - committed_unacked)
        # A client that timed out on an acknowledged batch sends it again: nothing is new.
        for n in sorted(senders.acked)[-3:]:
            replay = post_batch(server.url, key, senders.batches[n])
            assert (replay["accepted"], replay["duplicates"]) == (0, BATCH)

        users = {user_of(m.get("userId"), m.get("anonymousId")) for b in senders.batches for m in b}
        for batch in link_batches(users):
            post_batch(server.url, key, batch)
        wait_processed(engine, timeout=30)

        stored = stored_ids(engine)
        link_ids = len(users) * DEVICES
        assert len(stored) == len(set(stored)) == len(sent_ids) + link_ids
        assert sent_ids <= set(stored)
        assert_each_user_is_one_profile(engine, users)
        assert not server.errors_logged(), server.errors_logged()[:3]
        print(
            f"\n{len(senders.batches)} batches sent, {len(senders.acked)} acknowledged, "
            f"{in_flight_at_kill} in flight at the kill, {len(committed_unacked)} messages "
            f"committed but unacknowledged, {len(stored)} events, {len(users)} users"
        )
    finally:
        server.stop()


def test_backlog_left_by_a_crash_is_applied_on_restart(
    database_url: str, engine: Engine, tmp_path: Path
) -> None:
    key = create_collect_key(database_url, tmp_path, name=SOURCE)
    server = CdpServer(database_url, tmp_path)
    rng = random.Random(7)
    try:
        server.start()
        burst = [[random_message(rng) for _ in range(BATCH)] for _ in range(8)]
        with ThreadPoolExecutor(SENDERS) as pool:
            results = list(pool.map(lambda b: post_batch(server.url, key, b), burst))
        assert all(r["accepted"] == BATCH for r in results)
        server.kill()  # right after the burst
        burst_ids = {m["messageId"] for b in burst for m in b}
        assert set(stored_ids(engine)) == burst_ids
        assert unprocessed(engine) == 0

        # What a crash between storing and applying would leave: events stored, not processed.
        # Devices new to known users, seen anonymously first and then identified (so applying
        # them merges profiles), and users never seen before.
        burst_users = sorted(
            {user_of(m.get("userId"), m.get("anonymousId")) for b in burst for m in b}
        )
        backlog: list[dict[str, Any]] = []
        for k in [*burst_users[:40], *range(USERS, USERS + 20)]:
            for device in range(DEVICES):
                backlog.append(message("page", anonymousId=anonymous_id(k, device), name="Home"))
            backlog.append(message("track", userId=user_id(k), event="Signed In"))
            backlog.extend(identify(k, device) for device in range(DEVICES))
        messages, errors = parse_batch(json.dumps({"batch": backlog}).encode(), datetime.now(UTC))
        assert not errors
        with Session(engine) as session, session.begin():
            ids = store(session, [event_row(m, SOURCE) for m in messages])
        assert None not in ids
        assert unprocessed(engine) == len(backlog)

        server.start()  # no request: the writer applies the backlog by itself
        wait_processed(engine, timeout=30)
        users = set(burst_users) | set(range(USERS, USERS + 20))
        # Burst users not in the backlog may have a device never identified: link them now.
        for batch in link_batches(set(burst_users[40:])):
            post_batch(server.url, key, batch)
        wait_processed(engine, timeout=30)
        assert_each_user_is_one_profile(engine, users)
        with engine.connect() as conn:
            merged_by_backlog = conn.scalar(
                select(func.count()).select_from(Merge).where(Merge.event_id.in_(ids))
            )
        assert merged_by_backlog, "applying the backlog should have merged profiles"
        assert not server.errors_logged(), server.errors_logged()[:3]
    finally:
        server.stop()
