"""What a connector may say about its records beyond `SourceConnector`'s contract.

A connector yields plain mappings; one that yields `SourceRecord`s also gives each record a stable
key (for its messageId, so that a re-import is a replay) and where it came from (for rejects).
One with a `position()` method lets the progress bar show how far it is and when it will end.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


class SourceRecord(dict[str, Any]):
    """A record's fields, plus its identity and origin."""

    __slots__ = ("key", "location", "raw", "row")

    def __init__(
        self,
        fields: dict[str, Any],
        *,
        key: str,
        row: int | None = None,
        location: str | None = None,
        raw: str | None = None,
    ) -> None:
        super().__init__(fields)
        self.key = key
        """Stable across runs and unique within the source, e.g. file fingerprint + row."""
        self.row = row
        """The record's number where it came from (e.g. the data row of a file, from 1)."""
        self.location = location
        """Where it came from, e.g. the file's path."""
        self.raw = raw
        """The record as the source holds it (e.g. the CSV line), shown for a reject."""


class RecordError(SourceRecord):
    """A record the connector could not read (undecodable bytes, invalid JSON, wrong number of
    fields); the sync rejects it with `reason` and carries on."""

    __slots__ = ("reason",)

    def __init__(
        self, reason: str, *, key: str, row: int | None, location: str | None, raw: str
    ) -> None:
        super().__init__({}, key=key, row=row, location=location, raw=raw)
        self.reason = reason


@runtime_checkable
class Positioned(Protocol):
    def position(self) -> tuple[int, int | None]:
        """(units done, units in all) after the last batch yielded, e.g. bytes of the files;
        all is None when the connector cannot tell."""
