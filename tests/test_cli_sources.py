from __future__ import annotations

import os
import subprocess
import sys

from source_helpers import events, started, state
from typer.testing import CliRunner

from cdp.cli import app
from cdp.sources.claim import claim_source

runner = CliRunner()

CONFIG = """
[[sources]]
name = "crm"
type = "csv"
kind = "profiles"
path = "{path}"
mapping = {{ identifiers = {{ email = "Email" }}, traits = {{ first_name = "First" }} }}
"""


def setup(tmp_path, database_url) -> dict[str, str]:
    path = tmp_path / "crm.csv"
    path.write_text("Email,First\na@example.com,A\n,nobody\nb@example.com,B\n", encoding="utf-8")
    config = tmp_path / "cdp.toml"
    config.write_text(CONFIG.format(path=path), encoding="utf-8")
    return {"CDP_DATABASE_URL": database_url, "CDP_CONFIG": str(config), "COLUMNS": "250"}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_sync_prints_a_summary_and_list_shows_the_state(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    before = runner.invoke(app, ["sources", "list"], env=env)
    assert before.exit_code == 0, before.output
    assert "crm" in before.output and "never run" in before.output

    result = runner.invoke(app, ["sources", "sync", "crm"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "crm: read 3, imported 2, duplicates 0, merged 0, rejected 1"
    )
    assert "100%" in result.output and "rows/s" in result.output

    listing = runner.invoke(app, ["sources", "list"], env=env)
    row = next(line for line in listing.output.splitlines() if "│ crm" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:4] == ["crm", "csv", "profiles", "completed"]
    assert cells[5:11] == ["1 file done", "3", "2", "0", "0", "1"]


def test_errors_name_the_source_or_the_holder(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    unknown = run_cli(env, "sources", "sync", "erp")
    assert unknown.returncode == 2
    assert f"error: {env['CDP_CONFIG']}: no source is named 'erp' (configured: crm)" in " ".join(
        unknown.stderr.split()
    )
    with started(database_url) as runtime:
        claim_source(runtime, "crm")
        busy = run_cli(env, "sources", "sync", "crm")
        assert busy.returncode == 2
        assert "error: source 'crm' is being synced by" in busy.stderr
        assert events(runtime) == [] and state(runtime).status == "running"
