"""Features and labels computed in the database: each aggregate on both backends, the event
filters, chunking, and the time split (features never see the label window)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from model_helpers import NOW, add_event, add_profile, days_ago

from cdp.components import Events, Feature, Target
from cdp.models.features import FeatureBuilder, lookback_start, profile_chunks

BUY = Events(names=("Order Completed",))
FEATURES = [
    Feature("orders", "count", BUY),
    Feature("orders_7d", "count", BUY, within=timedelta(days=7)),
    Feature("spend", "sum", BUY, property="properties.total"),
    Feature("avg_order", "avg", BUY, property="properties.total"),
    Feature("biggest", "max", BUY, property="properties.total"),
    Feature("smallest", "min", BUY, property="properties.total"),
    Feature("days_since_order", "days_since_last", BUY),
    Feature("days_since_first", "days_since_first", Events()),
    Feature("active_days", "active_days", Events()),
    Feature("pages", "count", Events(types=("page",))),
    Feature("shoe_orders", "count", Events(where={"properties.products[].category": "shoes"})),
    Feature("eur_orders", "count", Events(where={"properties.currency": "EUR"})),
    Feature("gift_orders", "count", Events(where={"properties.gift": True})),
    Feature("big_orders", "count", Events(where={"properties.total": 100})),
    Feature("no_order_fill", "days_since_last", Events(names=("Nope",)), fill=-1.0),
]


def matrix(engine, ids, cutoff=NOW, features=FEATURES):
    with engine.connect() as conn:
        return FeatureBuilder(engine.dialect.name, features).matrix(conn, sorted(ids), cutoff)


def column(result, pid, ids, name):
    values, _ = result
    return values[sorted(ids).index(pid), [f.name for f in FEATURES].index(name)]


def test_every_aggregate_on_hand_made_events(engine):
    a, b = add_profile(engine), add_profile(engine)
    shoes = [{"category": "shoes", "quantity": 1}]
    add_event(engine, a, days_ago(10), total=40, currency="EUR", products=shoes)
    add_event(engine, a, days_ago(3), total=100, gift=True, products=[{"category": "hats"}])
    add_event(engine, a, days_ago(3, NOW + timedelta(hours=1)), "Home", "page")
    add_event(engine, a, days_ago(20), "Home", "page")
    got = matrix(engine, [a, b])
    ids = [a, b]
    assert column(got, a, ids, "orders") == 2
    assert column(got, a, ids, "orders_7d") == 1
    assert column(got, a, ids, "spend") == 140
    assert column(got, a, ids, "avg_order") == 70
    assert column(got, a, ids, "biggest") == 100
    assert column(got, a, ids, "smallest") == 40
    assert column(got, a, ids, "days_since_order") == pytest.approx(3, abs=1e-4)
    assert column(got, a, ids, "days_since_first") == pytest.approx(20, abs=1e-4)
    assert column(got, a, ids, "active_days") == 3  # days 20, 10 and 3 (two events that day)
    assert column(got, a, ids, "pages") == 2
    assert column(got, a, ids, "shoe_orders") == 1
    assert column(got, a, ids, "eur_orders") == 1
    assert column(got, a, ids, "gift_orders") == 1
    assert column(got, a, ids, "big_orders") == 1
    assert column(got, a, ids, "no_order_fill") == -1
    # b has no events: counts and sums are 0, the others missing (NaN) unless filled
    assert column(got, b, ids, "orders") == 0 and column(got, b, ids, "spend") == 0
    assert np.isnan(column(got, b, ids, "avg_order"))
    assert np.isnan(column(got, b, ids, "days_since_order"))
    assert column(got, b, ids, "no_order_fill") == -1
    assert list(got[1]) == [4, 0]  # events seen in the lookback: the training population


def test_features_never_see_the_label_window(engine):
    """Whatever happens at or after the cut-off (the label window) changes no feature: the
    matrix is identical before and after adding events there, even on the cut-off itself."""
    ids = [add_profile(engine) for _ in range(3)]
    for i, pid in enumerate(ids):
        for d in range(1, 6 + i):
            add_event(engine, pid, days_ago(d * 3), total=10 * d, products=[{"category": "shoes"}])
    before = matrix(engine, ids)
    for pid in ids:
        add_event(engine, pid, NOW, total=1e6, products=[{"category": "shoes"}])  # on the cut-off
        for h in range(1, 30):
            add_event(engine, pid, NOW + timedelta(hours=h * 7), total=1e6, currency="EUR")
            add_event(engine, pid, NOW + timedelta(hours=h * 7), "Home", "page")
    after = matrix(engine, ids)
    np.testing.assert_array_equal(before[0], after[0])  # NaN equals NaN here
    np.testing.assert_array_equal(before[1], after[1])
    # … while the labels see exactly those events, and nothing before the cut-off
    target = Target("sum", timedelta(days=30), BUY, property="properties.total")
    with engine.connect() as conn:
        labels = FeatureBuilder(engine.dialect.name, FEATURES).labels(
            conn, sorted(ids), target, NOW
        )
    assert list(labels) == [1e6 + 29 * 1e6] * 3


def test_labels_any_and_none_and_the_window_end(engine):
    active, quiet, late = add_profile(engine), add_profile(engine), add_profile(engine)
    add_event(engine, active, NOW + timedelta(days=2), "Home", "page")
    add_event(engine, late, NOW + timedelta(days=30), "Home", "page")  # just after the window
    ids = sorted([active, quiet, late])
    builder = FeatureBuilder(engine.dialect.name, FEATURES)
    with engine.connect() as conn:
        anyone = builder.labels(conn, ids, Target("any", timedelta(days=30), Events()), NOW)
        none = builder.labels(conn, ids, Target("none", timedelta(days=30), Events()), NOW)
    assert dict(zip(ids, anyone.tolist(), strict=True)) == {active: 1, quiet: 0, late: 0}
    assert dict(zip(ids, none.tolist(), strict=True)) == {active: 0, quiet: 1, late: 1}


def test_lookback_bounds_what_features_read(engine):
    pid = add_profile(engine)
    add_event(engine, pid, days_ago(400), total=5)
    add_event(engine, pid, days_ago(100), total=7)
    year = timedelta(days=365)
    features = [Feature("spend", "sum", BUY, property="properties.total", within=year)]
    assert lookback_start(features, NOW) == NOW - year
    assert lookback_start(FEATURES, NOW) is None  # a feature without a window reads it all
    values, seen = matrix(engine, [pid], features=features)
    assert values[0, 0] == 7 and seen[0] == 1


def test_chunks_cover_every_live_profile_once(engine):
    from sqlalchemy import update

    from cdp.db.models import Profile

    ids = sorted(add_profile(engine) for _ in range(7))
    with engine.begin() as conn:
        conn.execute(update(Profile).where(Profile.id == ids[3]).values(merged_into=ids[0]))
    with engine.connect() as conn:
        chunks = list(profile_chunks(conn, 3))
        some = list(profile_chunks(conn, 2, [ids[1], ids[3], ids[5], "nobody"]))
    assert [len(c) for c in chunks] == [3, 3]
    assert [p for c in chunks for p in c] == [p for p in ids if p != ids[3]]
    assert some == [[ids[1]], [ids[5]]]
