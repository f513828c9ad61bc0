"""A `Check`: one verified fact, the unit that `doctor`, the scenarios and `driver check` all report.

Every check has a name, whether it holds (`ok`) and a sentence saying what was seen (`detail`). The
facts around it depend on who made it, and so does its JSON:

- a scenario check compares values: `before` and `after` (ids, ARNs, statuses) -> `scenario_json()`;
- a doctor check says what to do and whether `up` must stop: `hint`, `blocking`, and for a binary
  where it was found (`source`, `version`, `path`) -> `doctor_json()`;
- a `driver check` step is the bare fact -> `summary_json()`.

`format_value` writes a before/after value as one line, the same in the terminal and the HTML report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    before: Any = None           # scenarios: the value expected or seen before the action
    after: Any = None            # scenarios: the value seen after it
    hint: str | None = None      # doctor: what to do about a failure
    blocking: bool = True        # doctor: a failed blocking check stops `up`; a non-blocking one is a warning
    source: str | None = None    # doctor, binaries: where it comes from ("env", "PATH", "ecsdemo cache")
    version: str | None = None   # doctor, binaries: the version found
    path: str | None = None      # doctor, binaries: the executable

    def summary_json(self) -> dict[str, Any]:
        """`{"name", "ok", "detail"}`: a `driver check` step."""
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def scenario_json(self) -> dict[str, Any]:
        """The summary with the values compared (`run-scenario --json`)."""
        return {**self.summary_json(), "before": self.before, "after": self.after}

    def doctor_json(self) -> dict[str, Any]:
        """The summary with the hint, whether it blocks, and the binary's facts when known (`doctor --json`)."""
        data = {**self.summary_json(), "hint": self.hint, "blocking": self.blocking}
        for key in ("source", "version", "path"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


def format_value(v: Any) -> str:
    """A check's before/after value as one line of text (the checklist and the HTML report show it alike)."""
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k}={format_value(x)}" for k, x in v.items() if x is not None)
    if isinstance(v, list):
        return " -> ".join(format_value(x) for x in v) if all(isinstance(x, str) for x in v) else str(v)
    return str(v)
