"""The one way ecsdemo waits for something: a deadline, a pace, what is awaited, and the error to raise.

`wait_until` repeats a fetch until a condition holds. A fetch may block (a Nomad blocking query that
returns when its index moves; it is passed the seconds left) or return at once (then it is repeated every
`interval`, so a wait never spins). On timeout it raises `error` (an `EcsdemoError` subclass) with the
sentence "<what> within <timeout>s" and, from `explain(last value)`, the state seen last, e.g. "no
replacement allocation was placed within 60s; node client-1 (3f2a...) is ready, ineligible, draining".

`observe` looks at something at a steady rhythm for a fixed time (an outage's length).
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from ecsdemo.errors import EcsdemoError

T = TypeVar("T")


def wait_until(what: str, fetch: Callable[[float], T], done: Callable[[T], bool], timeout: float,
               explain: Callable[[T | None], str] = lambda _last: "", interval: float = 0.5,
               hint: str | None = None, error: type[EcsdemoError] = EcsdemoError,
               timed_out: Callable[[T], EcsdemoError] | None = None) -> T:
    """Call `fetch(max_block_seconds)` until `done(value)`; return that value.

    `what` completes the sentence "... within Ns", e.g. "no replacement allocation was placed".
    `explain(last_value)` adds the current state to the timeout message; `hint` says what to do.
    A caller whose timeout error is worded otherwise passes `timed_out(last_value)`, which builds it.
    """
    deadline = time.monotonic() + timeout
    while True:
        started = time.monotonic()
        last = fetch(max(deadline - started, 0.0))
        if done(last):
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if timed_out is not None:
                raise timed_out(last)
            state = explain(last)
            raise error(f"{what} within {timeout:g}s" + (f"; {state}" if state else ""), hint=hint)
        # A fetch that came back at once (not a blocking query, or the index moved without the change
        # awaited) is repeated after a pause.
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
