"""Versions, rollback, on-demand scoring, scores in segments, the scheduled job, and hostile
input: unknown names, bad options, tampered artefacts, too little data."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import skops.io as sio
from model_helpers import NOW, add_event, add_profile, days_ago, models_config, start
from sqlalchemy import func, select, update

from cdp.db.models import ModelState, ModelVersion, Score
from cdp.errors import ConfigError, NotFoundError
from cdp.models import artefacts, jobs, service, synthetic
from cdp.models.artefacts import ArtefactRefused
from cdp.models.scoring import NotTrained
from cdp.models.training import TooLittleData
from cdp.runtime import Runtime
from cdp.segments import service as segments


@pytest.fixture
def shop(engine) -> synthetic.World:
    return synthetic.generate(engine, 240, now=NOW, seed=3)


@pytest.fixture
def churn(database_url, shop) -> Runtime:
    runtime = start(database_url, "churn", "persona")
    yield runtime
    runtime.close()


def scores(runtime: Runtime, name: str) -> dict[str, Score]:
    with runtime.sessions() as session:
        return {s.profile_id: s for s in session.scalars(select(Score).where(Score.name == name))}


def active(runtime: Runtime, name: str) -> int | None:
    with runtime.sessions() as session:
        state = session.get(ModelState, name)
        return state.active_version if state else None


# --- versions and rollback ------------------------------------------------------------------


def test_versions_are_numbered_stored_and_rolled_back(churn, shop):
    first = service.train(churn, "churn", now=NOW)
    second = service.train(churn, "churn", now=NOW - timedelta(days=1))
    assert (first.version, second.version) == (1, 2)
    assert active(churn, "churn") == 2
    assert second.cutoff == NOW - timedelta(days=31)
    assert second.label_end == NOW - timedelta(days=1)
    assert second.feature_start == second.cutoff - timedelta(days=365)
    assert second.features[:2] == ["events_7d", "events_30d"]
    assert second.options["horizon"] == "30d" and second.options["lookback"] == "365d"
    assert "scikit-learn" in second.code_version and "enricher churn v1" in second.code_version
    assert second.artefact_sha256 == artefacts.sha256(second.artefact)

    service.score(churn, "churn", now=NOW)
    assert {s.model_version for s in scores(churn, "churn").values()} == {"churn@2"}

    back = service.rollback(churn, "churn", 1)
    assert back.version == 1 and active(churn, "churn") == 1
    summary = service.score(churn, "churn", now=NOW)
    assert summary.profiles == len(shop.profile_ids) and summary.version == "churn@1"
    assert {s.model_version for s in scores(churn, "churn").values()} == {"churn@1"}
    [item] = service.overview(churn, ["churn"])
    assert [v.version for v in item.versions] == [1, 2] and item.active.version == 1
    assert item.state.scored_version == 1 and item.state.scored_profiles == summary.profiles

    with pytest.raises(NotFoundError, match=r"model 'churn' has no version 7 \(versions: 1, 2\)"):
        service.rollback(churn, "churn", 7)
    assert active(churn, "churn") == 1


def test_scores_update_in_place_one_row_per_profile_and_output(churn, shop):
    service.train(churn, "persona", now=NOW)
    service.score(churn, "persona", now=NOW, chunk=50)
    service.score(churn, "persona", now=NOW, chunk=70)
    with churn.sessions() as session:
        rows = session.execute(
            select(Score.name, func.count()).group_by(Score.name).order_by(Score.name)
        ).all()
    n = len(shop.profile_ids)
    assert rows == [
        ("persona", n), ("persona_frequency", n), ("persona_monetary", n),
        ("persona_recency_days", n),
    ]  # fmt: skip
    labelled = scores(churn, "persona")
    assert all(s.value is None and s.label for s in labelled.values())


# --- on-demand scoring ----------------------------------------------------------------------


def test_stale_or_missing_scores_are_computed_when_asked_for(churn, shop):
    pid = shop.profile_ids[0]
    assert service.refresh_scores(churn, [pid], now=NOW) == 0  # nothing trained: nothing to do
    service.train(churn, "churn", now=NOW)
    assert service.refresh_scores(churn, [pid, "no-such-profile"], now=NOW) == 1
    assert scores(churn, "churn")[pid].model_version == "churn@1"
    assert service.refresh_scores(churn, [pid], now=NOW) == 0  # fresh now
    assert service.refresh_scores(churn, [pid], now=NOW + timedelta(days=2)) == 1  # stale_after
    service.train(churn, "churn", now=NOW)
    assert service.refresh_scores(churn, [pid], now=NOW + timedelta(days=2)) == 1  # new version
    assert scores(churn, "churn")[pid].model_version == "churn@2"
    assert set(service.profile_scores(churn, pid)) == {"churn"}


# --- scores in segments ---------------------------------------------------------------------


def test_scores_are_usable_in_segment_conditions(churn, shop):
    service.train(churn, "churn", now=NOW)
    service.train(churn, "persona", now=NOW)
    service.score(churn, "churn", now=NOW)
    service.score(churn, "persona", now=NOW)
    churn_scores = scores(churn, "churn")
    likely = {pid for pid, s in churn_scores.items() if s.value > 0.5}
    assert 0 < len(likely) < len(churn_scores)
    found = segments.preview(churn, {"score": "churn", "op": ">", "value": 0.5}, sample=100)
    assert found.size == len(likely)
    assert set(found.sample) <= likely
    non_buyers = {pid for pid, s in scores(churn, "persona").items() if s.label == "non-buyers"}
    found = segments.preview(churn, {"score": "persona", "op": "=", "value": "non-buyers"})
    assert found.size == len(non_buyers) > 0
    both = segments.preview(
        churn,
        {"and": [{"score": "churn", "op": ">", "value": 0.5}, {"score": "persona_frequency",
            "op": ">=", "value": 1}]},
    )  # fmt: skip
    assert 0 <= both.size <= len(likely)


# --- the scheduled job ----------------------------------------------------------------------


def test_the_scheduled_job_trains_then_scores_once_per_due_time(database_url, engine):
    shop = synthetic.generate(engine, 240, seed=3)  # ending now: jobs train as of now
    runtime = start(database_url, churn={"type": "churn", "schedule": "every 1d"})
    try:
        [job] = jobs.model_jobs(runtime)
        assert job.name == "model:churn" and job.last_run() is None
        job.run(threading.Event())
        assert active(runtime, "churn") == 1
        assert len(scores(runtime, "churn")) == len(shop.profile_ids)
        assert job.last_run() is not None
        job.run(threading.Event())  # not due again (as another process would find): no-op
        assert active(runtime, "churn") == 1
    finally:
        runtime.close()
    assert jobs.model_jobs(start(database_url, "churn")) == []  # no schedule, no job


# --- hostile input --------------------------------------------------------------------------


def test_a_tampered_artefact_is_refused_and_never_loaded(churn, shop, monkeypatch):
    version = service.train(churn, "churn", now=NOW)
    tampered = bytearray(version.artefact)
    tampered[len(tampered) // 2] ^= 0xFF
    with churn.transaction() as session:
        session.execute(update(ModelVersion).values(artefact=bytes(tampered)))
    loaded = []
    monkeypatch.setattr(sio, "loads", lambda *a, **k: loaded.append(1))
    with pytest.raises(ArtefactRefused, match=r"SHA-256 .* was changed since, and is refused"):
        service.score(churn, "churn", now=NOW)
    assert loaded == [] and scores(churn, "churn") == {}
    # On a read, the stored scores are served and the failure is logged, not raised.
    service.refresh_quietly(churn, [shop.profile_ids[0]])


def test_an_artefact_with_untrusted_types_or_not_skops_is_refused(churn):
    service.train(churn, "churn", now=NOW)
    evil = sio.dumps({"f": threading.Thread})  # a type no enricher declared
    pickled = b"\x80\x04\x95" + b"cos\nsystem\n" + b"." * 20
    for data, message in [(evil, "types that are not trusted"), (pickled, "not in the skops")]:
        with churn.transaction() as session:
            session.execute(
                update(ModelVersion).values(artefact=data, artefact_sha256=artefacts.sha256(data))
            )
        churn.caches.clear()
        with pytest.raises(ArtefactRefused, match=message):
            service.score(churn, "churn", now=NOW)


def test_too_little_data_names_what_is_needed(database_url, engine):
    runtime = start(database_url, "churn", "persona")
    try:
        pid = add_profile(engine)
        add_event(engine, pid, days_ago(40), total=10)
        with pytest.raises(TooLittleData, match=r"1 profiles had events .* at least 50 are needed"):
            service.train(runtime, "churn", now=NOW)
        for _ in range(60):  # enough profiles, but nobody is active in the label window
            add_event(engine, add_profile(engine), days_ago(40), total=10)
        with pytest.raises(TooLittleData, match=r"61 are positive and 0 negative .* at least 10"):
            service.train(runtime, "churn", now=NOW)
        with pytest.raises(NotTrained, match="run `cdp models train churn`"):
            service.score(runtime, "churn", now=NOW)
        with runtime.sessions() as session:
            assert session.scalar(select(func.count()).select_from(ModelVersion)) == 0
    finally:
        runtime.close()


def test_unknown_models_are_refused_naming_the_configured_ones(churn):
    with pytest.raises(NotFoundError, match=r"no model is named 'nope' \(configured: churn, per"):
        service.train(churn, "nope")
    with pytest.raises(NotFoundError, match="no model is named"):
        service.rollback(churn, "nope", 1)


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"m": {"type": "churn", "horizon": "soon"}}, r"models\[0\]\.horizon: .*\"30d\""),
        ({"m": {"type": "churn", "colour": "red"}}, r"models\[0\]\.colour: unknown key"),
        ({"m": {"type": "nope"}}, r"models\[0\]\.type: no enricher type 'nope'"),
        ({"m": {"type": "churn", "schedule": "often"}}, r"models\[0\]\.schedule: 'often' is not"),
        ({"m": {"type": "churn", "stale_after": "0d"}}, r"models\[0\]\.stale_after"),
        ({"m": {"type": "propensity"}}, r"models\[0\]\.event: required|models\[0\]\.event: Field"),
        (
            {"m": {"type": "churn"}, "n": {"type": "churn", "score": "m"}},
            r"models\[1\]\.name: model 'm' already writes the score 'm'",
        ),
        ({"m": {"type": "personas", "clusters": 40}}, r"models\[0\]\.clusters: .*12"),
    ],
)
def test_bad_model_entries_name_the_file_entry_and_key(database_url, entries, message):
    from cdp.models.registry import load_models

    config = models_config(database_url, *(), **entries)
    runtime = Runtime.start(models_config(database_url, "churn"))
    try:
        with pytest.raises(ConfigError, match=f"^cdp.toml: {message}"):
            load_models(config, runtime.plugins)
    finally:
        runtime.close()


def test_a_vendor_enricher_that_breaks_the_contract_is_refused(database_url):
    from cdp.components import Enricher, Feature, Output
    from cdp.hookspecs import hookimpl
    from cdp.models.registry import load_models

    class NoTarget(Enricher):  # classifies, but says nothing of what to predict
        name = "no-target"
        task = "classification"

        def outputs(self):
            return [Output(self.model)]

        def features(self):
            return [Feature("n", "count")]

        def estimator(self):
            return None

    class Plugin:
        @hookimpl
        def register_enrichers(self):
            return [NoTarget]

    config = models_config(database_url, "churn", m={"type": "no-target"})
    runtime = Runtime.start(config, extra_plugins=[("vendor", Plugin())])
    try:
        with pytest.raises(ConfigError, match=r"models\[1\]\.type: .* must declare a target"):
            load_models(config, runtime.plugins)
    finally:
        runtime.close()


def test_a_vendor_enricher_as_in_the_docs_trains_and_scores_through_the_core(database_url, shop):
    """docs/models.md's example, on the shop's events: declarations, an estimator skops trusts
    by default, the default score()."""
    from pydantic import BaseModel, ConfigDict
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cdp.components import Enricher, Events, Feature, Output, Target
    from cdp.hookspecs import hookimpl
    from cdp.models.spec import Duration

    class UpgradeOptions(BaseModel):
        model_config = ConfigDict(extra="forbid")
        horizon: Duration = timedelta(days=14)

    class Upgrade(Enricher):
        name = "upgrade"
        Options = UpgradeOptions
        task = "classification"

        def outputs(self):
            return [Output(self.model)]

        def features(self):
            views = Events(names=("Product Viewed",))
            return [
                Feature("views_7d", "count", views, within=timedelta(days=7)),
                Feature("days_since_view", "days_since_last", views, fill=999.0),
                Feature("active_days_30d", "active_days", within=timedelta(days=30)),
            ]

        def target(self):
            return Target("any", self.options.horizon, Events(names=("Order Completed",)))

        def estimator(self):
            return make_pipeline(StandardScaler(), LogisticRegression())

    class Plugin:
        @hookimpl
        def register_enrichers(self):
            return [Upgrade]

    config = models_config(database_url, upgrade_14d={"type": "upgrade", "horizon": "14d"})
    runtime = Runtime.start(config, extra_plugins=[("vendor", Plugin())])
    try:
        version = service.train(runtime, "upgrade_14d", now=NOW)
        assert version.metrics["auc"] > 0.6 and "plugin vendor" in version.code_version
        assert version.options == {"horizon": "14d"}
        service.score(runtime, "upgrade_14d", now=NOW)
        values = [s.value for s in scores(runtime, "upgrade_14d").values()]
        assert len(values) == len(shop.profile_ids) and all(0 <= v <= 1 for v in values)
    finally:
        runtime.close()
