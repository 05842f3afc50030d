"""`jsonl` channel: appends each delivery to a JSON-lines file instead of sending it.

An example of a vendor plugin: a separate distribution that registers this module under the `cdp`
entry-point group and implements one hook, `register_channels`. Configure it with

    [[channels]]
    name = "archive"
    type = "jsonl"
    path = "var/deliveries.jsonl"

One process should own a file: the delivery ids already written are read once, when the sender is
created, and kept in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cdp.components import ChannelSender, DeliveryResult, Message
from cdp.hookspecs import hookimpl

__all__ = ["JsonlChannel", "JsonlOptions", "register_channels"]


class JsonlOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1)
    """The file deliveries are appended to; relative to the server's working directory."""


class JsonlChannel(ChannelSender):
    name = "jsonl"
    Options = JsonlOptions

    def __init__(self, options: JsonlOptions) -> None:
        super().__init__(options)
        self.path = Path(options.path)
        # Senders may be shared by worker threads; the check-then-append must not interleave.
        self._lock = threading.Lock()
        self._ids: set[str] | None = None
        # An unreadable file (permissions, a share not mounted yet) is not a config error:
        # reading is retried on each send, which reports the failure as retryable.
        with contextlib.suppress(OSError):
            self._ids = self._read_ids()

    def _read_ids(self) -> set[str]:
        ids: set[str] = set()
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return ids
        with file:
            for line in file:
                try:
                    record = json.loads(line)
                except ValueError:
                    # A line torn by a crash mid-write was never acknowledged: send it again.
                    continue
                if isinstance(record, dict) and isinstance(record.get("delivery_id"), str):
                    ids.add(record["delivery_id"])
        return ids

    def send(self, message: Message) -> DeliveryResult:
        with self._lock:
            try:
                if self._ids is None:
                    self._ids = self._read_ids()
                if message.delivery_id in self._ids:
                    return DeliveryResult("delivered", detail="repeat dropped")
                created = not self.path.exists()
                self._append(message)
                # The line is on disk: a retry after a failure below must not write it twice.
                self._ids.add(message.delivery_id)
                if created:
                    self._sync_directory()
            except OSError as exc:
                detail = f"{self.path}: {exc.strerror or exc}"
                return DeliveryResult("failed", retryable=True, detail=detail)
        return DeliveryResult("delivered")

    def _append(self, message: Message) -> None:
        record = {
            "delivery_id": message.delivery_id,
            "channel": message.channel,
            "to": message.to,
            "content": dict(message.content),
            "profile_id": message.profile_id,
            "sent_at": datetime.now(UTC).isoformat(),
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self.path.open("ab+") as file:
            if file.seek(0, os.SEEK_END):
                file.seek(-1, os.SEEK_END)
                if file.read(1) != b"\n":
                    # A torn last line would swallow this record; start a line of our own.
                    line = b"\n" + line
            file.write(line)
            file.flush()
            # Acknowledge only what is on disk: a crash after "delivered" must not lose it.
            os.fsync(file.fileno())

    def _sync_directory(self) -> None:
        """Make a new file's directory entry durable too (POSIX only; Windows cannot open one)."""
        if os.name != "posix":
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@hookimpl
def register_channels() -> list[type[ChannelSender]]:
    return [JsonlChannel]
