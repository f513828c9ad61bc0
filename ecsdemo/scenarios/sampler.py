"""`EcsSampler`: one ECS task's status, recorded in the background for the length of a wait.

A scenario waits for Nomad (with ecsdemo.waiting) while the sampler looks at the ECS task every second, so
a check can show that the task never left RUNNING, or exactly when it did.
"""

from __future__ import annotations

import threading
from typing import Callable


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
