"""Real `cdp serve` processes for the durability and concurrency tests, and the database checks
those tests share.

`CdpServer` starts `python -m cdp serve` on a free loopback port with `CDP_DATABASE_URL` set,
waits for /healthz, and can be killed (SIGKILL, as a crash) or stopped (SIGTERM, then SIGKILL).
Its output goes to a log file, whose tail is shown when the server fails to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import aliased

from cdp.db.models import Event, Identifier, Merge, Profile

START_TIMEOUT = 30.0
_SERVE = (sys.executable, "-m", "cdp", "serve", "--host", "127.0.0.1")


def refused_start(config: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run `cdp serve` with a config that must stop it before it serves (port 1: never bound)."""
    return subprocess.run(
        [sys.executable, "-m", "cdp", "serve", "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CDP_DATABASE_URL": database_url},
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cdp_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CDP_CONFIG"}
    env.update({"CDP_DATABASE_URL": database_url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    return env


def run_cdp(database_url: str, *args: str, cwd: Path) -> str:
    """Run `python -m cdp …` to completion; returns its stdout (fails the test on error)."""
    result = subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cdp_env(database_url),
        cwd=cwd,
    )
    assert result.returncode == 0, f"cdp {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def create_collect_key(database_url: str, cwd: Path, name: str = "durability") -> str:
    """A collect key made by `cdp keys create` (printed on its last line). Its name is the
    `source` of the events sent with it."""
    out = run_cdp(database_url, "keys", "create", "--scope", "collect", "--name", name, cwd=cwd)
    key = out.strip().splitlines()[-1]
    assert key.startswith("cdp_"), out
    return key


class CdpServer:
    """One `cdp serve` subprocess on 127.0.0.1 and a free port."""

    def __init__(self, database_url: str, workdir: Path, name: str = "server") -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CdpServer:
        assert self.process is None, "already running"
        self._starts += 1
        self.port = free_port()
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self._starts} on port {self.port} ---\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*_SERVE, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=cdp_env(self.database_url),
                cwd=self.workdir,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"cdp serve exited early:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise AssertionError(f"cdp serve not healthy after {START_TIMEOUT} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: a crash, with requests in flight and nothing flushed or closed."""
        if self.process is not None:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """SIGTERM (uvicorn's graceful shutdown), then SIGKILL if it takes too long."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
            self.kill()

    def errors_logged(self) -> list[str]:
        """The ERROR (or worse) records of the server's JSON log, and any bare traceback."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line:
                    found.append(line)
                continue
            if isinstance(record, dict) and record.get("level") in ("ERROR", "CRITICAL"):
                trace = str(record.get("exc_info", "")).splitlines()
                cause = [line for line in trace if "Error" in line or "Exception" in line][-1:]
                found.append(f"{record.get('message')} {cause}"[:500])
        return found

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# --- database checks ----------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def unprocessed(engine: Engine) -> int:
    with engine.connect() as conn:
        return (
            conn.scalar(select(func.count()).select_from(Event).where(Event.processed_at.is_(None)))
            or 0
        )


def wait_processed(engine: Engine, timeout: float = 30.0) -> None:
    """Until no event is waiting for identity resolution (the writers' backlog is done)."""
    if not wait_until(lambda: unprocessed(engine) == 0, timeout, 0.2):
        raise AssertionError(f"{unprocessed(engine)} events still unprocessed after {timeout} s")


def identity_problems(engine: Engine) -> list[str]:
    """Whatever breaks the store's identity invariants, described; [] when all hold.

    Every event processed without error and attached to a live profile; every identifier on a
    live profile; every live profile holding an identifier; every merged profile pointing at a
    live survivor and explained by a `merges` row; no (source, messageId) stored twice.
    """
    problems: list[str] = []
    owner = aliased(Profile)
    with engine.connect() as conn:
        for what, statement in [
            ("events not processed", select(Event.id).where(Event.processed_at.is_(None))),
            ("events with an error", select(Event.id).where(Event.error.is_not(None))),
            ("events on no profile", select(Event.id).where(Event.profile_id.is_(None))),
            (
                "events on a merged-away or missing profile",
                select(Event.id)
                .outerjoin(owner, owner.id == Event.profile_id)
                .where(Event.profile_id.is_not(None))
                .where((owner.id.is_(None)) | owner.merged_into.is_not(None)),
            ),
            (
                "identifiers on a merged-away profile",
                select(Identifier.type, Identifier.value)
                .join(owner, owner.id == Identifier.profile_id)
                .where(owner.merged_into.is_not(None)),
            ),
            (
                "live profiles without identifiers",
                select(Profile.id)
                .where(Profile.merged_into.is_(None))
                .where(~select(Identifier.id).where(Identifier.profile_id == Profile.id).exists()),
            ),
            (
                "merged profiles whose survivor is not live",
                select(Profile.id)
                .join(owner, owner.id == Profile.merged_into)
                .where(owner.merged_into.is_not(None)),
            ),
            (
                "merged profiles with no merges row",
                select(Profile.id)
                .where(Profile.merged_into.is_not(None))
                .where(
                    ~select(Merge.id)
                    .where(Merge.merged_id == Profile.id, Merge.kind == "merge")
                    .exists()
                ),
            ),
            (
                "(source, messageId) stored more than once",
                select(Event.source, Event.message_id)
                .group_by(Event.source, Event.message_id)
                .having(func.count() > 1),
            ),
        ]:
            rows = conn.execute(statement.limit(5)).all()
            if rows:
                problems.append(f"{what}: {[tuple(r) for r in rows]}")
    return problems


def profiles_of_events(engine: Engine, source: str) -> dict[str, str | None]:
    """{messageId: profile id} of every event from `source`."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Event.message_id, Event.profile_id).where(Event.source == source)
        )
        return {r.message_id: r.profile_id for r in rows}


def owners(engine: Engine) -> dict[tuple[str, str], str]:
    """{(type, value): profile id} of every identifier."""
    with engine.connect() as conn:
        rows = conn.execute(select(Identifier.type, Identifier.value, Identifier.profile_id))
        return {(r.type, r.value): r.profile_id for r in rows}


def live_profile_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return (
            conn.scalar(
                select(func.count()).select_from(Profile).where(Profile.merged_into.is_(None))
            )
            or 0
        )
