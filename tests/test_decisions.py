"""The decision pipeline: eligibility, consent, each contact-policy rule, holdout, ranking,
rendering, the decision log, and responses changing later decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import make_config
from identity_helpers import msg, owner, send
from sqlalchemy import func, select

from cdp.config import CapConfig, DecisionsConfig, QuietHoursConfig, SuppressionConfig
from cdp.db.models import Decision, Presentation, Response
from cdp.decisions import catalogue
from cdp.decisions.pipeline import Decider, DecisionContext
from cdp.decisions.responses import record_response
from cdp.errors import NotFoundError, UserError
from cdp.runtime import Runtime

NOW = datetime.now(UTC)


@pytest.fixture
def start(database_url):
    """Start a runtime with these [decisions] settings (stopped after the test)."""
    started: list[Runtime] = []

    def make(**decisions: object) -> Runtime:
        settings = DecisionsConfig(**{"default_strategy": "rules", **decisions})
        runtime = Runtime.start(make_config(database_url, decisions=settings))
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        runtime.close()


def offer(key: str, **fields: object) -> dict:
    return {
        "key": key,
        "name": key.title(),
        "value": 10,
        "content": {"*": {"title": f"{key} for {{{{ profile.traits.first_name }}}}"}},
        **fields,
    }


def person(runtime: Runtime, user_id: str = "ada", **traits: object) -> str:
    send(runtime, msg("identify", NOW, userId=user_id, traits={"first_name": "Ada", **traits}))
    found = owner(runtime, "user_id", user_id)
    assert found is not None
    return found


def given(decided) -> list[str]:
    return [c.offer.id for c in decided.offers]


def rules(decided) -> dict[str, str]:
    return {f["offer"]: f["rule"] for f in decided.filtered}


def test_ranked_rendered_explained_and_logged(start):
    runtime = start()
    pid = person(runtime, plan="pro")
    catalogue.upsert_offer(runtime, "catalogue", offer("gold", priority=5))
    catalogue.upsert_offer(runtime, "catalogue", offer("silver", priority=3))
    catalogue.upsert_offer(
        runtime,
        "catalogue",
        offer("team", priority=9, eligibility={"trait": "plan", "op": "=", "value": "team"}),
    )
    catalogue.upsert_offer(
        runtime, "catalogue", offer("mail_only", content={"email": {"subject": "x"}})
    )
    catalogue.upsert_offer(runtime, "catalogue", offer("old", valid_until="2020-01-01T00:00:00Z"))
    decided = Decider(runtime).decide(pid, DecisionContext("web", "home", limit=2))
    assert given(decided) == ["catalogue:gold", "catalogue:silver"]
    assert decided.offers[0].content == {"title": "gold for Ada"}
    assert decided.offers[0].factors  # every returned offer is explained
    assert rules(decided) == {
        "catalogue:team": "eligibility",
        "catalogue:mail_only": "channel",
        "catalogue:old": "validity",
    }
    with runtime.sessions() as session:
        row = session.get(Decision, decided.id)
        assert row is not None and row.strategy == "rules" and row.placement == "home"
        assert [item["offer"] for item in row.offers] == given(decided)
        assert {f["offer"] for f in row.filtered} == set(rules(decided))
        assert session.scalar(select(func.count()).select_from(Presentation)) == 2


def test_unknown_profile_and_bad_context_are_user_errors(start):
    runtime = start()
    with pytest.raises(NotFoundError, match="profile: no profile"):
        Decider(runtime).decide("nope", DecisionContext("web"))
    pid = person(runtime)
    with pytest.raises(UserError, match=r"context\.limit"):
        Decider(runtime).decide(pid, DecisionContext("web", limit=0))


def test_consent_is_enforced_per_channel(start):
    runtime = start(consent={"email": "marketing"})
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    pid = person(runtime)
    decided = Decider(runtime).decide(pid, DecisionContext("email"))
    assert given(decided) == [] and rules(decided) == {"catalogue:gold": "consent"}
    assert given(Decider(runtime).decide(pid, DecisionContext("web"))) == ["catalogue:gold"]
    send(
        runtime,
        msg(
            "identify",
            NOW,
            userId="ada",
            context={"consent": {"categoryPreferences": {"marketing": True}}},
        ),
    )
    assert given(Decider(runtime).decide(pid, DecisionContext("email"))) == ["catalogue:gold"]


def test_caps_count_presentations_per_profile_and_channel(start):
    runtime = start(
        caps=[
            CapConfig(per="profile", max=3, within="1d"),
            CapConfig(per="channel", max=2, within="1d"),
        ]
    )
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    pid = person(runtime)
    decider = Decider(runtime)
    assert given(decider.decide(pid, DecisionContext("web"))) == ["catalogue:gold"]
    assert given(decider.decide(pid, DecisionContext("web"))) == ["catalogue:gold"]
    third = decider.decide(pid, DecisionContext("web"))
    assert given(third) == [] and rules(third) == {"catalogue:gold": "cap"}
    assert given(decider.decide(pid, DecisionContext("app"))) == ["catalogue:gold"]
    assert given(decider.decide(pid, DecisionContext("app"))) == []  # 3 per profile
    later = DecisionContext("web", time=NOW + timedelta(days=2))
    assert given(decider.decide(pid, later)) == ["catalogue:gold"]  # the window has passed


def test_quiet_hours_in_the_profiles_time_zone(start):
    runtime = start(quiet_hours={"sms": QuietHoursConfig(start="21:00", end="08:00")})
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    tokyo = person(runtime, "ada", timezone="Asia/Tokyo")
    paris = person(runtime, "bob", timezone="Europe/Paris")
    at = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)  # 23:00 in Tokyo, 16:00 in Paris
    decider = Decider(runtime)
    night = decider.decide(tokyo, DecisionContext("sms", time=at))
    assert given(night) == [] and rules(night) == {"catalogue:gold": "quiet_hours"}
    assert given(decider.decide(paris, DecisionContext("sms", time=at))) == ["catalogue:gold"]
    assert given(decider.decide(tokyo, DecisionContext("web", time=at))) == ["catalogue:gold"]


def test_suppression_after_negative_responses(start):
    runtime = start(suppression=SuppressionConfig(negatives=2, within="30d"))
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    pid = person(runtime)
    decider = Decider(runtime)
    for _ in range(2):
        decided = decider.decide(pid, DecisionContext("web"))
        with runtime.writing() as session:
            record_response(session, decided.id, "catalogue:gold", "DISMISS")
    suppressed = decider.decide(pid, DecisionContext("web"))
    assert given(suppressed) == [] and rules(suppressed) == {"catalogue:gold": "suppression"}


def test_prerequisites_sequence_offers(start):
    runtime = start()
    catalogue.upsert_offer(runtime, "catalogue", offer("welcome", priority=1))
    catalogue.upsert_offer(
        runtime,
        "catalogue",
        offer(
            "upsell",
            priority=9,
            prerequisites=[{"offer": "catalogue:welcome", "outcome": "accepted"}],
        ),
    )
    pid = person(runtime)
    decider = Decider(runtime)
    first = decider.decide(pid, DecisionContext("web"))
    assert given(first) == ["catalogue:welcome"] and rules(first) == {
        "catalogue:upsell": "prerequisite"
    }
    with runtime.writing() as session:
        record_response(session, first.id, "catalogue:welcome", "ACCEPT")
    assert given(decider.decide(pid, DecisionContext("web")))[0] == "catalogue:upsell"


def test_budgets_count_presentations_to_everyone(start):
    runtime = start()
    catalogue.upsert_offer(runtime, "catalogue", offer("rare", budget=1))
    decider = Decider(runtime)
    assert given(decider.decide(person(runtime, "ada"), DecisionContext("web"))) == [
        "catalogue:rare"
    ]
    second = decider.decide(person(runtime, "bob"), DecisionContext("web"))
    assert given(second) == [] and rules(second) == {"catalogue:rare": "budget"}


def test_holdout_is_stable_and_about_its_share(start):
    runtime = start(holdout=0.3)
    decider = Decider(runtime)
    ids = [f"01a2337c-0000-7000-8000-{i:012d}" for i in range(1000)]
    held = [decider.in_holdout(i) for i in ids]
    assert 0.25 < sum(held) / len(ids) < 0.35
    assert held == [Decider(runtime).in_holdout(i) for i in ids]  # same in another process
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    pid = person(runtime)
    results = {decider.decide(pid, DecisionContext("web")).holdout for _ in range(3)}
    assert results == {decider.in_holdout(pid)}


def test_the_holdout_group_gets_nothing_or_the_default_offer_and_is_recorded(start):
    runtime = start(holdout=0.5, holdout_offer="catalogue:plain")
    catalogue.upsert_offer(runtime, "catalogue", offer("gold", priority=5))
    catalogue.upsert_offer(runtime, "catalogue", offer("plain"))
    decider = Decider(runtime)
    held = next(p for p in (person(runtime, f"u{i}") for i in range(40)) if decider.in_holdout(p))
    decided = decider.decide(held, DecisionContext("web"))
    assert decided.holdout and given(decided) == ["catalogue:plain"]
    assert rules(decided)["catalogue:gold"] == "holdout"
    with runtime.sessions() as session:
        assert session.get(Decision, decided.id).holdout is True


def test_a_track_event_with_decision_and_offer_records_a_response(start):
    runtime = start()
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    pid = person(runtime)
    decided = Decider(runtime).decide(pid, DecisionContext("web"))
    send(
        runtime,
        msg(
            "track",
            NOW,
            userId="ada",
            event="Offer Clicked",
            properties={"decision_id": decided.id, "offer_id": "catalogue:gold"},
        ),
        msg(
            "track",
            NOW,
            userId="ada",
            event="Offer Clicked",
            properties={"decision_id": "forged", "offer_id": "catalogue:gold"},
        ),
    )
    with runtime.sessions() as session:
        rows = session.execute(
            select(Response.decision_id, Response.outcome, Response.profile_id)
        ).all()
    assert rows == [(decided.id, "CLICK", pid)]


def test_record_response_refuses_what_the_decision_did_not_give(start):
    runtime = start()
    catalogue.upsert_offer(runtime, "catalogue", offer("gold"))
    decided = Decider(runtime).decide(person(runtime), DecisionContext("web"))
    with runtime.writing() as session:
        with pytest.raises(UserError, match=r"offerId: decision .* did not give"):
            record_response(session, decided.id, "catalogue:other", "CLICK")
        with pytest.raises(UserError, match="outcome: one of"):
            record_response(session, decided.id, "catalogue:gold", "LOVED")
        with pytest.raises(NotFoundError, match="decisionId"):
            record_response(session, "nope", "catalogue:gold", "CLICK")
        with pytest.raises(UserError, match="value: a finite number"):
            record_response(session, decided.id, "catalogue:gold", "CONVERSION", float("nan"))


def test_eligibility_with_lists_windows_and_relative_dates_on_every_backend(start):
    runtime = start()
    pid = person(runtime, interests=["shoes", "hats"], signed_up="2020-01-01T00:00:00Z")
    send(runtime, msg("track", NOW, userId="ada", event="Login"))
    conditions = {
        "likes_shoes": {"trait": "interests", "op": "contains", "value": "shoes"},
        "likes_socks": {"trait": "interests", "op": "contains", "value": "socks"},
        "recent_login": {"event": "Login", "within": "1d"},
        "old_member": {"trait": "signed_up", "op": "not_within_last", "value": "365d"},
        "new_member": {"trait": "signed_up", "op": "within_last", "value": "30d"},
    }
    for key, condition in conditions.items():
        catalogue.upsert_offer(runtime, "catalogue", offer(key, eligibility=condition))
    decider = Decider(runtime)
    decided = decider.decide(pid, DecisionContext("web", limit=10))
    assert sorted(given(decided)) == [
        "catalogue:likes_shoes",
        "catalogue:old_member",
        "catalogue:recent_login",
    ]
    # The same prepared query, two days on: the login has left its window.
    later = decider.decide(pid, DecisionContext("web", limit=10, time=NOW + timedelta(days=2)))
    assert "catalogue:recent_login" not in given(later)
