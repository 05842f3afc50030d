"""The offers of every content provider, for the decision pipeline and GraphQL.

- `providers(runtime)`: the configured content providers (`[[content_providers]]`), created
  and validated once per process; with no entry, one `catalogue` provider named "catalogue".
- `upsert_offer` / `delete_offer`: what admins save for a provider (the `offers` table); a
  definition is validated against the store when it is saved (`parse_offer`, errors naming the
  path).
- `OfferCache`: every provider's offers, namespaced ("<provider>:<key>") and validated; an offer
  that is wrong is dropped with a logged warning naming it and never breaks a decision. Reloaded
  when the `offers` table (or a segment or computed trait, which eligibility refers to) changes,
  and every `refresh_seconds` for what providers read from their own sources.
- `render(runtime, offer, profile, channel)`: the offer's content, through its provider.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from cdp.components import ContentProvider
from cdp.config import ComponentEntry, Config
from cdp.db.models import ComputedTrait, Offer, Segment, utcnow
from cdp.decisions.offers import (
    PROVIDER,
    OfferError,
    OfferSpec,
    parse_offer,
    split_id,
)
from cdp.errors import CDPError, ConfigError, NotFoundError, UserError
from cdp.plugins import PluginHost
from cdp.runtime import Runtime
from cdp.segments.computed import parse_computed
from cdp.segments.conditions import Catalog
from cdp.segments.definitions import catalog

log = logging.getLogger("cdp.decisions.offers")

DEFAULT_PROVIDER = "catalogue"
"""The name and type of the provider the core runs when config names none."""
REFRESH_SECONDS = 60.0
CHECK_SECONDS = 1.0
"""How stale, at most, this process's offers are after another process saves one (saves in
this process are seen at once)."""
MAX_OFFERS = 10_000
"""Offers one provider may supply; the rest are dropped with a warning."""
MAX_CONTENT_FIELDS = 64
OFFERS_LOCK = (0x4344504F, 0)  # pg_advisory_xact_lock(class, key): "CDPO"
_PROVIDERS = "content_providers"
_CACHE = "offer_cache"
_created = threading.Lock()
_generations = itertools.count(1)
_generation = 0
"""Changed by every save and delete in this process: caches look at the store again at once."""


# --- providers -----------------------------------------------------------------------------------


def load_providers(
    config: Config, plugins: PluginHost, file: str = "cdp.toml"
) -> dict[str, ContentProvider]:
    """Create every `[[content_providers]]` entry's provider; the first fault raises a
    ConfigError naming the file, the entry and the key (`cdp.toml: content_providers[0].offers[1]
    .content.email.subject: unexpected '}'`)."""
    entries = [
        (e, f"{file}: content_providers[{i}]") for i, e in enumerate(config.content_providers)
    ]
    if not entries:
        if DEFAULT_PROVIDER not in plugins.components["content_provider"]:
            return {}  # the bundled catalogue is blocked: no offers, and no error
        default = ComponentEntry(name=DEFAULT_PROVIDER, type=DEFAULT_PROVIDER)
        entries = [(default, f"{file}: content_providers (the default catalogue)")]
    found: dict[str, ContentProvider] = {}
    for entry, where in entries:
        if not PROVIDER.match(entry.name):
            raise ConfigError(f"{where}.name: at most 64 letters, digits, '_', '.' or '-'")
        if entry.name in found:
            raise ConfigError(f"{where}.name: another content provider is named {entry.name!r}")
        try:
            provider = plugins.create("content_provider", entry, where)
        except UserError as exc:  # the provider refused its options, naming the key
            raise ConfigError(f"{where}.{exc}") from None
        assert isinstance(provider, ContentProvider)
        found[entry.name] = provider
    return found


def providers(runtime: Runtime, file: str = "cdp.toml") -> dict[str, ContentProvider]:
    """The process's content providers by name, created on first use. Called at start with the
    config file's name, it makes a bad `[[content_providers]]` entry stop the process, named."""
    found = runtime.caches.get(_PROVIDERS)
    if found is None:
        with _created:
            found = runtime.caches.get(_PROVIDERS)
            if found is None:
                found = runtime.caches[_PROVIDERS] = load_providers(
                    runtime.config, runtime.plugins, file
                )
    return found  # type: ignore[no-any-return]


def _provider(runtime: Runtime, name: Any) -> ContentProvider:
    known = providers(runtime)
    if not isinstance(name, str) or name not in known:
        shown = repr(name)[:70]
        raise UserError(
            f"provider: no content provider is named {shown} "
            f"(configured: {', '.join(sorted(known)) or 'none'})"
        )
    return known[name]


# --- saving --------------------------------------------------------------------------------------


def upsert_offer(runtime: Runtime, provider: str, definition: Any) -> OfferSpec:
    """Validate `definition` against the store and save it for `provider` (replacing the one
    with its key)."""
    global _generation
    _provider(runtime, provider)
    known = providers(runtime)
    with runtime.writing() as session:
        _lock(session)
        spec = parse_offer(provider, definition, catalog(session, runtime.config))
        for i, (needed, _) in enumerate(spec.prerequisites):
            if needed.partition(":")[0] not in known:
                raise OfferError(
                    f"definition.prerequisites[{i}].offer",
                    f"no content provider is named {needed.partition(':')[0]!r}",
                )
        now = _next_time(session)
        row = session.get(Offer, (provider, spec.key))
        if row is None:
            row = Offer(provider=provider, key=spec.key, created_at=now)
            session.add(row)
        row.definition = spec.definition_json()
        row.updated_at = now
        session.flush()
    _generation = next(_generations)
    return spec


def delete_offer(runtime: Runtime, offer_id: str) -> None:
    """Delete a saved offer ("<provider>:<key>"); offers from config or from a provider's own
    source are not saved ones (a config offer that a saved one replaced comes back)."""
    global _generation
    provider, key = split_id(offer_id, "id")
    with runtime.writing() as session:
        _lock(session)
        row = session.get(Offer, (provider, key))
        if row is None:
            raise NotFoundError(
                f"id: no saved offer has the id {offer_id!r} (offers from cdp.toml or from a "
                "provider's own source are changed there)"
            )
        session.delete(row)
        session.flush()
    _generation = next(_generations)


def _lock(session: Session) -> None:
    """Serialise offer writes (SQLite's write transactions already are)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:c, :k)"), {"c": OFFERS_LOCK[0], "k": OFFERS_LOCK[1]}
        )


def _next_time(session: Session) -> datetime:
    """Now, but later than every saved offer's `updated_at`: so the cache stamp (count, latest)
    changes with every write, whatever the clocks of the processes that write."""
    now = utcnow()
    latest = session.scalar(select(func.max(Offer.updated_at)))
    if latest is not None and now <= latest:
        now = latest + timedelta(microseconds=1)
    return now


# --- the cache -----------------------------------------------------------------------------------


@dataclass
class _Loaded:
    offers: list[OfferSpec]
    stamp: tuple[Any, ...]
    generation: int
    loaded_at: float
    checked_at: float


class OfferCache:
    """Every provider's validated offers; cheap to ask (see the module docstring)."""

    def __init__(
        self, refresh_seconds: float = REFRESH_SECONDS, check_seconds: float = CHECK_SECONDS
    ) -> None:
        self.refresh_seconds = refresh_seconds
        self.check_seconds = check_seconds
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    def offers(self, session: Session, runtime: Runtime, now: datetime) -> list[OfferSpec]:
        """Every offer, whatever its validity at `now` (the pipeline filters by time and says
        why); `session` reads the store when something may have changed."""
        loaded = self._loaded
        clock = time.monotonic()
        if (
            loaded is not None
            and loaded.generation == _generation
            and clock - loaded.checked_at < self.check_seconds
            and clock - loaded.loaded_at < self.refresh_seconds
        ):
            return list(loaded.offers)
        with self._lock:
            generation = _generation
            stamp = _stamp(session)
            loaded = self._loaded
            clock = time.monotonic()
            if (
                loaded is not None
                and loaded.stamp == stamp
                and clock - loaded.loaded_at < self.refresh_seconds
            ):
                loaded.generation, loaded.checked_at = generation, clock
                return list(loaded.offers)
            previous = loaded.offers if loaded is not None else []
            offers = self._load(session, runtime, previous)
            self._loaded = _Loaded(offers, stamp, generation, clock, clock)
            return list(offers)

    def invalidate(self) -> None:
        self._loaded = None

    def _load(
        self, session: Session, runtime: Runtime, previous: list[OfferSpec]
    ) -> list[OfferSpec]:
        stored: dict[str, list[dict[str, Any]]] = {}
        for provider, definition in session.execute(
            select(Offer.provider, Offer.definition).order_by(Offer.created_at, Offer.key)
        ):
            stored.setdefault(provider, []).append(definition)
        refer = _store_catalog(session)
        found: list[OfferSpec] = []
        for name, provider in providers(runtime).items():
            try:
                supplied = list(_take(provider.offers(stored.get(name, [])), MAX_OFFERS + 1))
            except Exception:
                log.exception(
                    "content provider %r failed to list its offers; keeping its last ones", name
                )
                found.extend(o for o in previous if o.provider == name)
                continue
            if len(supplied) > MAX_OFFERS:
                self._warn(
                    f"content provider {name!r}: more than {MAX_OFFERS} offers; the rest dropped"
                )
                supplied = supplied[:MAX_OFFERS]
            keys: set[str] = set()
            for index, raw in enumerate(supplied):
                label = _label(name, raw, index)
                try:
                    spec = parse_offer(name, raw, refer)
                except UserError as exc:
                    self._warn(f"offer {label} dropped: {exc}")
                    continue
                except Exception as exc:  # a provider's odd object, e.g. a key that is no str
                    self._warn(f"offer {label} dropped: {type(exc).__name__}: {exc}")
                    continue
                if spec.key in keys:
                    self._warn(f"offer {label} dropped: another offer of {name!r} has its key")
                    continue
                keys.add(spec.key)
                found.append(spec)
        return found

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per cache, not at every reload
            self._warned.add(message)
            log.warning(message)


def offer_cache(runtime: Runtime) -> OfferCache:
    """The process's shared offer cache (GraphQL reads it)."""
    cache = runtime.caches.get(_CACHE)
    if cache is None:
        with _created:
            cache = runtime.caches.get(_CACHE)
            if cache is None:
                cache = runtime.caches[_CACHE] = OfferCache()
    return cache  # type: ignore[no-any-return]


_STAMP = select(
    select(func.count()).select_from(Offer).scalar_subquery(),
    select(func.max(Offer.updated_at)).scalar_subquery(),
    select(func.count()).select_from(Segment).scalar_subquery(),
    select(func.max(Segment.updated_at)).scalar_subquery(),
    select(func.count()).select_from(ComputedTrait).scalar_subquery(),
    select(func.max(ComputedTrait.updated_at)).scalar_subquery(),
)


def _stamp(session: Session) -> tuple[Any, ...]:
    """Changes whenever an offer, segment or computed trait is saved or deleted."""
    return tuple(session.execute(_STAMP).one())


def _store_catalog(session: Session) -> Catalog:
    """What eligibility may refer to: every trait (any type), the stored computed traits and
    segments. Saved offers were checked against observed trait types when saved."""
    computed = {
        key: parse_computed(key, raw).value_type
        for key, raw in session.execute(select(ComputedTrait.key, ComputedTrait.definition))
    }
    segments = set(session.scalars(select(Segment.key)))
    return Catalog(lambda name: "any", computed, segments.__contains__)


def _take(items: Any, limit: int) -> list[Any]:
    taken = []
    for item in items:
        taken.append(item)
        if len(taken) >= limit:
            break
    return taken


def _label(provider: str, raw: Any, index: int) -> str:
    key = raw.get("key") if isinstance(raw, Mapping) else None
    if isinstance(key, str) and 0 < len(key) <= 128 and key.isprintable():
        return repr(f"{provider}:{key}")
    return f"#{index} of content provider {provider!r}"


# --- rendering -----------------------------------------------------------------------------------


def render(
    runtime: Runtime, offer: OfferSpec, profile: Mapping[str, Any], channel: str
) -> dict[str, str]:
    """The offer's content for `channel` and `profile`, rendered by its provider. Raises
    `UserError` when it cannot be rendered (the pipeline then skips the offer, saying why)."""
    provider = providers(runtime).get(offer.provider)
    if provider is None:
        raise UserError(f"offer {offer.id!r}: no content provider is named {offer.provider!r}")
    person = {name: profile.get(name) for name in ("id", "traits", "computed_traits", "scores")}
    try:
        content = provider.render(offer.as_mapping(), person, channel)
    except CDPError:
        raise
    except Exception:
        log.exception("content provider %r failed to render offer %r", offer.provider, offer.id)
        raise UserError(
            f"offer {offer.id!r}: its content provider failed to render it (see the server log)"
        ) from None
    return _checked(offer, content)


def _checked(offer: OfferSpec, content: Any) -> dict[str, str]:
    if not isinstance(content, Mapping) or len(content) > MAX_CONTENT_FIELDS:
        raise UserError(f"offer {offer.id!r}: its content provider returned no {{field: text}}")
    rendered = {}
    for name, value in content.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise UserError(
                f"offer {offer.id!r}: its content provider returned a field that is not text"
            )
        rendered[name] = value
    return rendered
