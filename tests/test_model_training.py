"""Each bundled enricher, trained on a generated shop with a known signal (cdp.models.synthetic),
beats the trivial baseline and comes within reach of the model that generated the data; then
scores every profile. One shop per backend, shared by the tests of this module.

Run with `-s` to see each version's evaluation report."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import BACKENDS
from model_helpers import NOW, start
from sklearn.metrics import adjusted_rand_score, r2_score, roc_auc_score
from sqlalchemy import select

from cdp.db.engine import make_engine
from cdp.db.models import Score
from cdp.models import service, synthetic
from cdp.models.report import report

PROFILES = 1200


@pytest.fixture(scope="module", params=BACKENDS)
def shop(request, tmp_path_factory, sqlite_template, postgres) -> Iterator[tuple[str, object]]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("shop") / "cdp.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = postgres.create(template=postgres.template)
    engine = make_engine(url)
    world = synthetic.generate(engine, PROFILES, now=NOW, seed=11)
    engine.dispose()
    yield url, world
    if request.param != "sqlite":
        postgres.drop(url)


def train_and_score(url: str, name: str) -> tuple[dict, dict[str, Score]]:
    runtime = start(url, name)
    try:
        version = service.train(runtime, name, now=NOW)
        print(f"\n{report(version)}")
        summary = service.score(runtime, name, now=NOW, chunk=500)
        assert summary.profiles == PROFILES
        with runtime.sessions() as session:
            scores = {
                (s.profile_id, s.name): s
                for s in session.scalars(select(Score).where(Score.name.like(f"{name}%")))
            }
    finally:
        runtime.close()
    return version.metrics, scores


def values(world, scores, name: str) -> np.ndarray:
    return np.array([scores[(pid, name)].value for pid in world.profile_ids])


def test_churn_beats_the_baseline_and_nears_the_generating_model(shop):
    url, world = shop
    metrics, scores = train_and_score(url, "churn")
    oracle = roc_auc_score(world.churned, world.p_churn)
    assert metrics["auc"] > 0.7
    assert metrics["auc"] > oracle - 0.1, (metrics["auc"], oracle)
    assert metrics["log_loss"] < metrics["baseline_log_loss"]
    assert metrics["positives_train"] + metrics["positives_test"] >= 20
    assert sum(b["count"] for b in metrics["calibration"]) == metrics["test_size"]
    assert metrics["calibration_error"] < 0.1
    # Scores of every profile follow the generating probability.
    assert np.corrcoef(values(world, scores, "churn"), world.p_churn)[0, 1] > 0.6
    assert {s.model_version for s in scores.values()} == {"churn@1"}


def test_propensity_for_a_category_beats_the_baseline_and_nears_the_generating_model(shop):
    url, world = shop
    metrics, scores = train_and_score(url, "propensity_shoes")
    oracle = roc_auc_score(world.bought_shoes, world.p_shoes)
    assert metrics["auc"] > 0.75
    assert metrics["auc"] > oracle - 0.1, (metrics["auc"], oracle)
    assert metrics["log_loss"] < metrics["baseline_log_loss"]
    assert np.corrcoef(values(world, scores, "propensity_shoes"), world.p_shoes)[0, 1] > 0.6


def test_lifetime_value_beats_the_mean_and_nears_the_generating_model(shop):
    url, world = shop
    metrics, scores = train_and_score(url, "ltv")
    oracle = r2_score(world.spend, world.expected_spend)
    assert metrics["r2"] > 0.4
    assert metrics["r2"] > oracle - 0.15, (metrics["r2"], oracle)
    assert metrics["mae"] < 0.7 * metrics["baseline_mae"]
    predicted = values(world, scores, "ltv")
    assert predicted.min() >= 0
    assert np.corrcoef(predicted, world.expected_spend)[0, 1] > 0.7


def test_personas_find_the_generating_groups_and_name_them(shop):
    url, world = shop
    metrics, scores = train_and_score(url, "persona")
    assert metrics["silhouette"] > 0.4
    assert sum(metrics["cluster_sizes"].values()) == metrics["examples"]
    labels = [scores[(pid, "persona")].label for pid in world.profile_ids]
    assert adjusted_rand_score(world.persona, labels) > 0.3  # a trivial clustering scores 0
    found = Counter(zip(world.persona, labels, strict=True))
    for persona, name in [
        ("frequent high spenders", "frequent high spenders"),
        ("non-buyers", "non-buyers"),
    ]:
        members = sum(n for (p, _), n in found.items() if p == persona)
        named = sum(n for (p, label), n in found.items() if p == persona and name in label)
        assert named / members > 0.75, (persona, found)
    # The RFM features are on the profile, beside the label.
    pid = world.profile_ids[0]
    assert {"persona_recency_days", "persona_frequency", "persona_monetary"} <= {
        name for (p, name) in scores if p == pid
    }
