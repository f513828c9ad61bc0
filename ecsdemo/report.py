"""`run-scenario ... --report FILE`: record what Nomad and ECS did during a run and write it as one HTML file.

`Recorder` follows the demo with a `Watcher` (its threads sample every change of nodes, allocations
and ECS tasks in the background) while the scenarios run; nothing in the scenarios changes for it. The
moments the scenarios acted (drain, kill, restart, update, stop ...) come from their step records
(`ScenarioResult.started` + each step's `at`).

`build_timeline` turns the samples into lanes and bars; `render_html` writes a self-contained page: the
checklist, then an inline SVG timeline with one lane per node (a bar per allocation it ran), one bar per
ECS task labelled with its ARN (segments show which allocation held it), and the moments marked; then
the moments and events as tables. No scripts, no external references: it opens offline.
"""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecsdemo.check import format_value
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic
from ecsdemo.nomad import TERMINAL_CLIENT_STATUSES, short
from ecsdemo.watch import Event, Watcher, task_id

# what a scenario step did, from its text (steps are written by ecsdemo.scenarios; waits are not moments)
MOMENT_KINDS = (
    ("undrain", re.compile(r"^(disable the drain|re-enable scheduling)", re.I)),
    ("drain", re.compile(r"^drain\b", re.I)),
    ("kill", re.compile(r"^(kill\b|stop ecs task)", re.I)),      # a client agent, or the ECS task outside Nomad
    ("restart", re.compile(r"^restart\b", re.I)),
    ("update", re.compile(r"^register the job", re.I)),        # (Terraform's apply before it only prepares)
    ("stop", re.compile(r"^stop\b", re.I)),
    ("outage", re.compile(r"^pause\b", re.I)),
    ("resume", re.compile(r"^the local aws endpoint answers again", re.I)),
)


def moment_kind(text: str) -> str | None:
    for kind, pattern in MOMENT_KINDS:
        if pattern.search(text):
            return kind
    return None


# --- recording -----------------------------------------------------------------------------------
@dataclass
class Sample:
    at: float
    data: dict[str, Any]


class Recorder:
    """Samples every change of the demo's view in the background between `start()` and `stop()`."""

    def __init__(self, cfg: DemoConfig, watcher: Watcher | None = None, **watch_options: Any):
        self.samples: list[Sample] = []
        self.events: list[Event] = []
        self.started: float | None = None
        self.stopped: float | None = None
        self.watcher = watcher or Watcher(cfg, **{"block_wait": 5.0, "ecs_interval": 1.0, **watch_options})
        self.watcher.on_view = self._on_view

    def _on_view(self, at: float, data: dict, news: list[Event]) -> None:
        self.samples.append(Sample(at, data))
        self.events.extend(news)

    def start(self) -> "Recorder":
        self.started = time.time()
        self.watcher.start()
        return self

    def stop(self) -> None:
        self.watcher.refresh()       # the state at the end, whatever the threads last saw
        self.watcher.close()
        self.stopped = time.time()

    def __enter__(self) -> "Recorder":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- the timeline --------------------------------------------------------------------------------
@dataclass
class Segment:
    start: float
    end: float
    label: str                  # a client status, an ECS status, or the holding allocation's id


@dataclass
class Bar:
    key: str                    # allocation id or task ARN
    lane: str                   # node name (allocations) or the ARN (ECS tasks)
    start: float
    end: float
    label: str
    segments: list[Segment] = field(default_factory=list)
    holders: list[Segment] = field(default_factory=list)     # ECS tasks: which allocation held it


@dataclass
class Moment:
    at: float
    kind: str
    scenario: str
    text: str


@dataclass
class Timeline:
    start: float
    end: float
    lanes: list[str]
    allocs: list[Bar]
    tasks: list[Bar]
    moments: list[Moment]
    events: list[Event]


def _segments(points: list[tuple[float, str]], end: float) -> list[Segment]:
    out: list[Segment] = []
    for at, label in points:
        if out and out[-1].label == label:
            continue
        if out:
            out[-1].end = at
        out.append(Segment(at, end, label))
    return out


def build_timeline(samples: list[Sample], results: list[Any], events: list[Event] | None = None,
                   start: float | None = None, end: float | None = None) -> Timeline:
    """Lanes, bars and moments from the recorded samples and the scenario results' steps."""
    moments = [Moment(r.started + s["at"], kind, r.name, s["text"])
               for r in results for s in r.steps if (kind := moment_kind(s["text"]))]
    times = [s.at for s in samples] + [m.at for m in moments]
    times += [r.started + r.duration_s for r in results if r.skipped is None]
    t0 = min([t for t in (start, *times) if t is not None], default=time.time())
    t1 = max([t for t in (end, *times) if t is not None] + [t0 + 1.0])

    alloc_points: dict[str, list[tuple[float, str]]] = {}
    alloc_info: dict[str, dict] = {}
    task_points: dict[str, list[tuple[float, str]]] = {}
    holder_points: dict[str, list[tuple[float, str]]] = {}
    lanes: dict[str, None] = {}
    for s in samples:
        for n in s.data.get("nodes") or []:
            lanes.setdefault(n["name"] or short(n["id"], "-"), None)
        for a in s.data.get("allocations") or []:
            alloc_info[a["id"]] = a
            lanes.setdefault(a["node"] or short(a["node_id"], "-"), None)
            alloc_points.setdefault(a["id"], []).append((s.at, a["client_status"] or "?"))
        for t in s.data.get("ecs_tasks") or []:
            task_points.setdefault(t["arn"], []).append((s.at, t["last_status"] or "?"))
            holder_points.setdefault(t["arn"], []).append((s.at, t["live_owner"] or ""))

    allocs = []
    for alloc_id, points in alloc_points.items():
        a = alloc_info[alloc_id]
        if all(label in TERMINAL_CLIENT_STATUSES for _, label in points):
            continue                # it finished before the recording began
        segs = _segments(points, t1)
        done = next((g.start for g in segs if g.label in TERMINAL_CLIENT_STATUSES), None)
        # a finished allocation's bar ends when it finished; its last (terminal) segment is not drawn
        segs = [g for g in segs if g.label not in TERMINAL_CLIENT_STATUSES] or segs[:1]
        stop_at = done if done is not None else t1
        for g in segs:
            g.end = min(g.end, stop_at)
        allocs.append(Bar(alloc_id, a["node"] or short(a["node_id"], "-"), segs[0].start, max(stop_at, segs[0].start),
                          f"{short(alloc_id, '-')} v{a['job_version']} {a['client_status']}", segs))
    tasks = []
    for arn, points in task_points.items():
        if all(label == "STOPPED" for _, label in points):
            continue
        segs = _segments(points, t1)
        stopped = next((g.start for g in segs if g.label == "STOPPED"), None)
        end_at = stopped if stopped is not None else t1
        segs = [g for g in segs if g.label != "STOPPED"] or segs[:1]
        holders = [g for g in _segments(holder_points[arn], t1) if g.label and g.start < end_at]
        for g in [*segs, *holders]:
            g.end = min(g.end, end_at)
        tasks.append(Bar(arn, arn, segs[0].start, max(end_at, segs[0].start),
                         f"{arn} {points[-1][1]}", segs, holders))
    return Timeline(t0, t1, list(lanes), allocs, tasks, sorted(moments, key=lambda m: m.at), list(events or []))


def holders_at(tl: Timeline, at: float) -> str:
    """Which allocation held each ECS task that existed at `at` ("<task id>: <alloc>" or "none")."""
    out = []
    for b in tl.tasks:
        if b.start <= at <= b.end:
            h = next((h.label for h in b.holders if h.start <= at < h.end), None)
            out.append(f"{task_id(b.key)}: {short(h, '-') if h else 'no allocation'}")
    return "; ".join(out) or "no ECS task"


# --- HTML ----------------------------------------------------------------------------------------
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
.passed{color:#1a7f37}.failed,.not-run{color:#cf222e}.skipped{color:#9a6700}
table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:left;vertical-align:top}
th{border-bottom:1px solid #ccc}code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.check-ok{color:#1a7f37}.check-bad{color:#cf222e}.values{color:#555}
svg text{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
svg .lane-label{font-weight:bold}svg .axis{stroke:#999}svg .grid{stroke:#eee}
svg .alloc.running{fill:#2da44e}svg .alloc.pending{fill:#d4a72c}svg .alloc.lost{fill:#cf222e}
svg .alloc{fill:#8c959f}svg .seg-running{fill:#2da44e}svg .seg-pending{fill:#d4a72c}svg .seg-lost{fill:#cf222e}
svg .ecs-task{fill:#ddf4ff;stroke:#0969da}svg .holder{fill:#0969da;opacity:.8}svg .holder-label{font-size:10px}
svg .moment{stroke:#cf222e;stroke-dasharray:4 3}svg .moment-label{fill:#cf222e}
"""


def _e(value: Any) -> str:
    return html.escape("-" if value is None else str(value), quote=True)


def _checklist(report: Any) -> str:
    out = []
    for res in report.results:
        out.append(f'<h3>{_e(res.name)}: <span class="{_e(res.status)}">{_e(res.status)}</span> '
                   f'<small>({res.duration_s:.1f}s)</small></h3>')
        if res.skipped:
            out.append(f"<p>{_e(res.skipped)}</p>")
            continue
        rows = []
        for c in res.checks:
            mark = '<span class="check-ok">&#10003;</span>' if c.ok else '<span class="check-bad">&#10007;</span>'
            values = ""
            if c.before is not None or c.after is not None:
                values = (f'<div class="values mono">before: {_e(format_value(c.before))}<br>'
                          f'after: {_e(format_value(c.after))}</div>')
            rows.append(f'<tr class="check" data-ok="{str(c.ok).lower()}"><td>{mark}</td><td>{_e(c.name)}</td>'
                        f"<td>{_e(c.detail)}{values}</td></tr>")
        out.append("<table>" + "".join(rows) + "</table>")
        if res.error:
            out.append(f'<p class="failed">error: {_e(res.error)}' + (f"<br>hint: {_e(res.hint)}" if res.hint else "")
                       + "</p>")
    return "\n".join(out)


def _svg(tl: Timeline) -> str:
    left, width, lane_h, top = 170, 980, 34, 54
    span = max(tl.end - tl.start, 1e-6)

    def x(t: float) -> float:
        return round(left + (t - tl.start) / span * width, 1)

    rows: list[tuple[str, str]] = [("node", lane) for lane in tl.lanes] + [("task", b.key) for b in tl.tasks]
    height = top + lane_h * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{left + width + 20}" '
             f'height="{height}" viewBox="0 0 {left + width + 20} {height}">']
    # time axis
    step = next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600) if span / s <= 12), 1200)
    k = 0
    while k * step <= span:
        xx = x(tl.start + k * step)
        parts.append(f'<line class="grid" x1="{xx}" y1="{top - 6}" x2="{xx}" y2="{height - 24}"/>')
        parts.append(f'<text x="{xx}" y="{height - 10}" text-anchor="middle">+{k * step}s</text>')
        k += 1
    y_of = {}
    for i, (kind, key) in enumerate(rows):
        y = top + i * lane_h
        y_of[(kind, key)] = y
        label = key if kind == "node" else "ECS " + task_id(key)
        parts.append(f'<text class="lane-label" x="4" y="{y + (20 if kind == "node" else 26)}">{_e(label[:22])}</text>')
        parts.append(f'<line class="axis" x1="{left}" y1="{y + lane_h - 2}" x2="{left + width}" '
                     f'y2="{y + lane_h - 2}"/>')
    for b in tl.allocs:
        y = y_of[("node", b.lane)]
        parts.append(f'<g><title>{_e(b.key)} on {_e(b.lane)}: {_e(b.label)}</title>'
                     f'<rect class="alloc {_e(b.segments[-1].label)}" data-alloc="{_e(b.key)}" '
                     f'data-node="{_e(b.lane)}" '
                     f'x="{x(b.start)}" y="{y + 6}" width="{max(x(b.end) - x(b.start), 2)}" height="18" rx="3"/>')
        for g in b.segments:
            parts.append(f'<rect class="seg-{_e(g.label)}" x="{x(g.start)}" y="{y + 20}" '
                         f'width="{max(x(g.end) - x(g.start), 1)}" height="4"/>')
        parts.append(f'<text x="{x(b.start) + 4}" y="{y + 19}" fill="#fff">{_e(short(b.key, "-"))}</text></g>')
    for b in tl.tasks:
        y = y_of[("task", b.key)]
        # the ARN on its own line across the lane (it is longer than most bars), the bar below it
        parts.append(f'<g><title>{_e(b.label)}</title>'
                     f'<text class="arn" x="{min(x(b.start), left + width - 700)}" y="{y + 11}">{_e(b.key)}</text>'
                     f'<rect class="ecs-task" data-arn="{_e(b.key)}" x="{x(b.start)}" y="{y + 14}" '
                     f'width="{max(x(b.end) - x(b.start), 2)}" height="16" rx="3"/>')
        for h in b.holders:
            parts.append(f'<rect class="holder" data-arn="{_e(b.key)}" data-alloc="{_e(h.label)}" '
                         f'x="{x(h.start)}" y="{y + 16}" width="{max(x(h.end) - x(h.start), 1)}" height="12">'
                         f'<title>held by allocation {_e(h.label)}</title></rect>')
            parts.append(f'<text class="holder-label" x="{x(h.start) + 3}" y="{y + 26}" fill="#fff">'
                         f'{_e(short(h.label, "-"))}</text>')
        parts.append("</g>")
    for i, m in enumerate(tl.moments):
        xx = x(m.at)
        parts.append(f'<g><title>{_e(m.scenario)}: {_e(m.text)}</title>'
                     f'<line class="moment" data-kind="{_e(m.kind)}" data-at="{m.at:.3f}" '
                     f'x1="{xx}" y1="{top - 14 - 12 * (i % 3)}" '
                     f'x2="{xx}" y2="{height - 24}"/>'
                     f'<text class="moment-label" x="{xx + 2}" y="{top - 16 - 12 * (i % 3)}">{_e(m.kind)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(report: Any, tl: Timeline, title: str | None = None) -> str:
    clock = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 10)}"  # noqa: E731
    verdict = "all checks passed" if report.ok else "some checks failed"
    moments = "".join(f'<tr class="moment-row" data-kind="{_e(m.kind)}"><td class="mono">{clock(m.at)}</td>'
                      f"<td>{_e(m.scenario)}</td><td>{_e(m.kind)}</td><td>{_e(m.text)}</td>"
                      f'<td class="mono">{_e(holders_at(tl, m.at))}</td></tr>' for m in tl.moments)
    events = "".join(f'<tr><td class="mono">{clock(e.at)}</td><td>{_e(e.kind)}</td>'
                     f'<td class="mono">{_e(e.text)}</td></tr>' for e in tl.events)
    held = "".join(f'<tr><td class="mono">{_e(b.key)}</td><td class="mono">'
                   + ", ".join(f"{_e(short(h.label, '-'))} {clock(h.start)}-{clock(h.end)}" for h in b.holders)
                   + "</td></tr>" for b in tl.tasks)
    title = title or f"ecsdemo run-scenario {report.scenario}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{CSS}</style></head>
<body>
<h1>{_e(title)}: <span class="{'passed' if report.ok else 'failed'}">{verdict}</span></h1>
<p>{clock(tl.start)} to {clock(tl.end)} ({tl.end - tl.start:.1f}s); exit code {report.exit_code}</p>
<h2>Checklist</h2>
{_checklist(report)}
<h2>Timeline</h2>
<p>One lane per Nomad node with a bar for each allocation it ran (green running, yellow pending, red lost;
the bar ends when the allocation finished); one bar per ECS task with its ARN, its blue segments showing which
allocation held it; red dashed lines mark what the scenarios did.</p>
{_svg(tl)}
<h2>Which allocation held each ECS task</h2>
<table><tr><th>ECS task</th><th>held by</th></tr>{held}</table>
<h2>Moments</h2>
<table><tr><th>time</th><th>scenario</th><th>kind</th><th>step</th><th>ECS task: held by</th></tr>{moments}</table>
<h2>Events</h2>
<table><tr><th>time</th><th>kind</th><th>what</th></tr>{events}</table>
</body></html>
"""


def check_path(path: Path) -> Path:
    """Refuse a report path that cannot be written, before anything runs."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise EcsdemoError(f"--report {path} is a directory", hint="name a file, e.g. --report run.html", exit_code=2)
    if not path.parent.is_dir():
        raise EcsdemoError(f"--report {path}: the directory {path.parent} does not exist", exit_code=2)
    return path


def write(path: Path, report: Any, recorder: Recorder) -> Path:
    """Write the HTML report of `report` with the recorder's timeline; returns the path."""
    tl = build_timeline(recorder.samples, report.results, recorder.events, recorder.started, recorder.stopped)
    path = check_path(path)
    try:
        # 0o644 as a plain write gives it under the usual umask: a report is meant to be opened and shared
        write_atomic(path, render_html(report, tl), mode=0o644)
    except OSError as exc:
        raise EcsdemoError(f"cannot write the report {path}: {exc.strerror or exc}") from None
    return path
