"""`propensity` enricher: the probability that a profile does a target event within a window.

One model per target: a purchase of a product or category, or the conversion of an offer. Each
`[[models]]` entry of this type names its event and, optionally, what the event must hold:

```toml
[[models]]
name = "propensity_shoes"            # the score's name on profiles
type = "propensity"
event = "Order Completed"
where = { "properties.products[].category" = "shoes" }   # an order with a shoes line
signals = [{ event = "Product Viewed", where = { "properties.category" = "shoes" } }]
horizon = "30d"

[[models]]
name = "propensity_offer_summer"
type = "propensity"
event = "Offer Converted"
where = { "properties.offer_id" = "summer" }
```

Features: the profile's activity and purchases (`commerce_features`), the target event's own
history, and each `signals` event's (e.g. views of the category). A gradient-boosted classifier
learns from them; its probability is the score.
"""

from __future__ import annotations

from typing import Any

from cdp_plugins.commerce_features import HGB_TREES, CommerceOptions, behaviour_features
from pydantic import BaseModel, ConfigDict, Field

from cdp.components import Enricher, Events, Feature, Output, Target
from cdp.hookspecs import hookimpl

Value = str | int | float | bool


class Signal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event: str = Field(min_length=1)
    where: dict[str, Value] = {}


class PropensityOptions(CommerceOptions):
    event: str = Field(min_length=1)
    """The target event's name."""
    where: dict[str, Value] = {}
    """Dotted payload paths the target event must have equal to these values; a path through
    an array names it with `[]` ("properties.products[].category")."""
    signals: list[Signal] = Field([], max_length=20)
    """Other events whose history predicts the target (counted, and days since the last)."""


class Propensity(Enricher):
    name = "propensity"
    Options = PropensityOptions
    task = "classification"
    trusted_types = (HGB_TREES,)
    options: PropensityOptions

    def outputs(self) -> list[Output]:
        return [
            Output(
                self.options.score or self.model,
                description=f"probability of {self.options.event} within "
                f"{self.options.horizon.days}d",
            )
        ]

    def _target_events(self) -> Events:
        return Events(names=(self.options.event,), where=self.options.where)

    def features(self) -> list[Feature]:
        o = self.options
        target = self._target_events()
        found = [
            *behaviour_features(o),
            Feature("target_lookback", "count", target, within=o.lookback),
            Feature(
                "days_since_last_target",
                "days_since_last",
                target,
                within=o.lookback,
                fill=o.lookback.days + 0.0,
            ),
        ]
        for i, signal in enumerate(o.signals, 1):
            events = Events(names=(signal.event,), where=signal.where)
            found += [
                Feature(f"signal{i}_lookback", "count", events, within=o.lookback),
                Feature(
                    f"days_since_signal{i}",
                    "days_since_last",
                    events,
                    within=o.lookback,
                    fill=o.lookback.days + 0.0,
                ),
            ]
        return found

    def target(self) -> Target:
        return Target("any", self.options.horizon, self._target_events())

    def estimator(self) -> Any:
        from sklearn.ensemble import (
            HistGradientBoostingClassifier,  # here: plugins load at every start
        )

        return HistGradientBoostingClassifier(
            learning_rate=0.1, max_iter=100, max_leaf_nodes=15, l2_regularization=1.0,
            random_state=0,
        )  # fmt: skip


@hookimpl
def register_enrichers() -> list[type[Enricher]]:
    return [Propensity]
