from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from servers import wait_until
from source_helpers import events, started, state
from typer.testing import CliRunner

from cdp.cli import app
from cdp.errors import ConfigError

CONFIG = """
[scheduler]
tick_seconds = 0.1

[[sources]]
name = "crm"
type = "csv"
kind = "profiles"
path = "{path}"
schedule = "{schedule}"
mapping = {{ identifiers = {{ email = "Email" }}, traits = {{ first_name = "First" }} }}

[[sources]]
name = "manual"
type = "csv"
kind = "profiles"
path = "{path}"
mapping = {{ identifiers = {{ email = "Email" }} }}
"""


def setup(tmp_path, database_url, schedule: str = "every 1h") -> dict[str, str]:
    path = tmp_path / "crm.csv"
    path.write_text("Email,First\na@example.com,A\n,nobody\nb@example.com,B\n", encoding="utf-8")
    config = tmp_path / "cdp.toml"
    config.write_text(CONFIG.format(path=path, schedule=schedule), encoding="utf-8")
    return {**os.environ, "CDP_DATABASE_URL": database_url, "CDP_CONFIG": str(config)}


def worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cdp", "worker", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def log_messages(stderr: str) -> list[str]:
    return [json.loads(line)["message"] for line in stderr.splitlines() if line.startswith("{")]


def test_once_syncs_what_is_due_and_a_second_run_finds_nothing_due(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    first = worker(env, "--once")
    assert first.returncode == 0, first.stderr
    messages = log_messages(first.stderr)
    assert messages[0].startswith("worker started; scheduled jobs: ")
    assert "source:crm (every 1h)" in messages[0] and "manual" not in messages[0]
    assert "job source:crm started" in messages
    assert "synced crm: read 3, imported 2, duplicates 0, merged 0, rejected 1" in messages
    with started(database_url) as runtime:
        synced = state(runtime)
        assert synced.status == "completed" and len(events(runtime)) == 2
        assert state(runtime, "manual") is None  # no schedule: only `cdp sources sync` runs it

        second = worker(env, "--once")
        assert second.returncode == 0, second.stderr
        assert "job source:crm started" not in log_messages(second.stderr)
        assert state(runtime).last_run_at == synced.last_run_at and len(events(runtime)) == 2


def test_once_exits_1_when_a_job_fails(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    (tmp_path / "crm.csv").unlink()
    result = worker(env, "--once")
    assert result.returncode == 1
    assert "job source:crm failed" in log_messages(result.stderr)


def test_a_bad_schedule_stops_the_worker_naming_the_key(database_url, tmp_path):
    env = setup(tmp_path, database_url, schedule="every hour")
    result = CliRunner().invoke(app, ["worker", "--once"], env=env)
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(
        f"{env['CDP_CONFIG']}: sources[0].schedule: 'every hour' is not a schedule"
    )


def test_the_worker_runs_until_sigterm_then_exits_cleanly(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    command = [sys.executable, "-m", "cdp", "worker"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        with started(database_url) as runtime:
            assert wait_until(lambda: len(events(runtime)) == 2, 30, 0.05)
            assert wait_until(lambda: state(runtime).status == "completed", 10, 0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    messages = log_messages(stderr)
    assert messages[-2:] == ["received SIGTERM; stopping", "worker stopped"]
