"""`webhook` source: systems push records to `POST /sources/{name}/webhook`, signed.

Each request carries `X-CDP-Timestamp` (seconds since the epoch) and `X-CDP-Signature`:
`sha256=` and the hex HMAC-SHA256, keyed with the source's secret, of `<timestamp>.<body>`.
A request unsigned, wrongly signed or signed more than `tolerance_seconds` away from the server's
clock (a replay) is refused. The body is one JSON record, a list of them, or an object holding
the list at `records_path`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cdp.components import PushReceiver, RecordBatch, SourceConnector
from cdp.config import Secret
from cdp.errors import Unauthorized, UserError
from cdp.hookspecs import hookimpl


class WebhookOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    secret: Secret
    signature_header: str = "X-CDP-Signature"
    timestamp_header: str = "X-CDP-Timestamp"
    tolerance_seconds: int = Field(300, ge=1)
    records_path: str | None = None
    """Dotted path of the list of records in the body, e.g. "data.items"; None: the body is a
    record or a list of records."""


class WebhookSource(SourceConnector, PushReceiver):
    name = "webhook"
    Options = WebhookOptions

    def __init__(self, options: WebhookOptions) -> None:
        super().__init__(options)
        self.key = options.secret.get_secret_value().encode()

    def read(self, checkpoint: str | None) -> Iterator[RecordBatch]:
        raise UserError(
            "a webhook source receives its records at POST /sources/<name>/webhook; "
            "there is nothing to sync"
        )

    def receive(
        self, headers: Mapping[str, str], body: bytes, now: float
    ) -> Sequence[Mapping[str, Any]]:
        self._verify(headers, body, now)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise UserError("body: not valid JSON") from None
        if self.options.records_path:
            for part in self.options.records_path.split("."):
                if not isinstance(data, dict) or part not in data:
                    raise UserError(f"body: no list of records at {self.options.records_path!r}")
                data = data[part]
        records = data if isinstance(data, list) else [data]
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise UserError(f"body: record {index} is not a JSON object")
        return records

    def _verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        stamp = headers.get(self.options.timestamp_header.lower(), "")
        signature = headers.get(self.options.signature_header.lower(), "")
        if not stamp or not signature:
            raise Unauthorized(
                f"unsigned: send {self.options.timestamp_header} and "
                f"{self.options.signature_header} (see the source's documentation)"
            )
        if not stamp.isdigit() or abs(now - int(stamp)) > self.options.tolerance_seconds:
            raise Unauthorized(
                f"{self.options.timestamp_header}: not within "
                f"{self.options.tolerance_seconds} s of the server's clock"
            )
        expected = hmac.new(self.key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.removeprefix("sha256="), expected):
            raise Unauthorized(f"{self.options.signature_header}: signature does not match")


@hookimpl
def register_sources() -> list[type[SourceConnector]]:
    return [WebhookSource]
