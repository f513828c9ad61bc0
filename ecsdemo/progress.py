"""How workflows report progress without knowing about the terminal.

Workflows (up, teardown, scenarios, infra) take a `Reporter`. The CLI passes a Rich-backed one
(`ecsdemo.console.RichReporter`); tests pass a `RecordingReporter` and assert on what was reported.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Reporter(Protocol):
    def step(self, title: str) -> contextlib.AbstractContextManager[None]:
        """A step of a slow operation: shown while it runs, marked done or failed when it ends."""

    def info(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...


class RecordingReporter:
    """Keeps every event as (kind, text); for tests and for --json output."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.events.append(("step", title))
        try:
            yield
        except BaseException:
            self.events.append(("failed", title))
            raise
        self.events.append(("done", title))

    def info(self, text: str) -> None:
        self.events.append(("info", text))

    def warn(self, text: str) -> None:
        self.events.append(("warn", text))

    def texts(self, kind: str | None = None) -> list[str]:
        return [t for k, t in self.events if kind is None or k == kind]
