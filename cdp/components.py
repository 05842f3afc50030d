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

# The enricher contract's declarations, re-exported so that vendors import from one place.
from cdp.models.spec import Events, Feature, Output, Target, Task  # noqa: F401


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
    """An enrichment model: declares what it writes on profiles, the features it learns from and
    (unless it clusters) the label it predicts; supplies a scikit-learn estimator.

    The core does the rest, the same for every enricher: it builds the features in the database
    (events before a cut-off) and the labels (events in the window after it), holds out a test
    split and records the evaluation, stores each trained version (a skops artefact with its
    SHA-256, metrics, feature list, training window and code version), keeps an active version
    with rollback, and scores every profile in chunks or one profile on demand.
    """

    kind = "enricher"
    task: ClassVar[Task]
    """classification (`predict_proba`), regression (`predict`) or clustering (`predict`)."""
    version: ClassVar[str] = "1"
    """The enricher's own code version, recorded with every trained version; change it when the
    features or the estimator change meaning."""
    trusted_types: ClassVar[Sequence[str]] = ()
    """Types its artefacts hold beyond those skops trusts by default (e.g. HistGradientBoosting's
    `TreePredictor`); an artefact holding any other type is refused, never loaded."""

    model: str = ""
    """The name of the `[[models]]` entry this instance serves (set by the core); bundled
    enrichers name their output after it, so two entries of one type write different scores."""

    @abstractmethod
    def outputs(self) -> Sequence[Output]:
        """The scores and labels written on profiles, by name (unique across all models)."""

    @abstractmethod
    def features(self) -> Sequence[Feature]:
        """The columns of the feature matrix, in order."""

    def target(self) -> Target | None:
        """The label to learn (classification and regression); None for clustering."""
        return None

    @abstractmethod
    def estimator(self) -> Any:
        """A new, unfitted scikit-learn estimator (a Pipeline is fine); the core fits it on the
        feature matrix (NaN where a feature has no value) and, unless clustering, the labels."""

    def score(self, model: Any, features: Any) -> Mapping[str, Any]:
        """Output name → one value per row of `features` (a numpy matrix): numbers for scores,
        strings for labels. The default serves one score output: the probability of the
        positive class, the prediction, or the cluster number."""
        [output] = self.outputs()
        if self.task == "classification":
            return {output.name: model.predict_proba(features)[:, 1]}
        return {output.name: model.predict(features)}


# --- content providers and decision strategies ---------------------------------------------------


class ContentProvider(Component):
    """Supplies offers and renders their content for a profile and channel.

    An offer is a mapping with at least `key` (unique within the provider; the core namespaces
    it as "<provider name>:<key>"), `name`, `value`, `cost`, and `content` ({channel: {field:
    template}}); optional `priority`, `levers`, `tags`, `valid_from`, `valid_until` (ISO-8601),
    `eligibility` (a condition, see cdp.segments.conditions), `prerequisites`
    ([{"offer": id, "outcome": "accepted" | "shown"}]), `budget` (presentations in all) and
    `propensity` (the score name to rank it by). The core validates each offer
    (`cdp.decisions.offers.parse_offer`) and drops, with a logged reason, those that are wrong.
    """

    kind = "content_provider"

    @abstractmethod
    def offers(self, stored: Sequence[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        """The offers this provider currently supplies. `stored` are the offers admins saved
        for this provider through GraphQL (`upsertOffer`); a provider may serve them, as the
        bundled catalogue does, or ignore them."""

    @abstractmethod
    def render(
        self, offer: Mapping[str, Any], profile: Mapping[str, Any], channel: str
    ) -> Mapping[str, str]:
        """The offer's content for `channel` (e.g. subject, html, text), for `profile`
        ({"id", "traits", "computed_traits", "scores"}). Raise `cdp.errors.UserError` for
        content that cannot be rendered; the offer is then filtered out with that reason."""


@dataclass(frozen=True)
class Ranked:
    offer_id: str
    score: float
    factors: Mapping[str, float | str] = field(default_factory=dict)
    probability: float | None = None
    """The probability the strategy chose this offer with; logged for off-policy evaluation."""


class DecisionStrategy(Component):
    """Ranks the eligible offers for a profile in a context.

    `offers` are validated offers as mappings (see `ContentProvider`, with `id` namespaced);
    `profile` is {"id", "traits", "computed_traits", "scores": {name: value}, "segments":
    [keys]}; `context` is {"channel", "placement", "time" (aware datetime), "limit",
    "attributes", "stats"}, where "stats" maps each offer id to its response history on this
    channel: {"shown": presentations, "successes": clicks, accepts and conversions}, so that a
    learning strategy can work from the store's own data, the same in every process.
    """

    kind = "strategy"
    version: ClassVar[str] = "1"
    """Logged with every decision; bump it when the ranking changes."""

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
