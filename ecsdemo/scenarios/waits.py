"""Waiting for Nomad and ECS to do something, with an overall timeout and a message naming what did not happen.

`wait_until` repeats a fetch until a condition holds. A fetch may block (a Nomad blocking query that
returns when its index moves) or return at once (then it is repeated every `interval`). On timeout it raises
`ScenarioAbort` with a message built from the last value seen, e.g. "no replacement allocation was placed
within 60s; node client-1 (3f2a…) is ready, ineligible, draining".

`observe` looks at something at a steady rhythm for a fixed time (an outage's length).
`EcsSampler` records an ECS task's status in the background for the length of a wait, so a scenario can
show that the task never left RUNNING (or exactly when it did).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

from ecsdemo.scenarios.model import ScenarioAbort

T = TypeVar("T")


def wait_until(what: str, fetch: Callable[[float], T], done: Callable[[T], bool], timeout: float,
               explain: Callable[[T | None], str], interval: float = 0.5, hint: str | None = None) -> T:
    """Call `fetch(max_block_seconds)` until `done(value)`; return that value.

    `what` completes the sentence "... within Ns", e.g. "no replacement allocation was placed".
    `explain(last_value)` adds the current state to the timeout message.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        remaining = deadline - time.monotonic()
        started = time.monotonic()
        last = fetch(max(remaining, 0.0))
        if done(last):
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            state = explain(last)
            raise ScenarioAbort(f"{what} within {timeout:g}s" + (f"; {state}" if state else ""), hint=hint)
        # A fetch that came back at once (not a blocking query, or the index moved without the change we
        # want) is repeated after a pause, so a wait never spins.
        if time.monotonic() - started < interval:
            time.sleep(min(interval, remaining))


def observe(seconds: float, interval: float, look: Callable[[], object]) -> int:
    """Call `look()` every `interval` seconds for `seconds` (at least once); returns how many times."""
    deadline = time.monotonic() + seconds
    count = 0
    while True:
        look()
        count += 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return count
        time.sleep(min(interval, remaining))


class EcsSampler:
    """Samples one ECS task's lastStatus every `interval` seconds on a background thread.

    Use as a context manager around a wait; `statuses` is every status seen, in order (errors are kept
    as "ERROR: ..." entries so a gap is visible, not hidden).
    """

    def __init__(self, describe: Callable[[str], str | None], arn: str, interval: float = 1.0):
        self._describe = describe
        self.arn = arn
        self.interval = interval
        self.statuses: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        try:
            status = self._describe(self.arn) or "MISSING"
        except Exception as exc:  # an endpoint hiccup is recorded, not fatal: the check shows it
            status = f"ERROR: {type(exc).__name__}"
        self.statuses.append(status)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "EcsSampler":
        self._thread = threading.Thread(target=self._run, name="ecs-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.sample()  # one last look after the wait
