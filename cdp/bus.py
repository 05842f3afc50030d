"""In-process publish/subscribe, for GraphQL subscriptions: the writer thread publishes what it
committed, and each subscriber (a WebSocket's async generator) has a bounded queue of its own."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000


class Bus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[Any]]]] = (
            defaultdict(list)
        )

    def publish(self, topic: str, item: Any) -> None:
        """Safe from any thread; never blocks (a subscriber that falls behind loses items)."""
        with self._lock:
            subscribers = list(self._subscribers.get(topic, ()))
        for loop, queue in subscribers:
            with suppress(RuntimeError):  # the subscriber's loop is closed
                loop.call_soon_threadsafe(_offer, queue, item)

    async def subscribe(self, topic: str) -> AsyncIterator[Any]:
        entry = (asyncio.get_running_loop(), asyncio.Queue[Any](QUEUE_SIZE))
        with self._lock:
            self._subscribers[topic].append(entry)
        try:
            while True:
                yield await entry[1].get()
        finally:
            with self._lock:
                self._subscribers[topic].remove(entry)
                if not self._subscribers[topic]:
                    del self._subscribers[topic]

    def subscribers(self, topic: str) -> int:
        with self._lock:
            return len(self._subscribers.get(topic, ()))


def _offer(queue: asyncio.Queue[Any], item: Any) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        log.warning("a subscriber is too slow; an item was dropped")
