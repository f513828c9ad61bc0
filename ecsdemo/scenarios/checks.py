"""The pure logic of the scenarios: reading Nomad and ECS snapshots and judging them.

Inputs are the JSON Nomad serves (allocation stubs or full allocations, node stubs or nodes) and the
task dicts ECS's DescribeTasks returns; outputs are plain values or `Check`s. No I/O, so every rule is
unit-tested on real-shaped data.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from ecsdemo.check import Check
from ecsdemo.config import DRIVER_NAME
from ecsdemo.nomad import TERMINAL_CLIENT_STATUSES, node_draining, node_ecs_driver, short, task_arn

STOP_REASON_PREFIX = "Stopped by Nomad"


# --- allocations -----------------------------------------------------------------------------------
def is_running(alloc: dict) -> bool:
    return alloc.get("DesiredStatus") == "run" and alloc.get("ClientStatus") == "running"


def running_allocations(allocs: Iterable[dict]) -> list[dict]:
    return [a for a in allocs if is_running(a)]


def find_replacement(old: dict, allocs: Iterable[dict]) -> dict | None:
    """The allocation that replaces `old`: its `PreviousAllocation` names `old` (full allocations carry it;
    stubs do not on Nomad 1.1-1.5), or it has the same Name, is wanted running, and was created later."""
    old_id = old.get("ID")
    candidates = [a for a in allocs if a.get("ID") != old_id]
    for a in candidates:
        if a.get("PreviousAllocation") == old_id:
            return a
    same = [a for a in candidates if a.get("Name") == old.get("Name") and a.get("DesiredStatus") == "run"
            and a.get("CreateIndex", 0) >= old.get("CreateIndex", 0)]
    same.sort(key=lambda a: a.get("CreateIndex", 0), reverse=True)
    return same[0] if same else None


def job_version(alloc: dict) -> int:
    """The job version an allocation runs: `JobVersion` in stubs, `Job.Version` in full allocations
    (whose zero-valued fields Nomad omits)."""
    if "JobVersion" in alloc:
        return int(alloc["JobVersion"] or 0)
    return int((alloc.get("Job") or {}).get("Version") or 0)


def alloc_summary(alloc: dict | None) -> dict | None:
    """The fields a report shows for an allocation."""
    if alloc is None:
        return None
    return {"id": alloc.get("ID"), "node": alloc.get("NodeName") or short(alloc.get("NodeID")),
            "node_id": alloc.get("NodeID"), "desired": alloc.get("DesiredStatus"),
            "client": alloc.get("ClientStatus"), "job_version": job_version(alloc)}


def task_state(alloc: dict, task: str) -> dict:
    return ((alloc.get("TaskStates") or {}).get(task)) or {}


# --- nodes -----------------------------------------------------------------------------------------
def ecs_driver_healthy(node: dict, driver: str = DRIVER_NAME) -> bool:
    detected, healthy, _ = node_ecs_driver(node, driver)
    return detected and healthy


def is_schedulable(node: dict, driver: str = DRIVER_NAME) -> bool:
    """Ready, eligible, not draining, with a healthy `driver`: a replacement can be placed here."""
    return (node.get("Status") == "ready" and node.get("SchedulingEligibility") == "eligible"
            and not node_draining(node) and ecs_driver_healthy(node, driver))


def node_summary(node: dict | None) -> dict | None:
    if node is None:
        return None
    return {"id": node.get("ID"), "name": node.get("Name"), "status": node.get("Status"),
            "eligibility": node.get("SchedulingEligibility"), "drain": node_draining(node)}


def node_label(node: dict | None, node_id: str | None = None) -> str:
    if node is None:
        return short(node_id)
    return f"{node.get('Name') or '?'} ({short(node.get('ID'))})"


# --- ECS tasks -------------------------------------------------------------------------------------
def ecs_summary(task: dict | None) -> dict | None:
    if task is None:
        return None
    out = {"arn": task.get("taskArn"), "status": task.get("lastStatus"),
           "task_definition": task.get("taskDefinitionArn")}
    if task.get("stoppedReason"):
        out["stopped_reason"] = task["stoppedReason"]
    return out


def running_tasks(tasks: Iterable[dict]) -> list[dict]:
    return [t for t in tasks if t.get("lastStatus") == "RUNNING"]


def revision_of(task_definition_arn: str | None) -> str | None:
    """`family:revision` of a task definition ARN (or of a `family:revision` string)."""
    if not task_definition_arn:
        return None
    return task_definition_arn.rsplit("/", 1)[-1]


def collapse(statuses: Iterable[str]) -> list[str]:
    """Consecutive duplicates folded: RUNNING RUNNING STOPPED -> RUNNING STOPPED."""
    out: list[str] = []
    for s in statuses:
        if not out or out[-1] != s:
            out.append(s)
    return out


# --- checks ----------------------------------------------------------------------------------------
def check_arn_unchanged(before: str | None, after: str | None, source: str) -> Check:
    ok = bool(before) and before == after
    if ok:
        detail = "the same ECS task"
    elif not after:
        detail = f"no ECS task ARN found ({source})"
    else:
        detail = f"the ECS task changed ({source}): a new task was started instead of re-attaching"
    return Check(f"ECS task ARN unchanged ({source})", ok, detail, before, after)


def check_one_running(tasks: list[dict], expected_arn: str | None, job_id: str) -> Check:
    """Exactly one ECS task of the job is RUNNING (and it is `expected_arn` when given)."""
    running = running_tasks(tasks)
    arns = [t.get("taskArn") for t in running]
    ok = len(running) == 1 and (expected_arn is None or arns[0] == expected_arn)
    if len(running) == 1 and ok:
        detail = f"one RUNNING ECS task of job {job_id}"
    elif len(running) == 1:
        detail = f"the RUNNING ECS task is {arns[0]}, expected {expected_arn}"
    elif not running:
        detail = f"no ECS task of job {job_id} is RUNNING"
    else:
        detail = f"{len(running)} ECS tasks of job {job_id} are RUNNING: a second task appeared"
    return Check("exactly one ECS task of the job RUNNING", ok, detail, expected_arn, arns)


def check_never_left_running(samples: list[str], arn: str | None) -> Check:
    """`samples` are the statuses DescribeTasks gave for `arn` throughout the wait, in order."""
    seen = collapse(samples)
    ok = bool(samples) and seen == ["RUNNING"]
    if not samples:
        detail = "the ECS task was never sampled"
    elif ok:
        detail = f"RUNNING in all {len(samples)} samples taken during the wait"
    else:
        detail = f"statuses seen during the wait: {' -> '.join(seen)}"
    return Check("ECS task never left RUNNING", ok, detail, "RUNNING", seen)


def _check_stopped(name: str, task: dict | None, arn: str, reason_ok: Callable[[str], bool],
                   wrong: Callable[[str], str], right: Callable[[str], str]) -> Check:
    """The ECS task is STOPPED with a stoppedReason that `reason_ok` accepts; `wrong(reason)` and
    `right(reason)` say what was seen when it stopped for another reason or for the expected one."""
    status = (task or {}).get("lastStatus")
    reason = (task or {}).get("stoppedReason") or ""
    ok = status == "STOPPED" and reason_ok(reason)
    if task is None:
        detail = f"ECS does not know task {arn}"
    elif status != "STOPPED":
        detail = f"task {arn} is {status}, not STOPPED"
    else:
        detail = right(reason) if ok else wrong(reason)
    return Check(name, ok, detail, "RUNNING", {"status": status, "reason": reason})


def check_stopped_by_nomad(task: dict | None, arn: str, alloc_id: str | None = None) -> Check:
    """The ECS task is STOPPED and the driver stopped it (its reason starts with "Stopped by Nomad")."""
    def right(reason: str) -> str:
        names = f" (names allocation {short(alloc_id)})" if alloc_id and short(alloc_id) in reason else ""
        return f"STOPPED: {reason!r}{names}"
    return _check_stopped("old ECS task STOPPED by the driver", task, arn,
                          lambda reason: reason.startswith(STOP_REASON_PREFIX),
                          lambda reason: f"stopped, but not by the driver: reason {reason!r}", right)


def check_replaced_on_other_node(old: dict, new: dict | None) -> Check:
    before = alloc_summary(old)
    after = alloc_summary(new)
    ok = new is not None and is_running(new) and new.get("NodeID") != old.get("NodeID")
    if new is None:
        detail = "no replacement allocation"
    elif not ok and new.get("NodeID") == old.get("NodeID"):
        detail = "the replacement is on the same node"
    elif not ok:
        detail = f"the replacement is {new.get('ClientStatus')}"
    else:
        detail = (f"allocation {short(old.get('ID'))} on {before['node']} replaced by "
                  f"{short(new.get('ID'))} on {after['node']}")
    return Check("replacement allocation running on another node", ok, detail, before, after)


def job_tasks(tasks: Iterable[dict], job_id: str) -> list[dict]:
    """ECS tasks the driver started for `job_id` (tag `nomad:job`)."""
    out = []
    for t in tasks:
        tags = {x.get("key"): x.get("value") for x in (t.get("tags") or [])}
        if tags.get("nomad:job") == job_id:
            out.append(t)
    return out


def describe_wait_state(alloc: dict | None, node: dict | None) -> str:
    """A short account of where things stand, for a timeout message."""
    parts = []
    if node is not None:
        parts.append(f"node {node_label(node)} is {node.get('Status')}, {node.get('SchedulingEligibility')}"
                     + (", draining" if node_draining(node) else ""))
    if alloc is not None:
        parts.append(f"allocation {short(alloc.get('ID'))} is {alloc.get('DesiredStatus')}/{alloc.get('ClientStatus')}"
                     + (f" ({alloc['DesiredDescription']})" if alloc.get("DesiredDescription") else ""))
    return "; ".join(parts)


def job_task_definition(job: dict, task: str) -> str | None:
    """The `task_definition` in the job's driver config for `task` (HCL2 blocks come back as lists)."""
    for group in job.get("TaskGroups") or []:
        for t in group.get("Tasks") or []:
            if t.get("Name") == task:
                return _find_key(t.get("Config") or {}, "task_definition")
    return None


def _find_key(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for v in value:
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


# --- task events: a task's exit and restarts (client-restart, task-exit, outage) ------------------------
EXIT_EVENTS = ("Terminated", "Restarting", "Not Restarting", "Killing", "Killed", "Driver Failure")


def task_events(alloc: dict | None, task: str) -> list[dict]:
    return list(task_state(alloc or {}, task).get("Events") or [])


def last_event_time(alloc: dict | None, task: str) -> int:
    """The Time (ns, Nomad's clock) of the task's newest event; 0 when it has none. Events newer than
    this are what happened after a snapshot (Nomad keeps only the last 10, so counting them would not do)."""
    return max((int(e.get("Time") or 0) for e in task_events(alloc, task)), default=0)


def events_since(alloc: dict | None, task: str, since_ns: int) -> list[dict]:
    return [e for e in task_events(alloc, task) if int(e.get("Time") or 0) > since_ns]


def event_text(event: dict) -> str:
    """Everything Nomad shows for an event: its display message, message and the driver's exit message."""
    details = event.get("Details") or {}
    parts = [event.get("DisplayMessage"), event.get("Message"), event.get("DriverMessage"),
             event.get("DriverError"), details.get("exit_message")]
    return " | ".join(dict.fromkeys(p for p in parts if p))


def event_line(event: dict) -> str:
    return f"{event.get('Type')}: {event_text(event) or '-'}"


def exit_event(events: Iterable[dict]) -> dict | None:
    """The first `Terminated` event: Nomad's record of a task that ended (its exit code, the driver's text)."""
    return next((e for e in events if e.get("Type") == "Terminated"), None)


def check_exit_reported(event: dict | None, reason: str, since_ns: int, budget_s: float) -> Check:
    """The allocation's events show the task's exit with ECS's stop `reason` and an exit code, at most
    `budget_s` after `since_ns` (when ECS stopped the task)."""
    if event is None:
        return Check("task exit reported by Nomad", False, "no Terminated event on the allocation", reason, None)
    text = event_text(event)
    code = event.get("ExitCode")
    if code is None:
        code = (event.get("Details") or {}).get("exit_code")
    lag = (int(event.get("Time") or 0) - since_ns) / 1e9
    after = {"event": event_line(event), "exit_code": code, "after_s": round(lag, 2)}
    has_code = isinstance(code, int) or (isinstance(code, str) and code.lstrip("-").isdigit())
    if reason not in text:
        detail = f"the Terminated event does not carry ECS's reason {reason!r}: {text!r}"
    elif not has_code:
        detail = "the Terminated event has no exit code"
    elif lag > budget_s:
        detail = f"reported {lag:.1f}s after ECS stopped the task, more than the {budget_s:g}s allowed"
    else:
        detail = f"Terminated {lag:.1f}s after the stop (allowed {budget_s:g}s), exit code {code}: {text}"
    ok = reason in text and has_code and lag <= budget_s
    return Check("task exit reported by Nomad with ECS's reason", ok, detail, reason, after)


def check_kept_running(before: dict, after: dict | None, task: str, what: str) -> Check:
    """The allocation that ran before still runs the same task: same ID, running, no exit or restart
    event since `before`, the same restart count."""
    since = last_event_time(before, task)
    new = events_since(after, task, since)
    exits = [e for e in new if e.get("Type") in EXIT_EVENTS]
    restarts = (task_state(before, task).get("Restarts") or 0, task_state(after or {}, task).get("Restarts") or 0)
    ok = after is not None and is_running(after) and not exits and restarts[0] == restarts[1]
    if after is None:
        detail = f"allocation {short(before.get('ID'))} is gone"
    elif not is_running(after):
        detail = f"allocation {short(after.get('ID'))} is {after.get('DesiredStatus')}/{after.get('ClientStatus')}"
    elif exits:
        detail = "the task " + ("exited" if exit_event(exits) else "was disturbed") + ": " + \
                 "; ".join(event_line(e) for e in exits)
    elif restarts[0] != restarts[1]:
        detail = f"the task restarted ({restarts[0]} -> {restarts[1]} restarts)"
    else:
        detail = f"allocation {short(after.get('ID'))} still running, no exit or restart event"
    return Check(f"allocation still running ({what})", ok, detail, alloc_summary(before),
                 None if after is None else {**alloc_summary(after), "restarts": restarts[1],
                                             "new_events": [event_line(e) for e in new]})


def check_restarted_in_place(before: dict, after: dict | None, task: str) -> Check:
    """Nomad's restart policy restarted the task in the same allocation (Restarts grew), rather than the
    allocation failing and being rescheduled."""
    r0 = task_state(before, task).get("Restarts") or 0
    r1 = task_state(after or {}, task).get("Restarts") or 0
    same = after is not None and after.get("ID") == before.get("ID")
    ok = same and r1 > r0 and is_running(after)
    if after is None:
        detail = "no allocation runs the task again"
    elif not same:
        detail = (f"allocation {short(before.get('ID'))} failed and Nomad rescheduled it as {short(after.get('ID'))}: "
                  "its restart attempts are used up (the group's restart policy), so no restart in place")
    elif r1 <= r0:
        detail = f"the task's restart count did not grow ({r0} -> {r1})"
    elif not is_running(after):
        detail = f"restarted, but the allocation is {after.get('ClientStatus')}"
    else:
        where = after.get("NodeName") or short(after.get("NodeID"))
        detail = f"allocation {short(after.get('ID'))} restarted its task on {where} ({r0} -> {r1} restarts)"
    return Check("task restarted by the group's restart policy", ok, detail,
                 {"alloc": before.get("ID"), "restarts": r0},
                 None if after is None else {"alloc": after.get("ID"), "restarts": r1})


def check_new_task_same_version(base_alloc: dict, old_arn: str, alloc: dict | None, arn: str | None,
                                task: dict | None) -> Check:
    """A new ECS task (not `old_arn`) is RUNNING for the same job version."""
    v0 = job_version(base_alloc)
    v1 = job_version(alloc) if alloc is not None else None
    status = (task or {}).get("lastStatus")
    ok = bool(arn) and arn != old_arn and status == "RUNNING" and v1 == v0
    if not arn:
        detail = "the allocation has no ECS task handle"
    elif arn == old_arn:
        detail = "the allocation still points at the stopped ECS task"
    elif status != "RUNNING":
        detail = f"the new ECS task {arn} is {status or 'unknown to ECS'}"
    elif v1 != v0:
        detail = f"it runs job version {v1}, not {v0}"
    else:
        detail = f"new ECS task {arn} RUNNING, job version {v1}"
    return Check("new ECS task RUNNING on the same job version", ok, detail,
                 {"arn": old_arn, "job_version": v0}, {"arn": arn, "status": status, "job_version": v1})


def check_stopped_with_reason(task: dict | None, arn: str, reason: str) -> Check:
    """The ECS task is STOPPED with the `reason` it was stopped with (outside Nomad)."""
    return _check_stopped("old ECS task STOPPED", task, arn, lambda got: got == reason,
                          lambda got: f"stopped with reason {got!r}, not ours", lambda got: f"STOPPED: {got!r}")


# --- handed-over allocations (client-restart) ------------------------------------------------------------
def handed_over(allocs: Iterable[dict], running_id: str, arn: str, task: str) -> list[dict]:
    """Finished allocations of the job whose task handle names `arn`, the ECS task allocation `running_id`
    runs now: they handed it over (drain or lost node). Newest first."""
    out = [a for a in allocs if a.get("ID") != running_id and task_arn(a, task) == arn
           and (a.get("ClientStatus") in TERMINAL_CLIENT_STATUSES or a.get("DesiredStatus") in ("stop", "evict"))]
    return sorted(out, key=lambda a: a.get("ModifyIndex", 0), reverse=True)


# --- driver health (outage) -----------------------------------------------------------------------------
_BARE_HEALTH = {"", "healthy", "unhealthy", "undetected", "detected"}


def readable_health(description: str | None) -> bool:
    """A health description a person can act on: more than the bare state word."""
    return (description or "").strip().lower() not in _BARE_HEALTH


def check_drivers_turned_unhealthy(seen: dict[str, str | None], driver: str = DRIVER_NAME) -> Check:
    """`seen` maps each client (its label) to the health description Nomad showed while its `driver` was
    unhealthy, or None when it never was."""
    stayed = [n for n, d in seen.items() if d is None]
    unclear = [n for n, d in seen.items() if d is not None and not readable_health(d)]
    ok = bool(seen) and not stayed and not unclear
    if not seen:
        detail = "no client to watch"
    elif stayed:
        detail = f"the {driver} driver stayed healthy on {', '.join(stayed)}"
    elif unclear:
        detail = f"no readable reason on {', '.join(unclear)}: " + ", ".join(repr(seen[n]) for n in unclear)
    else:
        detail = "; ".join(f"{n}: {d}" for n, d in seen.items())
    return Check(f"every client's {driver} driver turned unhealthy with a reason", ok, detail,
                 "healthy", dict(seen))


def check_drivers_healthy(nodes: list[dict], driver: str = DRIVER_NAME) -> Check:
    sick = [n for n in nodes if not ecs_driver_healthy(n, driver)]
    ok = bool(nodes) and not sick
    detail = (f"healthy on {', '.join(node_label(n) for n in nodes)}" if ok else
              "no client" if not nodes else
              "still unhealthy: " + "; ".join(f"{node_label(n)}: {node_ecs_driver(n, driver)[2]}" for n in sick))
    return Check(f"every client's {driver} driver healthy again", ok, detail, None,
                 {node_label(n): node_ecs_driver(n, driver)[2] for n in nodes})
