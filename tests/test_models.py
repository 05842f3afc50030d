from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cdp.db.models import Profile, new_id


def test_new_ids_are_uuid7_and_increase():
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}


def test_datetimes_come_back_aware_utc(runtime):
    berlin = timezone(timedelta(hours=1))
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=berlin)
    with runtime.transaction() as session:
        profile = Profile(traits={}, trait_sources={}, created_at=created)
        session.add(profile)
    with runtime.sessions() as session:
        loaded = session.get(Profile, profile.id)
    assert loaded.created_at == created
    assert loaded.created_at.tzinfo == UTC


def test_naive_datetimes_are_refused(runtime):
    with pytest.raises(Exception, match="naive datetime"), runtime.transaction() as session:
        session.add(Profile(traits={}, trait_sources={}, created_at=datetime(2026, 1, 1)))
