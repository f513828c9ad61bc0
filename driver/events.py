"""The task event bus: task lifecycle code publishes, each TaskEvents stream subscribes.

`publish` is synchronous and never blocks (callable from any thread); each subscriber has a bounded
queue and, when it overflows, loses its oldest events. Events published while nobody is subscribed are
dropped: Nomad keeps one TaskEvents stream open per plugin instance, so in practice there is a reader.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator


@dataclass
class TaskEvent:
    task_id: str
    alloc_id: str
    task_name: str
    message: str
    annotations: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class _Subscriber:
    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int):
        self.loop = loop
        self.queue: asyncio.Queue[TaskEvent] = asyncio.Queue(maxsize)

    def put(self, event: TaskEvent) -> None:  # runs on the subscriber's loop
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(event)


class EventBus:
    def __init__(self, maxsize: int = 1000):
        self._maxsize = maxsize
        self._subs: list[_Subscriber] = []
        self._lock = threading.Lock()

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, event: TaskEvent) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is sub.loop:
                sub.put(event)
            else:
                try:
                    sub.loop.call_soon_threadsafe(sub.put, event)
                except RuntimeError:  # that loop is closed: the subscriber is gone
                    pass

    async def subscribe(self) -> AsyncIterator[TaskEvent]:
        """Yield events published from now on, until the consumer stops iterating (or is cancelled)."""
        sub = _Subscriber(asyncio.get_running_loop(), self._maxsize)
        with self._lock:
            self._subs.append(sub)
        try:
            while True:
                yield await sub.queue.get()
        finally:
            with self._lock:
                self._subs.remove(sub)
