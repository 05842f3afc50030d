"""The limits a collected message must keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_DEPTH = 32
"""Levels of nesting a message may have, counting the message object itself."""
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

MAX_ID_CHARS = 512
"""userId, anonymousId, groupId, previousId."""
MAX_NAME_CHARS = 255
"""messageId, track event names, page/screen names."""
MAX_FUTURE = timedelta(hours=1)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIMESTAMP_CHARS = 64
"""Longer than any ISO-8601 date-time; bounds the work spent on a hostile string."""
MAX_SEGMENT_CHARS = 64
"""Longest key shown in an error's field path."""

_SAFE_SOURCE_BYTES = MAX_MESSAGE_BYTES // 5
"""A message whose JSON text is no longer cannot re-serialise past MAX_MESSAGE_BYTES: strings and
integers never grow, and a float at most 4.5-fold (`1e15` becomes `1000000000000000.0`)."""
_SUSPECT_ESCAPES = ("\\u0000", "\\ud", "\\uD")
"""Only these escapes can put a NUL or an unpaired surrogate in decoded text."""
_TOO_DEEP = f"nests deeper than {MAX_DEPTH} levels"
_OBJECT_FIELDS = ("traits", "properties", "context", "integrations")
_NOT_HASHED = ("sentAt", "messageId", "writeKey", "type")
"""Left out of a derived messageId; the type is hashed as the endpoint or batch decided it."""
