"""API keys: created once and shown once, stored only as a SHA-256 hash, each with scopes.

Keys are 256 random bits, so a fast hash is enough: nothing can be guessed from it, and the
lookup is an indexed equality on the hash (no timing leak from comparing secrets).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from cdp.db.models import ApiKey, utcnow
from cdp.errors import NotFoundError, UserError

KEY_PREFIX = "cdp_"


class Scope(StrEnum):
    READ = "read"
    """Read profiles, segments, offers, decisions; ask for next-best-offers."""
    COLLECT = "collect"
    """Send events (collection API, `track`/`identify`): write-only."""
    ADMIN = "admin"
    """Everything, including configuration mutations."""


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    scopes: frozenset[Scope]

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(values: list[str] | tuple[str, ...]) -> frozenset[Scope]:
    if not values:
        raise UserError("a key needs at least one scope: read, collect or admin")
    try:
        return frozenset(Scope(v) for v in values)
    except ValueError:
        bad = next(v for v in values if v not in Scope.__members__.values())
        raise UserError(f"unknown scope {bad!r}: use read, collect or admin") from None


def create_key(session: Session, scopes: frozenset[Scope], name: str) -> tuple[ApiKey, str]:
    """Store a new key; returns the row and the plaintext key, which is not kept anywhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        name=name, prefix=key[:12], key_hash=hash_key(key), scopes=" ".join(sorted(scopes))
    )
    session.add(row)
    session.flush()
    return row, key


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else."""
    if not key.startswith(KEY_PREFIX) or len(key) > 100:
        return None
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.name, frozenset(Scope(s) for s in row.scopes.split()))


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id_or_prefix: str) -> ApiKey:
    query = select(ApiKey)
    if key_id_or_prefix.isdigit():
        query = query.where(ApiKey.id == int(key_id_or_prefix))
    else:
        query = query.where(ApiKey.prefix == key_id_or_prefix)
    rows = list(session.scalars(query))
    if not rows:
        raise NotFoundError(f"no API key with id or prefix {key_id_or_prefix!r}")
    if len(rows) > 1:
        raise UserError(f"prefix {key_id_or_prefix!r} matches {len(rows)} keys: revoke by id")
    if rows[0].revoked_at is None:
        rows[0].revoked_at = utcnow()
    return rows[0]
