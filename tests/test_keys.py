from __future__ import annotations

import pytest
from sqlalchemy import select

from cdp.db.models import ApiKey
from cdp.errors import NotFoundError, UserError
from cdp.keys import Principal, Scope, authenticate, create_key, hash_key, parse_scopes, revoke_key


def test_key_is_stored_only_as_a_hash(runtime):
    with runtime.transaction() as session:
        _, key = create_key(session, frozenset({Scope.READ}), "web")
    with runtime.sessions() as session:
        stored = session.scalars(select(ApiKey)).one()
    assert key.startswith("cdp_") and len(key) > 40
    assert stored.key_hash == hash_key(key) != key
    assert key not in (stored.prefix, stored.name, stored.scopes)
    assert stored.prefix == key[:12]


def test_authenticate_gives_the_scopes(runtime):
    with runtime.transaction() as session:
        row, key = create_key(session, frozenset({Scope.READ, Scope.COLLECT}), "both")
    with runtime.sessions() as session:
        principal = authenticate(session, key)
        assert authenticate(session, key + "x") is None
        assert authenticate(session, "not-a-key") is None
    assert principal == Principal(row.id, "both", frozenset({Scope.READ, Scope.COLLECT}))
    assert principal.allows(Scope.READ) and not principal.allows(Scope.ADMIN)


def test_admin_implies_every_scope():
    admin = Principal(1, "a", frozenset({Scope.ADMIN}))
    assert all(admin.allows(scope) for scope in Scope)


def test_revoke_by_id_or_prefix(runtime):
    with runtime.transaction() as session:
        one, key_one = create_key(session, frozenset({Scope.READ}), "one")
        two, key_two = create_key(session, frozenset({Scope.READ}), "two")
    with runtime.transaction() as session:
        revoke_key(session, str(one.id))
        revoke_key(session, two.prefix)
    with runtime.sessions() as session:
        assert authenticate(session, key_one) is None
        assert authenticate(session, key_two) is None


def test_revoke_unknown_key_is_named(runtime):
    with runtime.transaction() as session, pytest.raises(NotFoundError, match="'cdp_nope'"):
        revoke_key(session, "cdp_nope")


def test_scopes_are_validated():
    assert parse_scopes(["read", "admin"]) == frozenset({Scope.READ, Scope.ADMIN})
    with pytest.raises(UserError, match="unknown scope 'write': use read, collect or admin"):
        parse_scopes(["read", "write"])
    with pytest.raises(UserError, match="at least one scope"):
        parse_scopes([])
