"""Segments kept current: bulk on save, incremental as events arrive, expiry on time, hooks,
timeline events; and incremental and bulk evaluation agreeing on a randomised data set."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from identity_helpers import msg, owner, send
from sqlalchemy import select

from cdp.db.models import Event, SegmentMembership
from cdp.errors import UserError
from cdp.hookspecs import hookimpl
from cdp.identity.merge import lock_identity
from cdp.runtime import Runtime
from cdp.segments import service
from cdp.segments.compiler import Compiler
from cdp.segments.conditions import ConditionError
from cdp.segments.definitions import load
from cdp.segments.engine import Evaluator

NOW = datetime.now(UTC)


def members(runtime: Runtime, key: str) -> set[str]:
    with runtime.sessions() as session:
        return set(
            session.scalars(
                select(SegmentMembership.profile_id).where(
                    SegmentMembership.segment_key == key, SegmentMembership.left_at.is_(None)
                )
            )
        )


def person(runtime: Runtime, user_id: str) -> str:
    found = owner(runtime, "user_id", user_id)
    assert found is not None
    return found


def order(user_id: str, total: float, days_ago: float) -> object:
    at = NOW - timedelta(days=days_ago)
    return msg("track", at, userId=user_id, event="Order Completed", properties={"total": total})


def test_saving_a_segment_computes_its_members_and_identify_moves_people_in_and_out(runtime):
    send(
        runtime,
        msg("identify", NOW, userId="ada", traits={"plan": "pro"}),
        msg("identify", NOW, userId="bob", traits={"plan": "free"}),
    )
    service.upsert_segment(runtime, "pro", {"trait": "plan", "op": "=", "value": "pro"})
    assert members(runtime, "pro") == {person(runtime, "ada")}

    send(runtime, msg("identify", NOW, userId="bob", traits={"plan": "pro"}))
    send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "free"}))
    assert members(runtime, "pro") == {person(runtime, "bob")}

    with runtime.sessions() as session:
        timeline = session.execute(
            select(Event.name, Event.profile_id, Event.payload)
            .where(Event.source == "cdp:segments")
            .order_by(Event.id)
        ).all()
    assert [(name, pid) for name, pid, _ in timeline] == [
        ("Segment Entered", person(runtime, "ada")),
        ("Segment Entered", person(runtime, "bob")),
        ("Segment Exited", person(runtime, "ada")),
    ]
    assert timeline[0].payload["properties"] == {"segment": "pro"}


def test_event_history_conditions_follow_new_events(runtime):
    definition = {
        "event": "Order Completed",
        "where": [{"property": "total", "op": ">", "value": 50}],
        "within": "30d",
        "count": {"op": ">=", "value": 2},
    }
    send(
        runtime, order("ada", 60, 2), order("ada", 20, 3), order("bob", 80, 40), order("bob", 90, 1)
    )
    service.upsert_segment(runtime, "repeat", definition)
    assert members(runtime, "repeat") == set()  # ada: one big order; bob: one in the window

    send(runtime, order("ada", 55, 1))
    assert members(runtime, "repeat") == {person(runtime, "ada")}
    send(runtime, order("bob", 51, 0))
    assert members(runtime, "repeat") == {person(runtime, "ada"), person(runtime, "bob")}


def test_did_not_holds_for_new_profiles_and_ends_with_the_event(runtime):
    service.upsert_segment(runtime, "dormant", {"not": {"event": "Login", "within": "60d"}})
    send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "pro"}))
    ada = person(runtime, "ada")
    assert members(runtime, "dormant") == {ada}
    send(runtime, msg("track", NOW, userId="ada", event="Login"))
    assert members(runtime, "dormant") == set()


def test_windows_expire_on_time_without_new_events(runtime):
    service.upsert_segment(runtime, "recent", {"event": "Login", "within": "7d"})
    send(runtime, msg("track", NOW - timedelta(days=6), userId="ada", event="Login"))
    ada = person(runtime, "ada")
    assert members(runtime, "recent") == {ada}

    evaluator = Evaluator()
    with runtime.writing() as session:
        lock_identity(session)
        changes = evaluator.sweep(session.connection(), NOW + timedelta(days=2))
    assert [(c.segment_key, c.profile_id, c.entered) for c in changes] == [("recent", ada, False)]
    assert members(runtime, "recent") == set()


def test_segments_of_segments_cascade_and_cycles_are_refused(runtime):
    service.upsert_segment(runtime, "pro", {"trait": "plan", "op": "=", "value": "pro"})
    service.upsert_segment(
        runtime, "pro_buyer", {"and": [{"segment": "pro"}, {"event": "Order Completed"}]}
    )
    send(runtime, order("ada", 10, 1))
    send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "pro"}))
    assert members(runtime, "pro_buyer") == {person(runtime, "ada")}

    with pytest.raises(ConditionError, match="segments would refer to each other"):
        service.upsert_segment(runtime, "pro", {"segment": "pro_buyer"})
    with pytest.raises(ConditionError, match=r"definition\.segment: no segment"):
        service.upsert_segment(runtime, "x", {"segment": "missing"})
    with pytest.raises(UserError, match="used by the segments pro_buyer"):
        service.delete_segment(runtime, "pro")
    service.delete_segment(runtime, "pro_buyer")
    service.delete_segment(runtime, "pro")
    assert members(runtime, "pro") == set()


def test_merges_move_membership_to_the_survivor(runtime):
    service.upsert_segment(runtime, "buyers", {"event": "Order Completed"})
    send(runtime, msg("track", NOW, anonymousId="anon-1", event="Order Completed"))
    anonymous = owner(runtime, "anonymous_id", "anon-1")
    send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "pro"}))
    ada = person(runtime, "ada")
    assert members(runtime, "buyers") == {anonymous}
    send(runtime, msg("identify", NOW, userId="ada", anonymousId="anon-1"))
    survivor = person(runtime, "ada")
    assert members(runtime, "buyers") == {survivor}
    assert survivor in (ada, anonymous)


def test_the_hook_hears_every_change_after_commit(config):
    heard: list[tuple[str, str, bool]] = []

    class Observer:
        @hookimpl
        def segment_membership_changed(self, profile_id, segment_key, entered):
            heard.append((profile_id, segment_key, entered))

    runtime = Runtime.start(config, extra_plugins=[("observer", Observer())])
    try:
        service.upsert_segment(runtime, "pro", {"trait": "plan", "op": "=", "value": "pro"})
        send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "pro"}))
        ada = person(runtime, "ada")
        send(runtime, msg("identify", NOW, userId="ada", traits={"plan": "free"}))
        assert heard == [(ada, "pro", True), (ada, "pro", False)]
    finally:
        runtime.close()


def test_preview_counts_without_saving(runtime):
    send(
        runtime,
        msg("identify", NOW, userId="ada", traits={"age": 30}),
        msg("identify", NOW, userId="bob", traits={"age": 50}),
    )
    found = service.preview(runtime, {"trait": "age", "op": ">", "value": 40})
    assert found.size == 1 and found.sample == [person(runtime, "bob")]
    with runtime.sessions() as session:
        assert load(session).segments == {}


PLANS = ["free", "pro", "team"]
EVENTS = ["Order Completed", "Login", "Product Viewed"]
DEFINITIONS = {
    "pro": {"trait": "plan", "op": "in", "value": ["pro", "team"]},
    "old": {"trait": "age", "op": ">=", "value": 40},
    "big_spender": {"computed": "spend", "op": ">", "value": 150},
    "frequent": {"event": "Order Completed", "within": "30d", "count": {"op": ">=", "value": 3}},
    "lapsed": {"not": {"event": "Login", "within": "20d"}},
    "high_value": {
        "event": "Order Completed",
        "where": [{"property": "total", "op": ">", "value": 40}],
        "max": {"property": "total", "op": ">=", "value": 80},
    },
    "pro_and_frequent": {"and": [{"segment": "pro"}, {"segment": "frequent"}]},
    "either": {"or": [{"segment": "old"}, {"not": {"trait": "plan", "op": "exists"}}]},
    "emailable": {"identifier": "email", "op": "exists"},
}


def test_incremental_and_bulk_evaluation_agree_on_random_data(runtime):
    rng = random.Random(7)
    send(runtime, msg("identify", NOW, userId="u0", traits={"age": 30}))  # age: a known number
    service.upsert_computed(
        runtime, "spend", {"aggregate": "sum", "event": "Order Completed", "property": "total"}
    )
    for key in ["pro", "old", "big_spender", "frequent", "lapsed", "high_value"]:
        service.upsert_segment(runtime, key, DEFINITIONS[key])
    for key in ["pro_and_frequent", "either", "emailable"]:
        service.upsert_segment(runtime, key, DEFINITIONS[key])
    users = [f"u{i}" for i in range(40)]
    for _ in range(12):  # batches of mixed messages, each applied incrementally
        batch = []
        for _ in range(25):
            user = rng.choice(users)
            # Away from window edges, so that the seconds between batches change nothing.
            days = rng.choice([1, 5, 10, 15, 25, 35, 50])
            at = NOW - timedelta(days=days, hours=rng.random())
            if rng.random() < 0.3:
                traits = {"plan": rng.choice(PLANS), "age": rng.randint(18, 70)}
                if rng.random() < 0.3:
                    traits["email"] = f"{user}@example.com"
                batch.append(msg("identify", at, userId=user, traits=traits))
            elif rng.random() < 0.1:
                batch.append(msg("identify", at, userId=user, anonymousId=f"a-{rng.choice(users)}"))
            else:
                event = rng.choice(EVENTS)
                props = {"total": rng.randint(5, 120)}
                batch.append(msg("track", at, userId=user, event=event, properties=props))
        send(runtime, *batch)

    incremental = {key: members(runtime, key) for key in DEFINITIONS}
    with runtime.sessions() as session:
        defs = load(session)
        compiler = Compiler(
            session.get_bind().dialect.name, datetime.now(UTC), None, defs.aggregates
        )
        bulk = {
            key: set(session.scalars(compiler.members(defs.segments[key].condition)))
            for key in DEFINITIONS
        }
    assert incremental == bulk
    assert any(incremental.values()) and not all(len(m) == 40 for m in incremental.values())
    assert service.recompute(runtime) == []  # nothing left for the bulk pass to fix


def test_the_scheduler_runs_the_sweep_and_the_recompute(runtime):
    from cdp.scheduler import scheduled_jobs

    jobs = {job.name: job for job in scheduled_jobs(runtime)}
    assert {"segments:sweep", "segments:recompute"} <= jobs.keys()
    service.upsert_segment(runtime, "recent", {"event": "Login", "within": "7d"})
    send(runtime, msg("track", NOW - timedelta(days=6), userId="ada", event="Login"))
    assert members(runtime, "recent") == {person(runtime, "ada")}
    # Not due at start: one interval after it (sweep) or after the last bulk recompute.
    for job in jobs.values():
        assert job.next_due(job.last_run(), NOW) > NOW  # type: ignore[misc]
    jobs["segments:recompute"].run(None)  # type: ignore[arg-type]
    jobs["segments:sweep"].run(None)  # type: ignore[arg-type]
    assert members(runtime, "recent") == {person(runtime, "ada")}  # still in its window
