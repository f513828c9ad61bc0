"""`ecsdemo watch`: follow the demo as Nomad and ECS move, as a series of frames (plain data).

A `Frame` holds the same view `ecsdemo status` shows (`ecsdemo.status`: nodes, the demo job's
allocations, the cluster's ECS tasks, with the same keys as `status --json`) plus the events seen since
the watch began. Three sources feed it, each in its own thread so that a part that is down never holds
up the others:

- nodes: a Nomad blocking query on `GET /v1/nodes`;
- the demo job's allocations: a blocking query on `GET /v1/job/<job>/allocations`;
- ECS: every `ecs_interval` seconds ListTasks, then one batched DescribeTasks (at most 100 ARNs a call)
  of the listed tasks plus every task the watch has seen, so a task that stops is seen STOPPED.

Events are derived by comparing successive views (`diff`): allocation placed and status changes, an
allocation detached from its ECS task (it finished while the task still runs), a replacement that
recovered the same task, ECS status changes, node status/eligibility/drain and `ecs` driver health
changes, and a part becoming unreachable or reachable again. Nothing here prints.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ecsdemo import aws, status
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.nomad import NomadClient, NomadError, short, task_arn

KEEP_STOPPED_S = 60.0           # how long a stopped ECS task no allocation names stays in the view


def task_id(arn: str | None) -> str:
    """The ECS task id, the last part of its ARN (`arn:aws:ecs:<region>:<acct>:task/<cluster>/<id>`)."""
    return (arn or "-").rsplit("/", 1)[-1]


@dataclass
class Event:
    at: float                   # time.time()
    kind: str                   # placed, alloc, detached, recovered, ecs, node, driver, nomad, aws
    text: str
    subject: str = ""           # the allocation ID, task ARN or node ID the event is about

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "text": self.text, "subject": self.subject}


@dataclass
class Frame:
    at: float
    data: dict[str, Any]        # what `status.collect` returns
    events: list[Event] = field(default_factory=list)


def _live_holders(allocs: list[dict] | None) -> dict[str, str]:
    return {a["task_arn"]: a["id"] for a in allocs or [] if a["live"] and a["task_arn"]}


def diff(prev: dict | None, cur: dict, at: float) -> list[Event]:
    """The events between two views (`status.collect` shapes); `prev` None: the first view."""
    out: list[Event] = []

    def add(kind: str, text: str, subject: str = "") -> None:
        out.append(Event(at, kind, text, subject))

    prev = prev or {}
    # reachability
    for key, kind, name in (("nomad_error", "nomad", "Nomad"), ("ecs_error", "aws", "ECS")):
        before, now = prev.get(key), cur.get(key)
        if not prev:
            break                           # the first view: its errors are shown, not news
        if now and now != before:
            add(kind, f"{name} unreachable: {now}")
        elif before and not now:
            add(kind, f"{name} answers again")

    # nodes (only when Nomad answered both times)
    if not cur.get("nomad_error"):
        old_nodes = {n["id"]: n for n in prev.get("nodes") or []} if not prev.get("nomad_error") else None
        for n in cur.get("nodes") or []:
            label = n["name"] or short(n["id"], "-")
            o = (old_nodes or {}).get(n["id"])
            if old_nodes is not None and o is None and prev:
                add("node", f"node {label} joined ({n['status']})", n["id"])
                continue
            if o is None:
                continue
            if o["status"] != n["status"]:
                add("node", f"node {label} {o['status']} -> {n['status']}", n["id"])
            if o["drain"] != n["drain"]:
                add("node", f"node {label} {'draining' if n['drain'] else 'drain done'}", n["id"])
            if o["eligibility"] != n["eligibility"]:
                add("node", f"node {label} {n['eligibility']}", n["id"])
            if o["ecs_driver"] != n["ecs_driver"]:
                add("driver", f"ecs driver on {label}: {o['ecs_driver']} -> {n['ecs_driver']}", n["id"])

    # allocations
    cur_allocs = cur.get("allocations")
    prev_allocs = prev.get("allocations")
    if cur_allocs is not None and prev_allocs is not None:
        old = {a["id"]: a for a in prev_allocs}
        live = _live_holders(cur_allocs)
        for a in cur_allocs:
            o = old.get(a["id"])
            sid, arn = short(a["id"], "-"), a["task_arn"]
            # another allocation held this task first: this one was handed it (drain, lost node)
            first = next((x["id"] for x in [*prev_allocs, *cur_allocs] if arn and x["task_arn"] == arn
                          and x["id"] != a["id"]), None)
            if o is None:
                add("placed", f"alloc {sid} placed on {a['node'] or short(a['node_id'], '-')} (v{a['job_version']})"
                    + (f" with task {short(task_id(arn), '-')}" if first else ""), a["id"])
                continue
            if o["client_status"] != a["client_status"] or o["desired_status"] != a["desired_status"]:
                add("alloc", f"alloc {sid} {o['desired_status']}/{o['client_status']} -> "
                             f"{a['desired_status']}/{a['client_status']}", a["id"])
                if first and a["client_status"] == "running" and a["live"]:
                    add("recovered", f"alloc {sid} recovered task {short(task_id(arn), '-')} "
                                     f"from {short(first, '-')}", arn)
                holder = live.get(arn) if arn else None
                if a["client_status"] == "complete" and holder and holder != a["id"]:
                    add("detached", f"alloc {sid} detached from task {short(task_id(arn), '-')} (now held by "
                                    f"{short(holder, '-')})", arn)
            if arn and o["task_arn"] != arn and not first:
                add("alloc", f"alloc {sid} started task {short(task_id(arn), '-')}", arn)

    # ECS tasks
    if not cur.get("ecs_error") and not prev.get("ecs_error") and prev:
        old_tasks = {t["arn"]: t for t in prev.get("ecs_tasks") or []}
        for t in cur.get("ecs_tasks") or []:
            o = old_tasks.get(t["arn"])
            if o is None:
                add("ecs", f"ECS task {short(task_id(t['arn']), '-')} {t['last_status']} ({t['task_definition']})",
                    t["arn"])
            elif o["last_status"] != t["last_status"]:
                add("ecs", f"ECS task {short(task_id(t['arn']), '-')} {o['last_status']} -> {t['last_status']}",
                    t["arn"])
    return out


class Watcher:
    """Follows the demo; `frames()` yields a new Frame whenever a source changes (and at least every
    `tick` seconds, so times shown stay current). `refresh()` reads everything once, synchronously."""

    def __init__(self, cfg: DemoConfig, nomad: Any = None, ecs_client: Any = None, *, timeout: float = 5.0,
                 block_wait: float = 10.0, ecs_interval: float = 2.0, max_events: int = 200,
                 clock: Callable[[], float] = time.time,
                 on_view: Callable[[float, dict, list[Event]], None] | None = None):
        self.cfg = cfg
        self.timeout = timeout
        self.block_wait = block_wait
        self.ecs_interval = ecs_interval
        self.clock = clock
        self.on_view = on_view              # called (under the lock) with every new view and its events
        self._nomad_factory = (lambda: nomad) if nomad is not None else (
            lambda: NomadClient(cfg.server_address, timeout=timeout))
        self._ecs_client = ecs_client
        self.base = status.describe_demo(cfg)
        self.events: deque[Event] = deque(maxlen=max_events)
        self._cond = threading.Condition()
        self._version = 0                    # bumped whenever a source has something new
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # the latest of each source
        self._nodes: list[dict] | None = None
        self._allocs: list[dict] | None = None
        self._nodes_error: str | None = None
        self._allocs_error: str | None = None
        self._tasks: list[dict] | None = None
        self._ecs_error: str | None = None
        self._seen_arns: dict[str, float | None] = {}   # ARN -> when first seen STOPPED (None: not yet)
        self._view: dict | None = None

    # --- reading the sources -------------------------------------------------------------------------
    def _fetch_ecs(self, allocs: list[dict] | None) -> tuple[list[dict] | None, str | None]:
        """(tasks, None) or (None, why not): the listed tasks, every task seen so far and those the
        allocation stubs name, in batched DescribeTasks calls."""
        error = status.ecs_unreachable(self.cfg, self.base.get("endpoint"))
        if error is not None:
            return None, error
        with self._cond:
            # a task seen stopping is described until KEEP_STOPPED_S after it stopped (so its STOPPED shows),
            # unless an allocation still names it
            now = self.clock()
            known = [arn for arn, stopped in self._seen_arns.items()
                     if stopped is None or now - stopped < KEEP_STOPPED_S]
            known += [task_arn(a, TASK_NAME) for a in allocs or []]
        try:
            if self._ecs_client is None:
                self._ecs_client = aws.ecs_client(self.cfg)
            return status.fetch_ecs_tasks(self.cfg, self._ecs_client, also=[a for a in known if a]), None
        except EcsdemoError as exc:
            return None, exc.message

    def _set(self, **fields: Any) -> None:
        """Record what a source read and, if the view changed, the events since the last view."""
        with self._cond:
            for name, value in fields.items():
                setattr(self, f"_{name}", value)
            for t in self._tasks or []:
                arn = t.get("taskArn")
                if self._seen_arns.get(arn) is None:
                    self._seen_arns[arn] = self.clock() if t.get("lastStatus") == "STOPPED" else None
            data = dict(self.base)
            data.update(status.nomad_part(self._nodes, self._allocs, self._nodes_error or self._allocs_error))
            data.update(status.ecs_part(self._tasks, self._ecs_error, data["allocations"]))
            if data == self._view:
                return
            now = self.clock()
            news = diff(self._view, data, now)
            self.events.extend(news)
            self._view = data
            if self.on_view is not None:
                self.on_view(now, data, news)
            self._version += 1
            self._cond.notify_all()

    def refresh(self) -> Frame:
        """Read nodes, allocations and ECS once (no blocking queries) and return the frame."""
        nomad: dict[str, Any]
        try:
            api = self._nomad_factory()
            nomad = {"nodes": api.nodes(), "allocs": api.job_allocations(JOB_ID), "nodes_error": None,
                     "allocs_error": None}
        except NomadError as exc:
            nomad = {"nodes_error": exc.message, "allocs_error": exc.message}
        tasks, error = self._fetch_ecs(nomad.get("allocs"))
        self._set(**nomad, tasks=tasks, ecs_error=error)
        return self.frame()

    def frame(self) -> Frame:
        """The current view and the events seen so far."""
        with self._cond:
            return Frame(at=self.clock(), data=dict(self._view or {}), events=list(self.events))

    # --- following -----------------------------------------------------------------------------------
    def _loop(self, name: str, body: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                body()
            except Exception as exc:   # never let one source's thread die silently
                self._set(**{f"{name}_error" if name != "ecs" else "ecs_error": f"{type(exc).__name__}: {exc}"})
                self._stop.wait(1.0)

    def _follow_nomad(self, what: str) -> Callable[[], None]:
        api = self._nomad_factory()
        index = 0

        def body() -> None:
            nonlocal index
            asked = time.monotonic()
            try:
                if what == "nodes":
                    out, new_index = api.wait_nodes(index, self.block_wait)
                else:
                    out, new_index = api.wait_job_allocations(JOB_ID, index, self.block_wait)
            except NomadError as exc:
                self._set(**{f"{what}_error": exc.message})
                index = 0
                self._stop.wait(1.0)
                return
            self._set(**{what: out, f"{what}_error": None})
            if new_index < index:
                index = 0   # the index went backwards (a restarted server): start over, never block forever
            else:
                if new_index == index and time.monotonic() - asked < 0.1:
                    self._stop.wait(0.2)      # an answer at once with nothing new: do not spin
                index = new_index
        return body

    def _follow_ecs(self) -> None:
        with self._cond:
            allocs = self._allocs
        tasks, error = self._fetch_ecs(allocs)
        self._set(**({"tasks": tasks} if tasks is not None else {}), ecs_error=error)
        self._stop.wait(self.ecs_interval)

    def start(self) -> "Watcher":
        if self._threads:
            return self
        self.refresh()          # the baseline: events are what changes after it
        for name, body in (("nodes", self._follow_nomad("nodes")), ("allocs", self._follow_nomad("allocs")),
                           ("ecs", self._follow_ecs)):
            t = threading.Thread(target=self._loop, args=(name, body), name=f"ecsdemo-watch-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait_change(self, since: int, timeout: float) -> int:
        """Wait until a source has news after version `since` (or `timeout`); returns the new version."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != since or self._stop.is_set(), timeout=timeout)
            return self._version

    def frames(self, tick: float = 1.0) -> Iterator[Frame]:
        """Frames as things change (started on first use); stops when `close()` is called."""
        self.start()
        version = -1
        while not self._stop.is_set():
            version = self.wait_change(version, tick)
            yield self.frame()

    def close(self, join_timeout: float = 0.5) -> None:
        """Stop following. A thread inside a blocking query is a daemon and ends with its query."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(join_timeout)

    def __enter__(self) -> "Watcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
