from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from cdp.cli import app
from cdp.db.engine import make_engine
from cdp.db.migrate import current_revision, head_revision
from cdp.db.models import ApiKey, Event, Identifier, Profile
from cdp.keys import hash_key

runner = CliRunner()


def cdp(url: str, *args: str):
    return runner.invoke(app, list(args), env={"CDP_DATABASE_URL": url, "COLUMNS": "200"})


def run_cli(*args: str, env: dict[str, str] | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
    )


def test_migrate_upgrades_then_reports_nothing_to_do(empty_database_url):
    first = cdp(empty_database_url, "migrate")
    assert first.exit_code == 0, first.output
    assert f"upgraded from empty to revision {head_revision()}" in first.output
    second = cdp(empty_database_url, "migrate")
    assert f"already at revision {head_revision()}" in second.output
    engine = make_engine(empty_database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_keys_create_prints_the_key_last_and_stores_its_hash(database_url):
    result = cdp(
        database_url, "keys", "create", "--scope", "read", "--scope", "collect", "--name", "web"
    )
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("cdp_")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(select(ApiKey.key_hash, ApiKey.scopes, ApiKey.name)).one()
    engine.dispose()
    assert tuple(row) == (hash_key(key), "collect read", "web")

    listing = cdp(database_url, "keys", "list")
    assert key[:12] in listing.output and key not in listing.output

    revoked = cdp(database_url, "keys", "revoke", key[:12])
    assert revoked.exit_code == 0 and "revoked key 1" in revoked.output


def test_keys_create_refuses_an_unknown_scope(database_url):
    result = run_cli("keys", "create", "--scope", "write", env={"CDP_DATABASE_URL": database_url})
    assert result.returncode == 2
    assert "unknown scope 'write': use read, collect or admin" in result.stderr


def test_plugins_list_shows_bundled_plugins(database_url):
    result = cdp(database_url, "plugins", "list")
    assert result.exit_code == 0
    assert "log" in result.output and "channel:log" in result.output


def test_config_error_exits_2_naming_file_and_key(tmp_path):
    config = tmp_path / "cdp.toml"
    config.write_text("[server]\nprot = 1\n")
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}: server.prot: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path):
    result = run_cli("serve", env={"CDP_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"})
    assert result.returncode == 2
    assert "run `cdp migrate`" in result.stderr


def test_demo_loads_once_and_prints_working_keys(empty_database_url):
    first = cdp(empty_database_url, "demo", "--profiles", "30")
    assert first.exit_code == 0, first.output
    assert "demo data loaded" in first.output
    lines = dict(line.split(":", 1) for line in first.output.splitlines() if "key:" in line)
    assert lines["read key"].strip().startswith("cdp_")
    assert lines["collect key"].strip().startswith("cdp_")
    second = cdp(empty_database_url, "demo", "--profiles", "30")
    assert "demo data was already loaded" in second.output
    engine = make_engine(empty_database_url)
    with engine.connect() as conn:
        # 30 shoppers, each one profile with its user_id; every demo event applied
        assert conn.scalar(select(func.count()).where(Identifier.type == "user_id")) == 30
        users = conn.scalar(
            select(func.count(func.distinct(Identifier.profile_id))).where(
                Identifier.type == "user_id"
            )
        )
        assert users == 30
        unapplied = (
            select(func.count())
            .select_from(Event)
            .where((Event.processed_at.is_(None)) | (Event.error.is_not(None)))
        )
        assert conn.scalar(unapplied) == 0
        assert conn.scalar(select(func.count()).select_from(Profile)) >= 30
    engine.dispose()


@pytest.mark.parametrize(
    "command", [[], ["serve"], ["keys", "create"], ["demo"], ["plugins", "list"]]
)
def test_help_is_available(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
