"""`cdp models list|versions|train|score|rollback`."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from cdp.cli import app
from cdp.db.engine import make_engine
from cdp.models import synthetic

runner = CliRunner()

CONFIG = """
[[models]]
name = "churn"
type = "churn"
horizon = "30d"
schedule = "0 3 * * *"

[[models]]
name = "persona"
type = "personas"
clusters = 3
"""


def setup(tmp_path, database_url, config: str = CONFIG) -> dict[str, str]:
    path = tmp_path / "cdp.toml"
    path.write_text(config, encoding="utf-8")
    return {"CDP_DATABASE_URL": database_url, "CDP_CONFIG": str(path), "COLUMNS": "250"}


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def cells(output: str, name: str) -> list[str]:
    row = next(line for line in output.splitlines() if f"│ {name} " in line)
    return [cell.strip() for cell in row.strip("│ ").split("│")]


def test_train_score_list_and_roll_back(database_url, tmp_path):
    engine = make_engine(database_url)
    world = synthetic.generate(engine, 150, seed=9)
    engine.dispose()
    env = setup(tmp_path, database_url)

    listing = runner.invoke(app, ["models", "list"], env=env)
    assert listing.exit_code == 0, listing.output
    assert cells(listing.output, "churn")[:6] == [
        "churn", "churn", "classification", "churn", "none", "0",
    ]  # fmt: skip
    assert cells(listing.output, "persona")[3].startswith("persona, persona_recency_days")

    for _ in range(2):
        trained = runner.invoke(app, ["models", "train", "churn"], env=env)
        assert trained.exit_code == 0, trained.output
    assert "model churn version 2 (churn, classification)" in trained.output
    assert "held out: AUC" in trained.output and "calibration" in trained.output
    assert "100%" in trained.output

    scored = runner.invoke(app, ["models", "score", "churn"], env=env)
    assert scored.exit_code == 0, scored.output
    assert f"scored {len(world.profile_ids)} profiles with churn@2" in scored.output

    listing = runner.invoke(app, ["models", "list"], env=env)
    row = cells(listing.output, "churn")
    assert row[4:6] == ["2", "2"] and row[7].startswith("AUC")
    assert f"(v2, {len(world.profile_ids)})" in row[8] and row[9] == "0 3 * * *"

    back = runner.invoke(app, ["models", "rollback", "churn", "1", "--score"], env=env)
    assert back.exit_code == 0, back.output
    assert "model churn: version 1" in back.output and "is active" in back.output
    assert "with churn@1" in back.output
    versions = runner.invoke(app, ["models", "versions", "churn"], env=env)
    assert cells(versions.output, "1")[:2] == ["1", "yes"]
    assert cells(versions.output, "2")[:2] == ["2", ""]


def test_errors_name_the_model_or_the_key(database_url, tmp_path):
    env = setup(tmp_path, database_url)
    unknown = run_cli(env, "models", "train", "nope")
    assert unknown.returncode == 2
    assert "no model is named 'nope' (configured: churn, persona)" in unknown.stderr
    not_enough = run_cli(env, "models", "train", "churn")
    assert not_enough.returncode == 2
    assert "too little data to train: 0 profiles" in not_enough.stderr
    never = run_cli(env, "models", "score", "persona")
    assert never.returncode == 2 and "has no trained version yet" in never.stderr
    bad = setup(tmp_path, database_url, CONFIG.replace('horizon = "30d"', "horizon = 30"))
    broken = run_cli(bad, "models", "list")
    assert broken.returncode == 2
    assert "models[0].horizon: expected a duration" in broken.stderr
