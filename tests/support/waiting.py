"""`wait_for(pred)`: the tests' poll until something holds (the value it returned), or an AssertionError
naming what did not happen. ecsdemo's own waits (ecsdemo.waiting) raise its errors; a test fails instead."""

from __future__ import annotations

import time


def wait_for(pred, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
