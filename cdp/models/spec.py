"""What an enricher declares: its outputs, its features and its label, as data.

An enricher never queries the store itself. It declares each feature as an aggregate of a
profile's events (a count, a sum of a property, the days since the last one …) and the label as
an aggregate of the events in a window after a cut-off; the core compiles them to SQL that runs
in the database (`cdp.models.features`). That is what lets the core guarantee the time split:
features only ever read events before the cut-off, labels only the window after it.

Vendors import these from `cdp.components` too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BeforeValidator, PlainSerializer
from pydantic_core import PydanticCustomError

Task = Literal["classification", "regression", "clustering"]
Aggregate = Literal[
    "count", "sum", "avg", "min", "max", "days_since_last", "days_since_first", "active_days"
]
"""count: matching events; sum/avg/min/max: of a numeric property; days_since_last/first: days
from the newest/oldest matching event to the cut-off; active_days: distinct days with one."""
TargetAggregate = Literal["any", "none", "count", "sum"]
"""any: 1 if a matching event happened in the window (propensity); none: 1 if none did (churn);
count, sum: how many, or the sum of a property (a value to regress, e.g. lifetime value)."""
Scalar = str | int | float | bool

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
"""Score and feature names (a score name is a `scores.name`, at most 128 characters)."""


@dataclass(frozen=True)
class Output:
    """A score (a number) or a label (a string) the enricher writes on every profile."""

    name: str
    kind: Literal["score", "label"] = "score"
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"output name {self.name!r}: letters, digits, _ . : - (≤ 128)")


@dataclass(frozen=True)
class Events:
    """Which events: any of `names` (empty: any name) and of `types` (empty: any type), whose
    payload has each `where` path equal to its value (paths are dotted: "properties.category")."""

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    where: Mapping[str, Scalar] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.names, self.types, tuple(sorted(self.where.items()))))


@dataclass(frozen=True)
class Feature:
    """One column of the feature matrix: an aggregate of a profile's events before the cut-off."""

    name: str
    aggregate: Aggregate
    events: Events = Events()
    property: str | None = None
    """Dotted payload path of the number to aggregate (sum, avg, min, max)."""
    within: timedelta | None = None
    """Only the events in this window before the cut-off; None: all history (or the lookback)."""
    fill: float | None = None
    """The value for a profile without matching events; None: 0 for count, sum and active_days,
    NaN (missing) for the others."""

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"feature name {self.name!r}: letters, digits, _ . : - (≤ 128)")
        needs_property = self.aggregate in ("sum", "avg", "min", "max")
        if needs_property != (self.property is not None):
            raise ValueError(f"feature {self.name!r}: a property is for sum, avg, min and max")

    def default(self) -> float:
        if self.fill is not None:
            return self.fill
        return 0.0 if self.aggregate in ("count", "sum", "active_days") else float("nan")


@dataclass(frozen=True)
class Target:
    """The label: an aggregate of a profile's events in the window [cut-off, cut-off + horizon).

    Training puts the cut-off one horizon before now, so the window has fully happened."""

    aggregate: TargetAggregate
    horizon: timedelta
    events: Events = Events()
    property: str | None = None
    """Dotted payload path of the number to sum (aggregate "sum")."""

    def __post_init__(self) -> None:
        if (self.aggregate == "sum") != (self.property is not None):
            raise ValueError('a target property is for the aggregate "sum" only')
        if self.horizon <= timedelta(0):
            raise ValueError("a target's horizon must be positive")


# --- durations in options ------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d{1,6})\s*([hdw])\s*$")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: object) -> timedelta:
    """ "30d", "12h", "8w" (or a timedelta) → timedelta; raises ValueError saying what to write."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) == 0:
        raise ValueError(f'expected a duration such as "30d", "12h" or "8w", got {value!r}')
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def format_duration(value: timedelta) -> str:
    """timedelta → "30d" or "12h", as written in cdp.toml."""
    hours = int(value.total_seconds() // 3600)
    return f"{hours // 24}d" if hours % 24 == 0 else f"{hours}h"


def _duration_option(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:  # a custom error: no "Value error, " before the message
        raise PydanticCustomError("duration", "{reason}", {"reason": str(exc)}) from None


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_option),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
"""For pydantic `Options`: written "30d" in cdp.toml, and so stored with a model version."""
