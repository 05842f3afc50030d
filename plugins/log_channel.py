"""`log` channel: writes each delivery to the log instead of sending it.

For development and dry runs: configure `[[channels]] type = "log"` and watch what would be sent.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from cdp.components import ChannelSender, DeliveryResult, Message
from cdp.hookspecs import hookimpl

log = logging.getLogger("cdp.channels.log")


class LogOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    remember: int = 10_000
    """How many delivery ids to remember for dropping repeats."""


class LogChannel(ChannelSender):
    name = "log"
    Options = LogOptions

    def __init__(self, options: LogOptions) -> None:
        super().__init__(options)
        self.level = logging.getLevelNamesMapping()[options.level]
        self._seen: OrderedDict[str, None] = OrderedDict()

    def send(self, message: Message) -> DeliveryResult:
        if message.delivery_id in self._seen:
            return DeliveryResult("delivered", detail="repeat dropped")
        log.log(
            self.level,
            "delivery %s on %s to %s",
            message.delivery_id,
            message.channel,
            message.to,
            extra={"delivery_id": message.delivery_id, "content": dict(message.content)},
        )
        self._seen[message.delivery_id] = None
        if len(self._seen) > self.options.remember:
            self._seen.popitem(last=False)
        return DeliveryResult("delivered")


@hookimpl
def register_channels() -> list[type[ChannelSender]]:
    return [LogChannel]
