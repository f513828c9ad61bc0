"""What a scenario run produces: checks with before/after values, the steps taken, and one report.

A `ScenarioResult` is the record of one scenario (drain, undrain, lost-node, client-restart, task-exit,
outage, update, stop): every check that was made (an `ecsdemo.check.Check`), in order, each with what was
expected, what was seen before and after, and whether it passed. `ScenarioAbort` stops a scenario, as a
failed precondition or a failure part-way. `Report` holds one or more results (`all` gives one per
scenario) and decides the exit code. Nothing here talks to Nomad or AWS; the scenario modules fill these in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ecsdemo.check import Check
from ecsdemo.errors import EcsdemoError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1        # a check failed, or Nomad/ECS did not do something within the timeout
EXIT_PRECONDITION = 3        # the scenario could not start: nothing was changed


class ScenarioAbort(EcsdemoError):
    """Stops a scenario: a precondition is not met, or Nomad/ECS did not react in time.

    `precondition=True` means nothing was changed yet (exit code 3); otherwise the scenario failed
    part-way (exit code 1). The message names what did not happen.
    """

    def __init__(self, message: str, hint: str | None = None, precondition: bool = False):
        super().__init__(message, hint=hint, exit_code=EXIT_PRECONDITION if precondition else EXIT_CHECK_FAILED)
        self.precondition = precondition


@dataclass
class ScenarioResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    precondition_failed: bool = False
    skipped: str | None = None          # why the scenario was not run (e.g. an earlier one failed)
    not_applicable: bool = False        # skipped because it cannot apply here (outage with --aws): not a failure
    started: float = field(default_factory=time.time)
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.skipped is None or self.not_applicable) and self.error is None and all(c.ok for c in self.checks)

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return "skipped"
        if self.precondition_failed:
            return "not-run"
        return "passed" if self.ok else "failed"

    def check(self, name: str, ok: bool, detail: str = "", before: Any = None, after: Any = None) -> Check:
        c = Check(name=name, ok=bool(ok), detail=detail, before=before, after=after)
        self.checks.append(c)
        return c

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def step(self, text: str) -> None:
        self.steps.append({"at": round(time.time() - self.started, 3), "text": text})

    def fail(self, exc: ScenarioAbort) -> None:
        self.error = exc.message
        self.hint = exc.hint
        self.precondition_failed = exc.precondition

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name, "status": self.status, "ok": self.ok, "error": self.error, "hint": self.hint,
            "skipped": self.skipped, "duration_s": round(self.duration_s, 3),
            "checks": [c.scenario_json() for c in self.checks], "steps": list(self.steps),
        }


@dataclass
class Report:
    """The outcome of `run-scenario`: one result per scenario run (or skipped)."""

    scenario: str
    results: list[ScenarioResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.ok:
            return EXIT_OK
        ran = [r for r in self.results if r.skipped is None]
        if ran and all(r.precondition_failed for r in ran):
            return EXIT_PRECONDITION
        return EXIT_CHECK_FAILED

    def failed_checks(self) -> list[tuple[str, Check]]:
        return [(r.name, c) for r in self.results for c in r.checks if not c.ok]

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "ok": self.ok, "exit_code": self.exit_code,
                "results": [r.to_json() for r in self.results]}
