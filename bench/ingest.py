"""Ingestion end to end: `/v1/batch` into one `cdp serve` process, until every event is applied.

    python bench/run.py ingest
    python bench/run.py ingest -- --database-url postgresql+psycopg://postgres@127.0.0.1/test

Batches of 100 realistic messages (identify / track / page), about 30 % of them linking
identifiers of existing profiles (a known user on a new device, an anonymous visitor giving their
e-mail), sent by `--concurrency` clients. Timing runs from the first request until the last
event is applied to its profile (processed_at set), so "accepted, stored, profile updated" is
what is measured. Baseline, in the same run: SQLAlchemy Core bulk insert of the same event rows
into a fresh database of the same kind, with no identity work.

Targets (DESIGN §7): >= 10,000 events/s and acknowledgement p99 < 50 ms on SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, insert, select, text

from cdp.db.engine import make_engine, normalise_url
from cdp.db.migrate import upgrade
from cdp.db.models import Event
from cdp.keys import Scope, create_key
from cdp.runtime import Runtime
from cdp.segments.membership import SOURCE as TIMELINE_SOURCE

BATCH = 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ingest.py")
    add_options(parser)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    warm, timed = _traffic(rng, args.users, args.batches)
    with tempfile.TemporaryDirectory() as tmp, _database(args.database_url, Path(tmp)) as url:
        run = run_server(url, Path(tmp), warm, timed, args.concurrency)
        with _database(args.database_url, Path(tmp) / "baseline") as baseline_url:
            baseline = _baseline(baseline_url, timed)
    _report(url, run.events, run.elapsed, run.acked, run.latencies, run.failures, baseline, args)
    return 1 if run.failures else 0


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (bench/segments.py runs the same traffic)."""
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server database to create "
        "throw-away databases with (default: SQLite in a temp dir)",
    )
    parser.add_argument("--users", type=int, default=20_000, help="known people before timing")
    parser.add_argument("--batches", type=int, default=600, help="timed batches of 100")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)


@dataclass
class ServerRun:
    events: int
    """Timed events stored (not counting segment timeline events)."""
    elapsed: float
    """From the first timed request until the last timed event was applied."""
    acked: float
    """From the first timed request until the last was acknowledged."""
    latencies: list[float]
    failures: int
    log: Path
    """The server's log file."""


def run_server(
    url: str,
    tmp: Path,
    warm: list[bytes],
    timed: list[bytes],
    concurrency: int,
    before_timed: Callable[[str], object] | None = None,
) -> ServerRun:
    """Migrate `url`, start `cdp serve` on it, send `warm` (not timed), call `before_timed(url)`
    (e.g. to define segments), then send `timed` and wait until every event is applied."""
    key = _setup(url)
    port = _free_port()
    server = _start(url, port, tmp)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(_send(base, key, warm, concurrency))  # known people, not timed
        _wait_applied(url)
        if before_timed is not None:
            before_timed(url)
        _analyze(url)
        already = _count(url)
        started = time.perf_counter()
        latencies, failures = asyncio.run(_send(base, key, timed, concurrency))
        acked = time.perf_counter() - started
        _wait_applied(url)
        elapsed = time.perf_counter() - started
        events = _count(url) - already
    finally:
        server.terminate()
        server.wait(timeout=30)
    return ServerRun(events, elapsed, acked, latencies, failures, tmp / "server.log")


# --- traffic -------------------------------------------------------------------------------------


def _traffic(rng: random.Random, users: int, batches: int) -> tuple[list[bytes], list[bytes]]:
    now = datetime.now(UTC)
    people = [(f"user-{i}", f"anon-{i}", f"person{i}@example.com") for i in range(users)]
    warm = [_identify(rng, now, *p) for p in people]
    messages = []
    for _ in range(batches * BATCH):
        user_id, anon, email = rng.choice(people)
        roll = rng.random()
        if roll < 0.15:  # a known user on a new device
            messages.append(_track(rng, now, userId=user_id, anonymousId=f"dev-{uuid.uuid4().hex}"))
        elif roll < 0.30:  # an anonymous visitor who gives their e-mail: merge with the person
            fresh = f"visitor-{uuid.uuid4().hex}"
            messages.append(_page(rng, now, anonymousId=fresh))
            messages[-1]["context"] = {"traits": {"email": email}}
        elif roll < 0.45:
            messages.append(_page(rng, now, anonymousId=f"visitor-{uuid.uuid4().hex}"))
        elif roll < 0.55:
            messages.append(_identify(rng, now, user_id, anon, email))
        else:
            messages.append(_track(rng, now, userId=user_id))
    return _batches(warm), _batches(messages)


def _batches(messages: list[dict[str, Any]]) -> list[bytes]:
    return [
        json.dumps(
            {"batch": messages[i : i + BATCH], "sentAt": datetime.now(UTC).isoformat()}
        ).encode()
        for i in range(0, len(messages), BATCH)
    ]


def _common(rng: random.Random, now: datetime) -> dict[str, Any]:
    at = now - timedelta(seconds=rng.randint(0, 86_400))
    return {
        "messageId": str(uuid.uuid4()),
        "timestamp": at.isoformat(),
        "context": {"library": {"name": "bench", "version": "1"}, "ip": "203.0.113.7"},
    }


def _identify(rng: random.Random, now: datetime, user_id: str, anon: str, email: str) -> dict:
    return {
        "type": "identify",
        "userId": user_id,
        "anonymousId": anon,
        "traits": {
            "email": email,
            "plan": rng.choice(["free", "pro"]),
            "visits": rng.randint(1, 50),
        },
        **_common(rng, now),
    }


def _track(rng: random.Random, now: datetime, **ids: str) -> dict:
    return {
        "type": "track",
        "event": rng.choice(["Product Viewed", "Product Added", "Order Completed"]),
        "properties": {"sku": f"SKU-{rng.randint(100, 999)}", "price": rng.randint(5, 300)},
        **ids,
        **_common(rng, now),
    }


def _page(rng: random.Random, now: datetime, **ids: str) -> dict:
    return {
        "type": "page",
        "name": "Home",
        "properties": {"path": "/", "referrer": ""},
        **ids,
        **_common(rng, now),
    }


async def _send(
    base: str, key: str, bodies: list[bytes], concurrency: int
) -> tuple[list[float], int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    failures = 0
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    headers = {"authorization": auth, "content-type": "application/json"}

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            body = queue.get_nowait()
            start = time.perf_counter()
            response = await client.post(f"{base}/v1/batch", content=body, headers=headers)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                failures += 1
                if failures < 3:
                    print(f"  request failed: {response.status_code} {response.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return latencies, failures


# --- server and databases ------------------------------------------------------------------------


@contextmanager
def _database(server_url: str | None, tmp: Path) -> Iterator[str]:
    if server_url is None:
        tmp.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    admin = create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    name = f"cdp_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _setup(url: str) -> str:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    from cdp.config import Config, DatabaseConfig

    runtime = Runtime.start(Config(database=DatabaseConfig(url=url)))
    with runtime.transaction() as session:
        key = create_key(session, frozenset({Scope.COLLECT}), "bench")[1]
    runtime.close()
    return key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(url: str, port: int, tmp: Path) -> subprocess.Popen[bytes]:
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cdp", "serve", "--port", str(port)],
        env={**os.environ, "CDP_DATABASE_URL": url},  # cwd has no cdp.toml: defaults
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: see {tmp / 'server.log'}")


def _count(url: str) -> int:
    """Stored events, without the timeline events segments write (Segment Entered / Exited)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        found = conn.scalar(select(func.count()).where(Event.source != TIMELINE_SOURCE)) or 0
    engine.dispose()
    return found


def _analyze(url: str) -> None:
    """PostgreSQL: fresh planner statistics before timing, as autovacuum would have gathered
    after the warm-up (servers run for tests often have autovacuum off; without statistics the
    planner scans whole tables where an index would do)."""
    engine = make_engine(url)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()


def _wait_applied(url: str, timeout: float = 600) -> None:
    engine = make_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if not conn.scalar(select(Event.id).where(Event.processed_at.is_(None)).limit(1)):
                    return
            time.sleep(0.02)
        raise SystemExit("events were not applied in time")
    finally:
        engine.dispose()


def _baseline(url: str, bodies: list[bytes]) -> float:
    """Events/s of SQLAlchemy Core bulk inserts of the same rows, one transaction per batch."""
    engine = make_engine(url)
    upgrade(engine)
    batches = []
    for body in bodies:
        rows = []
        for m in json.loads(body)["batch"]:
            at = datetime.fromisoformat(m["timestamp"])
            rows.append(
                {
                    "source": "bench",
                    "message_id": m["messageId"],
                    "type": m["type"],
                    "name": m.get("event") or m.get("name"),
                    "user_id": m.get("userId"),
                    "anonymous_id": m.get("anonymousId"),
                    "timestamp": at,
                    "original_timestamp": at,
                    "received_at": datetime.now(UTC),
                    "payload": m,
                }
            )
        batches.append(rows)
    started = time.perf_counter()
    for rows in batches:
        with engine.begin() as conn:
            conn.execute(insert(Event), rows)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return sum(len(r) for r in batches) / elapsed


def _report(
    url: str,
    events: int,
    elapsed: float,
    acked: float,
    latencies: list[float],
    failures: int,
    baseline: float,
    args: argparse.Namespace,
) -> None:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    rate = events / elapsed
    backend = url.split(":", 1)[0]
    print(
        f"backend: {backend}; {args.users} known people, {events} timed events in batches of "
        f"{BATCH}, concurrency {args.concurrency}"
    )
    print(
        f"server: {rate:,.0f} events/s end to end (all acknowledged after {acked:.2f} s, all "
        f"applied after {elapsed:.2f} s); ack p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms; "
        f"{failures} failed requests"
    )
    print(f"baseline (Core bulk insert, no identity work): {baseline:,.0f} events/s")
    print(
        f"server/baseline ratio: {rate / baseline:.2f}; target >= 10,000 events/s "
        f"({'met' if rate >= 10_000 else 'NOT met'}), p99 < 50 ms "
        f"({'met' if pct(0.99) < 50 else 'NOT met'})"
    )


if __name__ == "__main__":
    sys.exit(main())
