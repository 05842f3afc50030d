"""The five component kinds plugins supply, as abstract base classes.

A plugin's `register_*` hook returns subclasses of these. The core instantiates a component from
a config entry (`[[sources]]`, `[[channels]]`, …): the entry's keys other than `name` and `type`
are validated against the class's `Options` model, so a vendor's component gets the same error
messages as a bundled one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(ABC):
    kind: ClassVar[str]
    """The component kind; set by each base class below."""
    name: ClassVar[str]
    """The type name admins write in config (`type = "smtp"`); unique within a kind."""
    Options: ClassVar[type[BaseModel]] = NoOptions
    """Pydantic model of the component's config keys; use `cdp.config.Secret` for secrets."""

    def __init__(self, options: BaseModel) -> None:
        self.options = options


# --- source connectors ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordBatch:
    records: Sequence[Mapping[str, Any]]
    checkpoint: str
    """Where to resume once these records are committed."""


class SourceConnector(Component):
    """Reads records from a system incrementally."""

    kind = "source"

    @abstractmethod
    def read(self, checkpoint: str | None) -> Iterator[RecordBatch]:
        """Yield batches after `checkpoint` (None: from the start), each with the checkpoint to
        store once it is committed."""


class PushReceiver(ABC):
    """A source that systems push records to (`POST /sources/{name}/webhook`), mixed into a
    `SourceConnector`. The core maps, validates and ingests what `receive` returns, exactly as it
    does records that a sync reads."""

    @abstractmethod
    def receive(
        self, headers: Mapping[str, str], body: bytes, now: float
    ) -> Sequence[Mapping[str, Any]]:
        """Verify one pushed request and decode it into records. Raise `cdp.errors.Unauthorized`
        to refuse its sender, `cdp.errors.UserError` for a body that cannot be read; the message
        is sent back. `now` is the server's time (seconds since the epoch)."""


# --- enrichment models ---------------------------------------------------------------------------


class Enricher(Component):
    """Builds features from the store, trains on them and scores profiles."""

    kind = "enricher"

    @abstractmethod
    def outputs(self) -> Sequence[str]:
        """Names of the scores or labels this enricher writes on profiles."""

    @abstractmethod
    def train(self, features: Any, labels: Any) -> Any:
        """Fit and return a model object; the core versions, evaluates and stores it."""

    @abstractmethod
    def score(self, model: Any, features: Any) -> Sequence[Mapping[str, float | str]]:
        """One mapping of output name to value per row of `features`."""


# --- content providers and decision strategies ---------------------------------------------------


class ContentProvider(Component):
    """Supplies offers and renders their content for a profile and channel."""

    kind = "content_provider"

    @abstractmethod
    def offers(self) -> Iterable[Mapping[str, Any]]:
        """The offers this provider currently supplies."""

    @abstractmethod
    def render(
        self, offer: Mapping[str, Any], profile: Mapping[str, Any], channel: str
    ) -> Mapping[str, str]:
        """The offer's content for `channel` (e.g. subject, html, text), for `profile`."""


@dataclass(frozen=True)
class Ranked:
    offer_id: str
    score: float
    factors: Mapping[str, float | str] = field(default_factory=dict)
    probability: float | None = None
    """The probability the strategy chose this offer with; logged for off-policy evaluation."""


class DecisionStrategy(Component):
    """Ranks the eligible offers for a profile in a context."""

    kind = "strategy"

    @abstractmethod
    def rank(
        self,
        offers: Sequence[Mapping[str, Any]],
        profile: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> list[Ranked]:
        """Every offer of `offers`, best first, with the factors behind its score."""

    def learn(self, offer_id: str, outcome: str, context: Mapping[str, Any]) -> None:
        """Called with each response; strategies that do not learn ignore it."""


# --- channel senders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    delivery_id: str
    """Stable across retries: receivers drop a repeat by it."""
    channel: str
    to: str
    content: Mapping[str, str]
    profile_id: str | None = None


@dataclass(frozen=True)
class DeliveryResult:
    status: Literal["delivered", "failed"]
    retryable: bool = False
    detail: str = ""


class ChannelSender(Component):
    """Sends one message; must be idempotent by `Message.delivery_id`."""

    kind = "channel"

    @abstractmethod
    def send(self, message: Message) -> DeliveryResult:
        """Send and report; raise nothing for a failure the channel reported."""


KINDS: dict[str, type[Component]] = {
    cls.kind: cls
    for cls in (SourceConnector, Enricher, ContentProvider, DecisionStrategy, ChannelSender)
}
