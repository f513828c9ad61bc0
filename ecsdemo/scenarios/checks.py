"""The pure logic of the scenarios: reading Nomad and ECS snapshots and judging them.

Inputs are the JSON Nomad serves (allocation stubs or full allocations, node stubs or nodes) and the
task dicts ECS's DescribeTasks returns; outputs are plain values or `Check`s. No I/O, so every rule is
unit-tested on real-shaped data.
"""

from __future__ import annotations

from typing import Any, Iterable

from ecsdemo.nomad import TERMINAL_CLIENT_STATUSES, node_draining, node_ecs_driver
from ecsdemo.scenarios.model import Check

STOP_REASON_PREFIX = "Stopped by Nomad"
CLIENT_TERMINAL = TERMINAL_CLIENT_STATUSES


# --- allocations -----------------------------------------------------------------------------------
def short(ident: str | None) -> str:
    return (ident or "")[:8]


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
def ecs_driver_healthy(node: dict, driver: str = "ecs") -> bool:
    detected, healthy, _ = node_ecs_driver(node, driver)
    return detected and healthy


def is_schedulable(node: dict, driver: str = "ecs") -> bool:
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


def check_stopped_by_nomad(task: dict | None, arn: str, alloc_id: str | None = None) -> Check:
    """The ECS task is STOPPED and the driver stopped it (its reason starts with "Stopped by Nomad")."""
    status = (task or {}).get("lastStatus")
    reason = (task or {}).get("stoppedReason") or ""
    ok = status == "STOPPED" and reason.startswith(STOP_REASON_PREFIX)
    if task is None:
        detail = f"ECS does not know task {arn}"
    elif status != "STOPPED":
        detail = f"task {arn} is {status}, not STOPPED"
    elif not ok:
        detail = f"stopped, but not by the driver: reason {reason!r}"
    else:
        names = f" (names allocation {short(alloc_id)})" if alloc_id and alloc_id[:8] in reason else ""
        detail = f"STOPPED: {reason!r}{names}"
    return Check("old ECS task STOPPED by the driver", ok, detail, "RUNNING", {"status": status, "reason": reason})


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
