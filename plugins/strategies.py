"""The bundled decision strategies: `rules`, `arbitration` and `bandit`.

Each ranks every offer it is given, best first, as `Ranked(offer_id, score, factors,
probability)`; `factors` explain the score and `probability` is the probability with which the
offer was put at rank 1 (logged for off-policy evaluation). None of them fails on odd input: an
empty list gives an empty ranking, a missing or non-numeric field (NaN and infinities included)
takes its default, and an entry that is not a mapping is left out (it has no id to return).

- `rules`: static priority — offer `priority` (higher first, default 0), then `value`, then id.
- `arbitration`: propensity * context weight * value * levers, as next-best-action decision hubs
  arbitrate.
- `bandit`: Thompson sampling on each offer's response history (`context["stats"]`, optionally
  per segment from `context["stats_by_segment"]`), with an optional uniform exploration floor.

See docs/decisions.md ("Strategies") for the formulas, options and config examples.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Mapping, Sequence
from decimal import Decimal
from numbers import Real
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from cdp.components import DecisionStrategy, Ranked
from cdp.hookspecs import hookimpl

try:  # numpy arrives with scikit-learn; without it the bandit samples in pure Python (slower).
    import numpy as np
except ImportError:  # pragma: no cover - exercised by monkeypatching `np` in the tests
    np = None  # type: ignore[assignment]

_LARGEST = 1e300
"""Scores are clamped to ±this, so that a product of large factors stays a finite JSON number."""


# --- reading odd input -----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when it is missing, not a number, NaN or infinite."""
    if type(value) is float:  # the usual cases first, without ABC checks
        return value if math.isfinite(value) else None
    if type(value) is not int and (
        value is None or isinstance(value, bool) or not isinstance(value, Real | Decimal)
    ):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _field(offer: Mapping[str, Any], key: str, default: float) -> float:
    number = _number(offer.get(key))
    return default if number is None else number


def _finite(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return max(-_LARGEST, min(_LARGEST, value))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _offers(offers: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(id, offer) for each offer that is a mapping; the id falls back to `key`, then to the
    offer's position, so that every offer can be returned."""
    if not isinstance(offers, Sequence) or isinstance(offers, str | bytes):
        return []
    found = []
    for index, offer in enumerate(offers):
        if type(offer) is not dict and not isinstance(offer, Mapping):
            continue
        offer_id = offer.get("id")
        if offer_id is None or offer_id == "":
            offer_id = offer.get("key")
        found.append((str(index) if offer_id is None else str(offer_id), offer))
    return found


def _tags(offer: Mapping[str, Any]) -> list[str]:
    tags = offer.get("tags")
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, Sequence | set | frozenset):
        return []
    return sorted({tag for tag in tags if isinstance(tag, str)})


def _deterministic(ranked: list[Ranked]) -> list[Ranked]:
    """The top offer was put at rank 1 with probability 1, the others with 0."""
    return [
        Ranked(r.offer_id, r.score, r.factors, 1.0 if i == 0 else 0.0) for i, r in enumerate(ranked)
    ]


# --- rules -------------------------------------------------------------------------------------


class RulesStrategy(DecisionStrategy):
    """Static priority: offer `priority` (higher first; default 0), ties by `value` (higher
    first; default 0), then by id. The score is the priority."""

    name = "rules"
    version = "1"

    def rank(
        self,
        offers: Sequence[Mapping[str, Any]],
        profile: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> list[Ranked]:
        rows = []
        for offer_id, offer in _offers(offers):
            priority = _field(offer, "priority", 0.0)
            value = _field(offer, "value", 0.0)
            rows.append((priority, value, offer_id))
        rows.sort(key=lambda row: (-row[0], -row[1], row[2]))
        return _deterministic(
            [
                Ranked(offer_id, _finite(priority), {"priority": priority, "value": value})
                for priority, value, offer_id in rows
            ]
        )


# --- arbitration -------------------------------------------------------------------------------

Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ArbitrationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_propensity: float = Field(0.1, ge=0, le=1, allow_inf_nan=False)
    """The propensity of an offer without one: no `propensity` field, or the profile has no
    such score (or not a number)."""
    weights: dict[str, Weight] = {}
    """Context weight per placement or channel name; a placement's weight wins over its
    channel's; neither named: 1.0."""
    tag_levers: dict[str, Weight] = {}
    """Business lever per offer tag, multiplied into the offer's own `levers` once per tag."""
    min_value: float = Field(0.0, ge=0, allow_inf_nan=False)
    """Value floor: the score uses max(offer value, min_value). With the default 0, offers
    without value score 0 and rank after every offer with value, among themselves by
    propensity * weight * levers; set it (e.g. 1) to let them compete on propensity."""


class ArbitrationStrategy(DecisionStrategy):
    """priority = propensity * context weight * value * levers (next-best-action arbitration).

    Ties, including offers that all score 0, are ranked by propensity * weight * levers, then
    by id.
    """

    name = "arbitration"
    version = "1"
    Options = ArbitrationOptions
    options: ArbitrationOptions

    def rank(
        self,
        offers: Sequence[Mapping[str, Any]],
        profile: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> list[Ranked]:
        profile = _mapping(profile)
        context = _mapping(context)
        scores = _mapping(profile.get("scores"))
        weight, weight_source = self._weight(context)
        rows = []
        for offer_id, offer in _offers(offers):
            propensity, propensity_source = self._propensity(offer, scores)
            raw_value = _field(offer, "value", 0.0)
            value = max(raw_value, self.options.min_value)
            levers = max(_field(offer, "levers", 1.0), 0.0)
            for tag in _tags(offer):
                levers *= self.options.tag_levers.get(tag, 1.0)
            levers = _finite(levers)
            rest = _finite(propensity * weight * levers)
            score = _finite(rest * value)
            factors: dict[str, float | str] = {
                "propensity": propensity,
                "propensity_source": propensity_source,
                "weight": weight,
                "weight_source": weight_source,
                "value": value,
                "levers": levers,
            }
            if value != raw_value:
                factors["value_offered"] = raw_value
            rows.append((score, rest, offer_id, factors))
        rows.sort(key=lambda row: (-row[0], -row[1], row[2]))
        return _deterministic(
            [Ranked(offer_id, score, factors) for score, _, offer_id, factors in rows]
        )

    def _weight(self, context: Mapping[str, Any]) -> tuple[float, str]:
        weights = self.options.weights
        for key in ("placement", "channel"):
            name = context.get(key)
            if isinstance(name, str) and name in weights:
                return weights[name], f"{key}:{name}"
        return 1.0, "default"

    def _propensity(self, offer: Mapping[str, Any], scores: Mapping[str, Any]) -> tuple[float, str]:
        name = offer.get("propensity")
        if not isinstance(name, str) or not name:
            return self.options.default_propensity, "default"
        score = _number(scores.get(name))
        if score is None:
            return self.options.default_propensity, f"default (no score:{name})"
        return min(max(score, 0.0), 1.0), f"score:{name}"


# --- bandit ------------------------------------------------------------------------------------


class BanditOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exploration: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    """With this probability the top offer is picked uniformly at random instead of by
    Thompson sampling, so every offer keeps a logged probability of at least exploration / n."""
    per_segment: list[Annotated[str, Field(min_length=1)]] = []
    """Segment keys with a history of their own: a profile in one of them (the first listed
    that it is in and that `context["stats_by_segment"]` has) is decided on that segment's
    response history instead of everyone's."""
    seed: int | None = Field(None, ge=0)
    """Seeds the strategy's random numbers, for reproducible runs (tests, simulations); leave
    unset in production."""
    draws: int = Field(256, ge=16, le=100_000)
    """Monte Carlo draws estimating each offer's probability of rank 1 (logged, not used to
    decide)."""


class BanditStrategy(DecisionStrategy):
    """Thompson sampling over Beta(1 + successes, 1 + shown - successes) per offer.

    The top offer is the one with the highest draw from its posterior (or, with probability
    `exploration`, one picked uniformly at random); the others follow by posterior mean, then
    id. `probability` is each offer's probability of rank 1: exploration / n + (1 -
    exploration) * P(its draw is the highest), the latter estimated by `draws` Monte Carlo
    draws (which include the one that decided, so the Thompson pick never logs 0).
    """

    name = "bandit"
    version = "1"
    Options = BanditOptions
    options: BanditOptions

    def __init__(self, options: BanditOptions) -> None:
        super().__init__(options)
        self._lock = threading.Lock()
        self._np_rng = np.random.default_rng(options.seed) if np is not None else None
        self._py_rng = random.Random(options.seed)  # noqa: S311 - sampling, not secrets

    def rank(
        self,
        offers: Sequence[Mapping[str, Any]],
        profile: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> list[Ranked]:
        found = _offers(offers)
        if not found:
            return []
        context = _mapping(context)
        stats, stats_source = self._stats(_mapping(profile), context)
        counts = [_counts(stats.get(offer_id)) for offer_id, _ in found]
        alphas = [1.0 + successes for _, successes in counts]
        betas = [1.0 + shown - successes for shown, successes in counts]
        sampled, wins, explore, pick = self._sample(alphas, betas)
        n = len(found)
        exploration = self.options.exploration
        draws = self.options.draws
        top = pick if explore else max(range(n), key=lambda i: (sampled[i], -i))
        means = [a / (a + b) for a, b in zip(alphas, betas, strict=True)]
        rest = sorted((i for i in range(n) if i != top), key=lambda i: (-means[i], found[i][0]))
        ranked = []
        for i in [top, *rest]:
            factors: dict[str, float | str] = {
                "alpha": alphas[i],
                "beta": betas[i],
                "sampled": sampled[i],
                "mean": means[i],
                "explored": "yes" if explore and i == top else "no",
                "stats": stats_source,
            }
            probability = exploration / n + (1.0 - exploration) * wins[i] / draws
            score = sampled[i] if i == top else means[i]
            ranked.append(Ranked(found[i][0], score, factors, min(probability, 1.0)))
        return ranked

    def _stats(
        self, profile: Mapping[str, Any], context: Mapping[str, Any]
    ) -> tuple[Mapping[str, Any], str]:
        if self.options.per_segment:
            segments = profile.get("segments")
            if isinstance(segments, str):
                segments = [segments]
            member = (
                {s for s in segments if isinstance(s, str)}
                if isinstance(segments, Sequence | set | frozenset)
                else set()
            )
            by_segment = _mapping(context.get("stats_by_segment"))
            for segment in self.options.per_segment:
                if segment in member and isinstance(by_segment.get(segment), Mapping):
                    return by_segment[segment], f"segment:{segment}"
        return _mapping(context.get("stats")), "all"

    def _sample(
        self, alphas: list[float], betas: list[float]
    ) -> tuple[list[float], list[int], bool, int]:
        """One posterior draw per offer (the decision), the number of `draws` rounds (that one
        included) each offer won, whether to explore, and the offer picked if so."""
        n, draws = len(alphas), self.options.draws
        with self._lock:
            rng = self._np_rng
            if rng is not None:
                matrix = rng.beta(np.asarray(alphas), np.asarray(betas), size=(draws, n))
                wins = np.bincount(matrix.argmax(axis=1), minlength=n)
                explore = self.options.exploration > 0 and rng.random() < self.options.exploration
                pick = int(rng.integers(n)) if explore else -1
                return matrix[0].tolist(), wins.tolist(), explore, pick
            py = self._py_rng
            counts = [0] * n
            first: list[float] = []
            for row in range(draws):
                values = [py.betavariate(a, b) for a, b in zip(alphas, betas, strict=True)]
                counts[max(range(n), key=values.__getitem__)] += 1
                if row == 0:
                    first = values
            explore = self.options.exploration > 0 and py.random() < self.options.exploration
            pick = py.randrange(n) if explore else -1
            return first, counts, explore, pick


def _counts(stats: Any) -> tuple[float, float]:
    """(shown, successes) from {"shown": n, "successes": k}: missing or odd → 0; successes are
    clamped to [0, shown]. Fractional counts (e.g. time-decayed) are kept."""
    stats = _mapping(stats)
    shown = max(_number(stats.get("shown")) or 0.0, 0.0)
    successes = min(max(_number(stats.get("successes")) or 0.0, 0.0), shown)
    return shown, successes


@hookimpl
def register_strategies() -> list[type[DecisionStrategy]]:
    return [RulesStrategy, ArbitrationStrategy, BanditStrategy]
