"""The bundled decision strategies (plugins/strategies.py): rules, arbitration, bandit."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import pytest
from cdp_plugins import strategies
from cdp_plugins.strategies import (
    ArbitrationOptions,
    ArbitrationStrategy,
    BanditOptions,
    BanditStrategy,
    RulesStrategy,
)

from cdp.components import DecisionStrategy, Ranked
from cdp.config import ComponentEntry, PluginsConfig
from cdp.errors import ConfigError
from cdp.plugins import PluginHost

ROOT = Path(__file__).resolve().parent.parent
PROFILE = {"id": "p1", "traits": {}, "computed_traits": {}, "scores": {}, "segments": []}
CONTEXT = {"channel": "web", "placement": "homepage", "limit": 3, "attributes": {}, "stats": {}}
ODD_OFFERS = [
    {"id": "a", "value": "lots", "priority": None, "levers": float("nan"), "tags": 3},
    {"key": "no-id", "value": float("inf"), "propensity": 7, "priority": True},
    "not an offer",
    {},
    {"id": "d", "value": -5, "levers": -2, "tags": ["x", None, 4], "priority": float("-inf")},
]


def ids(ranked: list[Ranked]) -> list[str]:
    return [r.offer_id for r in ranked]


@pytest.fixture(scope="module")
def host() -> PluginHost:
    # Only this plugin, discovered through its entry point: the others have tests of their own.
    return PluginHost(PluginsConfig(enable=["strategies"]))


def create(host: PluginHost, type_: str, index: int = 0, **options: object) -> DecisionStrategy:
    entry = ComponentEntry(name=f"s{index}", type=type_, **options)
    strategy = host.create("strategy", entry, f"cdp.toml: strategies[{index}]")
    assert isinstance(strategy, DecisionStrategy)
    return strategy


# --- discovery and options ------------------------------------------------------------------


def test_strategies_are_discovered_through_the_entry_point(host):
    info = host.plugins["strategies"]
    assert info.enabled and info.error is None
    assert sorted(info.components) == [
        ("strategy", "arbitration"),
        ("strategy", "bandit"),
        ("strategy", "rules"),
    ]
    for type_, cls in [
        ("rules", RulesStrategy),
        ("arbitration", ArbitrationStrategy),
        ("bandit", BanditStrategy),
    ]:
        assert host.component("strategy", type_) is cls
        assert cls.__module__ == "cdp_plugins.strategies"
        assert cls.version == "1"
        assert create(host, type_).rank([], PROFILE, CONTEXT) == []  # default options work


@pytest.mark.parametrize(
    ("type_", "options", "message"),
    [
        ("rules", {"priority": 1}, r"priority: unknown key"),
        ("arbitration", {"default_propensity": 1.5}, r"default_propensity: .*less than or equal"),
        ("arbitration", {"weights": {"web": -1}}, r"weights\.web: .*greater than or equal to 0"),
        ("arbitration", {"weights": {"web": math.inf}}, r"weights\.web: .*finite number"),
        ("arbitration", {"tag_levers": {"sale": math.nan}}, r"tag_levers\.sale: .*finite"),
        ("arbitration", {"min_value": -1}, r"min_value: .*greater than or equal to 0"),
        ("arbitration", {"weight": {}}, r"weight: unknown key"),
        ("bandit", {"exploration": 1.0}, r"exploration: Input should be less than 1"),
        ("bandit", {"exploration": -0.1}, r"exploration: .*greater than or equal to 0"),
        ("bandit", {"seed": -1}, r"seed: .*greater than or equal to 0"),
        ("bandit", {"per_segment": "vip"}, r"per_segment: Input should be a valid list"),
        ("bandit", {"per_segment": ["vip", ""]}, r"per_segment\.1: .*at least 1 character"),
        ("bandit", {"draws": 1}, r"draws: .*greater than or equal to 16"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(host, type_, options, message):
    with pytest.raises(ConfigError, match=rf"^cdp\.toml: strategies\[2\]\.{message}"):
        create(host, type_, 2, **options)


def test_config_examples_in_the_docs_are_valid(host):
    text = (ROOT / "docs" / "decisions.md").read_text(encoding="utf-8")
    section = text.split("\n## Strategies\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    entries = [entry for block in blocks for entry in tomllib.loads(block).get("strategies", [])]
    assert {e["type"] for e in entries} == {"rules", "arbitration", "bandit"}
    for i, entry in enumerate(entries):
        create(host, entry.pop("type"), i, **{k: v for k, v in entry.items() if k != "name"})


# --- rules -------------------------------------------------------------------------------------


def test_rules_rank_by_priority_then_value_then_id():
    offers = [
        {"id": "c", "priority": 1, "value": 5},
        {"id": "b", "priority": 1, "value": 5},
        {"id": "low", "value": 100},  # priority 0 by default
        {"id": "a", "priority": 1, "value": 9},
        {"id": "top", "priority": 10},
        {"id": "nan", "priority": math.nan, "value": 1},  # NaN: as if missing
    ]
    ranked = RulesStrategy(RulesStrategy.Options()).rank(offers, PROFILE, CONTEXT)
    assert ids(ranked) == ["top", "a", "b", "c", "low", "nan"]
    assert ranked[0] == Ranked("top", 10.0, {"priority": 10.0, "value": 0.0}, 1.0)
    assert ranked[1].factors == {"priority": 1.0, "value": 9.0}
    assert ranked[5].factors == {"priority": 0.0, "value": 1.0}
    assert [r.probability for r in ranked] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


# --- arbitration -------------------------------------------------------------------------------


def arbitration(**options: object) -> ArbitrationStrategy:
    return ArbitrationStrategy(ArbitrationOptions(**options))


def test_arbitration_multiplies_propensity_weight_value_and_levers():
    strategy = arbitration(
        weights={"homepage": 1.5, "web": 0.5},
        tag_levers={"clearance": 1.3, "premium": 0.5},
    )
    profile = {**PROFILE, "scores": {"propensity_shoes": 0.31, "propensity_bags": 0.9}}
    offers = [
        {"id": "shoes", "value": 20, "propensity": "propensity_shoes", "tags": ["clearance"]},
        {"id": "bags", "value": 10, "propensity": "propensity_bags", "levers": 0.8},
        {"id": "coat", "value": 200, "tags": ["premium", "clearance"]},
        {"id": "hat", "value": 30, "propensity": "propensity_hats"},
    ]
    ranked = strategy.rank(offers, profile, CONTEXT)
    assert ids(ranked) == ["coat", "shoes", "bags", "hat"]  # 19.5, 12.09, 10.8, 4.5
    coat, shoes, bags, hat = ranked
    assert shoes.factors == {
        "propensity": 0.31,
        "propensity_source": "score:propensity_shoes",
        "weight": 1.5,
        "weight_source": "placement:homepage",
        "value": 20.0,
        "levers": 1.3,
    }
    assert shoes.score == pytest.approx(0.31 * 1.5 * 20 * 1.3)
    assert bags.score == pytest.approx(0.9 * 1.5 * 10 * 0.8)
    assert coat.factors["propensity_source"] == "default"
    assert coat.factors["levers"] == pytest.approx(0.65)
    assert coat.score == pytest.approx(0.1 * 1.5 * 200 * 0.65)
    assert hat.factors["propensity_source"] == "default (no score:propensity_hats)"
    assert hat.score == pytest.approx(0.1 * 1.5 * 30)
    assert [r.probability for r in ranked] == [1.0, 0.0, 0.0, 0.0]


def test_arbitration_context_weight_placement_wins_over_channel():
    strategy = arbitration(weights={"email": 0.5, "banner": 2.0})
    offer = [{"id": "o", "value": 1}]
    for context, weight, source in [
        ({"channel": "email", "placement": "banner"}, 2.0, "placement:banner"),
        ({"channel": "email", "placement": "footer"}, 0.5, "channel:email"),
        ({"channel": "email"}, 0.5, "channel:email"),
        ({"channel": "sms", "placement": None}, 1.0, "default"),
        ({}, 1.0, "default"),
    ]:
        [ranked] = strategy.rank(offer, PROFILE, context)
        assert (ranked.factors["weight"], ranked.factors["weight_source"]) == (weight, source)


def test_arbitration_propensity_is_clamped_and_nan_is_missing():
    strategy = arbitration(default_propensity=0.2)
    profile = {**PROFILE, "scores": {"hi": 3.0, "lo": -1, "nan": math.nan, "text": "0.5"}}
    offers = [{"id": k, "value": 1, "propensity": k} for k in ("hi", "lo", "nan", "text")]
    ranked = {r.offer_id: r.factors for r in strategy.rank(offers, profile, CONTEXT)}
    assert ranked["hi"]["propensity"] == 1.0
    assert ranked["lo"]["propensity"] == 0.0
    assert ranked["nan"]["propensity"] == 0.2
    assert ranked["nan"]["propensity_source"] == "default (no score:nan)"
    assert ranked["text"]["propensity"] == 0.2


def test_arbitration_offers_without_value_rank_by_the_rest_or_by_min_value():
    profile = {**PROFILE, "scores": {"likely": 0.9, "unlikely": 0.05}}
    offers = [
        {"id": "service-a", "propensity": "unlikely"},
        {"id": "service-b", "propensity": "likely", "value": 0},
        {"id": "paid", "propensity": "unlikely", "value": 3},
    ]
    ranked = arbitration().rank(offers, profile, CONTEXT)
    # No value scores 0: after every offer with value, then by propensity * weight * levers.
    assert ids(ranked) == ["paid", "service-b", "service-a"]
    assert [r.score for r in ranked] == [pytest.approx(0.15), 0.0, 0.0]
    assert "value_offered" not in ranked[1].factors
    # With a value floor they compete on propensity.
    ranked = arbitration(min_value=1).rank(offers, profile, CONTEXT)
    assert ids(ranked) == ["service-b", "paid", "service-a"]
    assert ranked[0].factors["value"] == 1.0 and ranked[0].factors["value_offered"] == 0.0
    assert ranked[1].factors["value"] == 3.0 and "value_offered" not in ranked[1].factors


def test_arbitration_ties_break_by_id():
    offers = [{"id": i, "value": 5} for i in ("c", "a", "b")]
    assert ids(arbitration().rank(offers, PROFILE, CONTEXT)) == ["a", "b", "c"]


# --- every strategy on odd input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "strategy",
    [
        RulesStrategy(RulesStrategy.Options()),
        arbitration(tag_levers={"x": 2.0}),
        BanditStrategy(BanditOptions(seed=1, per_segment=["vip"])),
    ],
    ids=["rules", "arbitration", "bandit"],
)
def test_odd_input_never_fails(strategy):
    assert strategy.rank([], PROFILE, CONTEXT) == []
    odd_profile = {"scores": None, "segments": "vip"}
    odd_context = {"stats": {"a": {"shown": "x"}, "d": None}, "stats_by_segment": []}
    for profile, context in [(PROFILE, CONTEXT), ({}, {}), (odd_profile, odd_context)]:
        ranked = strategy.rank(ODD_OFFERS, profile, context)
        assert sorted(ids(ranked)) == ["3", "a", "d", "no-id"]  # the non-mapping is left out
        for r in ranked:
            assert math.isfinite(r.score) and r.probability is not None
            assert all(isinstance(v, str) or math.isfinite(v) for v in r.factors.values())
        assert math.fsum(r.probability for r in ranked) == pytest.approx(1.0)
    assert strategy.rank(None, None, None) == []  # type: ignore[arg-type]


def test_odd_values_take_their_defaults():
    ranked = {r.offer_id: r.factors for r in arbitration().rank(ODD_OFFERS, PROFILE, CONTEXT)}
    assert ranked["a"]["value"] == 0.0 and ranked["a"]["levers"] == 1.0  # "lots", NaN
    assert ranked["no-id"]["value"] == 0.0  # inf
    assert ranked["no-id"]["propensity_source"] == "default"  # not a score name
    assert ranked["d"]["value"] == 0.0 and ranked["d"]["value_offered"] == -5.0
    assert ranked["d"]["levers"] == 0.0  # negative levers: 0
    rules = {r.offer_id: r.factors for r in RulesStrategy(None).rank(ODD_OFFERS, PROFILE, {})}
    assert rules["no-id"]["priority"] == 0.0  # True is not a number
    assert rules["d"]["priority"] == 0.0  # -inf


# --- bandit ------------------------------------------------------------------------------------


def bandit(**options: object) -> BanditStrategy:
    return BanditStrategy(BanditOptions(**options))


def test_bandit_factors_and_counts():
    stats = {
        "good": {"shown": 1000, "successes": 300},
        "odd": {"shown": 10, "successes": 15},  # more successes than shown: clamped
        "neg": {"shown": -4, "successes": math.nan},
    }
    offers = [{"id": "new"}, {"id": "good"}, {"id": "odd"}, {"id": "neg"}]
    ranked = bandit(seed=3).rank(offers, PROFILE, {**CONTEXT, "stats": stats})
    by_id = {r.offer_id: r for r in ranked}
    good = by_id["good"].factors
    assert (good["alpha"], good["beta"]) == (301.0, 701.0)
    assert good["mean"] == pytest.approx(301 / 1002)
    assert good["explored"] == "no" and good["stats"] == "all"
    assert 0 < good["sampled"] < 1
    assert (by_id["odd"].factors["alpha"], by_id["odd"].factors["beta"]) == (11.0, 1.0)
    for offer_id in ("new", "neg"):
        assert (by_id[offer_id].factors["alpha"], by_id[offer_id].factors["beta"]) == (1.0, 1.0)
    top, *rest = ranked
    assert top.score == top.factors["sampled"]
    # Below the top: by posterior mean, then id.
    assert [r.score for r in rest] == [r.factors["mean"] for r in rest]
    assert [(-r.score, r.offer_id) for r in rest] == sorted((-r.score, r.offer_id) for r in rest)
    assert math.fsum(r.probability for r in ranked) == pytest.approx(1.0)


def test_bandit_probability_is_the_chance_of_rank_one():
    clear = {
        "best": {"shown": 10_000, "successes": 5_000},
        "bad": {"shown": 10_000, "successes": 1},
    }
    ranked = bandit(seed=1).rank([{"id": "bad"}, {"id": "best"}], PROFILE, {"stats": clear})
    assert ids(ranked) == ["best", "bad"]
    assert ranked[0].probability == 1.0 and ranked[1].probability == 0.0
    # Two offers without history: a coin toss, estimated from 2,048 draws.
    strategy = bandit(seed=2, draws=2048)
    tops = [strategy.rank([{"id": "x"}, {"id": "y"}], PROFILE, {})[0] for _ in range(100)]
    assert all(r.probability == pytest.approx(0.5, abs=0.05) for r in tops)
    assert 30 < sum(r.offer_id == "x" for r in tops) < 70


def test_bandit_exploration_floor():
    stats = {"best": {"shown": 10_000, "successes": 5_000}}
    offers = [{"id": i} for i in ("best", "b", "c", "d")]
    for name in ("b", "c", "d"):
        stats[name] = {"shown": 10_000, "successes": 10}
    strategy = bandit(seed=4, exploration=0.4)
    runs = [strategy.rank(offers, PROFILE, {"stats": stats}) for _ in range(1000)]
    for ranked in runs:
        probability = {r.offer_id: r.probability for r in ranked}
        assert probability["best"] == pytest.approx(0.4 / 4 + 0.6)
        assert probability["b"] == pytest.approx(0.1)  # exploration / n, never 0
    explored = [r[0] for r in runs if r[0].factors["explored"] == "yes"]
    assert 330 < len(explored) < 470  # ~400
    assert {r.offer_id for r in explored} == {"best", "b", "c", "d"}
    not_best = sum(r[0].offer_id != "best" for r in runs)
    assert 230 < not_best < 370  # 0.4 * 3/4 of 1000
    assert all(f.factors["explored"] == "no" for r in runs for f in r[1:])


def test_bandit_is_reproducible_with_a_seed():
    offers = [{"id": str(i)} for i in range(8)]

    def run(strategy: BanditStrategy) -> list[list[tuple[str, float]]]:
        return [
            [(r.offer_id, r.score) for r in strategy.rank(offers, PROFILE, {})] for _ in range(20)
        ]

    assert run(bandit(seed=9)) == run(bandit(seed=9))
    assert run(bandit(seed=9)) != run(bandit(seed=10))


def test_bandit_per_segment_history():
    stats = {"a": {"shown": 1000, "successes": 500}, "b": {"shown": 1000, "successes": 10}}
    vip = {"a": {"shown": 1000, "successes": 10}, "b": {"shown": 1000, "successes": 500}}
    context = {**CONTEXT, "stats": stats, "stats_by_segment": {"vip": vip}}
    offers = [{"id": "a"}, {"id": "b"}]
    strategy = bandit(seed=5, per_segment=["students", "vip"])

    def top(segments: object, ctx: dict = context) -> Ranked:
        return strategy.rank(offers, {**PROFILE, "segments": segments}, ctx)[0]

    member = top(["vip", "students"])  # no history for students: the next listed segment
    assert member.offer_id == "b" and member.factors["stats"] == "segment:vip"
    assert member.factors["alpha"] == 501.0
    outsider = top(["gold"])
    assert outsider.offer_id == "a" and outsider.factors["stats"] == "all"
    assert top(["vip"], {**context, "stats_by_segment": {}}).factors["stats"] == "all"
    # Segments not named in the options are not used, even when the pipeline supplies them.
    unnamed = bandit(seed=5).rank(offers, {**PROFILE, "segments": ["vip"]}, context)[0]
    assert unnamed.offer_id == "a" and unnamed.factors["stats"] == "all"
    # A segment with an empty history is used as such: no history for its members yet.
    fresh = top(["vip"], {**context, "stats_by_segment": {"vip": {}}})
    assert fresh.factors["stats"] == "segment:vip" and fresh.factors["alpha"] == 1.0


def test_bandit_without_numpy(monkeypatch):
    monkeypatch.setattr(strategies, "np", None)
    stats = {"best": {"shown": 5000, "successes": 2500}, "bad": {"shown": 5000, "successes": 5}}
    offers = [{"id": "bad"}, {"id": "best"}, {"id": "new"}]
    strategy = bandit(seed=6, draws=64, exploration=0.1)
    ranked = strategy.rank(offers, PROFILE, {"stats": stats})
    assert sorted(ids(ranked)) == ["bad", "best", "new"]
    assert math.fsum(r.probability for r in ranked) == pytest.approx(1.0)
    assert all(r.probability >= 0.1 / 3 - 1e-12 for r in ranked)
    again = bandit(seed=6, draws=64, exploration=0.1).rank(offers, PROFILE, {"stats": stats})
    assert ranked == again


def test_bandit_simulation_concentrates_on_the_best_offer():
    """20,000 sequential decisions against known response rates: the bandit must find the best
    offer and lose far fewer responses than picking at random."""
    np = pytest.importorskip("numpy")
    rates = {"o1": 0.02, "o2": 0.04, "o3": 0.06, "o4": 0.08, "o5": 0.10, "o6": 0.12}
    best = max(rates.values())
    offers = [{"id": offer_id} for offer_id in rates]
    stats = {offer_id: {"shown": 0, "successes": 0} for offer_id in rates}
    # `draws` only sets how precisely the logged probability is estimated, not the decisions
    # (those use one draw per offer); the minimum keeps 20,000 decisions fast.
    strategy = bandit(seed=7, exploration=0.05, draws=16)
    responses = np.random.default_rng(11).random(20_000)
    picks, regret = [], 0.0
    for t in range(20_000):
        top = strategy.rank(offers, PROFILE, {"channel": "web", "stats": stats})[0].offer_id
        picks.append(top)
        regret += best - rates[top]
        stats[top]["shown"] += 1
        stats[top]["successes"] += int(responses[t] < rates[top])
    uniform = 20_000 * (best - sum(rates.values()) / len(rates))
    share = picks[-5000:].count("o6") / 5000
    print(
        f"bandit regret {regret:.1f}, uniform random regret {uniform:.1f} "
        f"({regret / uniform:.1%}); best offer in {share:.1%} of the last 5,000 decisions"
    )
    assert share > 0.6
    assert regret < 0.3 * uniform
