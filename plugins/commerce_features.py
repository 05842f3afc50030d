"""What the bundled enrichers share: options and features over e-commerce events.

Event names follow Segment's e-commerce spec (an `Order Completed` with a `total`), and every
one of them is an option, so a store that tracks `Purchase` with `revenue` configures that.
Not a plugin itself (no entry point): the enricher modules beside it import it.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from cdp.components import Events, Feature
from cdp.models.spec import Duration

HGB_TREES = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
"""The one type a fitted HistGradientBoosting* holds that skops does not trust by default."""


class CommerceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purchase_event: str = Field("Order Completed", min_length=1)
    value_property: str = Field("properties.total", min_length=1)
    """Dotted path of a purchase's value in the event."""
    activity_events: list[str] = []
    """Event names that count as activity; empty: every track, page and screen event."""
    lookback: Duration = timedelta(days=365)
    """Features read at most this far back from the cut-off."""
    horizon: Duration = timedelta(days=30)
    """The window after the cut-off that the model predicts."""
    score: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    """The name of the score written on profiles; default: the model's name."""


def activity(options: CommerceOptions) -> Events:
    if options.activity_events:
        return Events(names=tuple(options.activity_events))
    return Events(types=("track", "page", "screen"))


def purchases(options: CommerceOptions) -> Events:
    return Events(names=(options.purchase_event,))


def _window(days: int, options: CommerceOptions) -> timedelta:
    return min(timedelta(days=days), options.lookback)


def rfm_features(purchase_event: str, value_property: str, lookback: timedelta) -> list[Feature]:
    """Recency (days since the last purchase; the lookback's length without one), frequency
    (purchases) and monetary value (their sum), over the lookback."""
    buy = Events(names=(purchase_event,))
    return [
        Feature("recency_days", "days_since_last", buy, within=lookback, fill=lookback.days + 0.0),
        Feature("frequency", "count", buy, within=lookback),
        Feature("monetary", "sum", buy, property=value_property, within=lookback),
    ]


def behaviour_features(options: CommerceOptions) -> list[Feature]:
    """Activity in recent windows, tenure, and the RFM of purchases, with their recent trend."""
    act, buy = activity(options), purchases(options)
    lookback = options.lookback
    return [
        Feature("events_7d", "count", act, within=_window(7, options)),
        Feature("events_30d", "count", act, within=_window(30, options)),
        Feature("events_90d", "count", act, within=_window(90, options)),
        Feature("events_lookback", "count", act, within=lookback),
        Feature("active_days_30d", "active_days", act, within=_window(30, options)),
        Feature("active_days_lookback", "active_days", act, within=lookback),
        Feature(
            "days_since_last_activity",
            "days_since_last",
            act,
            within=lookback,
            fill=lookback.days + 0.0,
        ),
        Feature("days_since_first_event", "days_since_first", Events(), within=lookback),
        *rfm_features(options.purchase_event, options.value_property, lookback),
        Feature("purchases_30d", "count", buy, within=_window(30, options)),
        Feature(
            "spend_90d", "sum", buy, property=options.value_property, within=_window(90, options)
        ),
    ]
