"""An in-process publish/subscribe bus for live views (server-sent events): messages, turns, state changes.

Publishing never blocks: each subscriber has a bounded queue, and a subscriber too slow to keep up loses its
oldest items and is told so with a ``dropped`` item, rather than slowing the broker down.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from typing import Any, Iterator


class Subscription:
    def __init__(self, bus: "EventBus", channels: set[str] | None, maxsize: int):
        self.bus = bus
        self.channels = channels
        self.queue: queue.Queue = queue.Queue(maxsize)
        self.dropped = 0

    def offer(self, item: dict) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.dropped += 1
            try:
                self.queue.put_nowait(item)
            except queue.Full:
                pass

    def get(self, timeout: float | None = None) -> dict | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[dict]:
        while True:
            item = self.get()
            if item is not None:
                yield item

    def close(self) -> None:
        self.bus.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventBus:
    """Channels are strings like ``messages``, ``turn:alice``, ``state``; ``history`` keeps the last items."""

    def __init__(self, history: int = 200):
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._seq = itertools.count(1)
        self._history: dict[str, deque] = {}
        self._history_len = history

    def publish(self, channel: str, data: Any) -> dict:
        item = {"seq": next(self._seq), "channel": channel, "data": data}
        with self._lock:
            self._history.setdefault(channel, deque(maxlen=self._history_len)).append(item)
            subs = [s for s in self._subs if s.channels is None or channel in s.channels]
        for s in subs:
            s.offer(item)
        return item

    def subscribe(self, channels: set[str] | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, set(channels) if channels else None, maxsize)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def recent(self, channel: str) -> list[dict]:
        with self._lock:
            return list(self._history.get(channel, ()))
