"""The server side of the simulation: scheduler, drainer, heartbeat timer, health and deployments.

`ServerLoop` ticks every `Timings.tick` and, under the cluster lock: marks nodes whose heartbeats
stopped `down` (lost allocs, node-update evals), turns a client's `failed` report into an `alloc-failure`
eval, marks allocs healthy (or unhealthy) and runs the deployment watcher's reaction, runs the drainer,
then processes pending evaluations with `reconcile` (docs/nomad-notes.md, "Scheduler behaviour the demo depends on").

Where Nomad's scheduler does something surprising the fake does it too (sources at v1.1.0 and v1.9.7):
- a migrating (drained) alloc is stopped even when its replacement finds no node: the stop is
  unconditional in scheduler/reconcile.go computeMigrations, only a destructive update's stop is taken
  back (generic_sched.go PopUpdate). The replacement placed later (blocked eval) is a fresh allocation:
  no PreviousAllocation, no TaskHandle, so a new remote task (nomad#10592);
- a change of job or group `meta` alone is a destructive update (scheduler/util.go tasksUpdated);
- a failed alloc is replaced per its group's `reschedule` policy, on another node when there is one,
  and its replacement gets no TaskHandle (only lost or migrating allocs hand over).
"""

from __future__ import annotations

import copy
import threading
import time

from tests.fakenomad.model import TERMINAL_CLIENT, Cluster, new_id, new_task_state
from tests.fakenomad.wire import NS, parse_rfc3339nano, rfc3339nano

LOST = "alloc is lost since its node is down"
MIGRATING = "alloc is being migrated"
UPDATING = "alloc is being updated due to job update"
NOT_NEEDED = "alloc not needed due to job update"


def feasible_nodes(cl: Cluster, driver: str) -> tuple[list[dict], dict]:
    """Nodes that can take a task of `driver`, and the AllocMetric explaining the rest."""
    ready = [n for n in cl.nodes.values()
             if n["Status"] == "ready" and n["SchedulingEligibility"] == "eligible" and n["DrainStrategy"] is None]
    ok = [n for n in ready if (n["Drivers"].get(driver) or {}).get("Detected")
          and (n["Drivers"].get(driver) or {}).get("Healthy")]
    missing = len(ready) - len(ok)
    dcs: dict[str, int] = {}
    for n in ready:
        dcs[n["Datacenter"]] = dcs.get(n["Datacenter"], 0) + 1
    metric = {"NodesEvaluated": len(ready), "NodesFiltered": missing, "NodesAvailable": dcs or {"dc1": 0},
              "ClassFiltered": None, "ConstraintFiltered": {"missing drivers": missing} if missing else None,
              "NodesExhausted": 0, "ClassExhausted": None, "DimensionExhausted": None, "QuotaExhausted": None,
              "ResourcesExhausted": None, "Scores": None, "ScoreMetaData": None, "AllocationTime": 12345,
              "CoalescedFailures": 0}
    return ok, metric


def _group(job: dict, name: str) -> dict | None:
    return next((g for g in job["TaskGroups"] if g["Name"] == name), None)


def _combined_meta(job: dict, group: dict, task: dict) -> dict:
    """Job.CombinedTaskMeta (nomad/structs/structs.go): task meta over group meta over job meta."""
    meta = dict(job.get("Meta") or {})
    meta.update(group.get("Meta") or {})
    meta.update(task.get("Meta") or {})
    return meta


_TASK_FIELDS = ("Driver", "User", "Config", "Env", "Artifacts", "Vault", "Templates", "VolumeMounts",
                "CSIPluginConfig")
_RESOURCE_FIELDS = ("CPU", "Cores", "MemoryMB", "MemoryMaxMB", "Devices", "Networks")


def tasks_updated(old_job: dict, new_job: dict, group_name: str) -> bool:
    """Whether an allocation must be replaced (destructive update) rather than updated in place, as
    scheduler/util.go `tasksUpdated` decides: the task count, ephemeral disk, networks, affinities, spreads,
    volumes; per task its driver, user, config, env, artifacts, vault, templates, volume mounts, the
    COMBINED job+group+task meta (so a change of job `meta` alone is destructive) and resources. Anything
    else (kill_timeout, restart/reschedule/migrate/update blocks, count, log config...) is in place."""
    a, b = _group(old_job, group_name), _group(new_job, group_name)
    if a is None or b is None or len(a["Tasks"]) != len(b["Tasks"]):
        return True
    for key in ("EphemeralDisk", "Networks", "Affinities", "Spreads", "Volumes"):
        if a.get(key) != b.get(key):
            return True
    if (old_job.get("Affinities"), old_job.get("Spreads")) != (new_job.get("Affinities"), new_job.get("Spreads")):
        return True
    for at in a["Tasks"]:
        bt = next((t for t in b["Tasks"] if t["Name"] == at["Name"]), None)
        if bt is None:
            return True
        if any(at.get(k) != bt.get(k) for k in _TASK_FIELDS):
            return True
        if _combined_meta(old_job, a, at) != _combined_meta(new_job, b, bt):
            return True
        ra, rb = at.get("Resources") or {}, bt.get("Resources") or {}
        if any(ra.get(k) != rb.get(k) for k in _RESOURCE_FIELDS):
            return True
    return False


def set_job_status(cl: Cluster, job: dict, index: int) -> None:
    allocs = cl.job_allocs(job["ID"])
    if any(a["DesiredStatus"] == "run" and a["ClientStatus"] not in TERMINAL_CLIENT for a in allocs):
        status = "running"
    elif any(e["JobID"] == job["ID"] and e["Status"] in ("pending", "blocked") for e in cl.evals.values()):
        status = "pending"
    elif job["Stop"] or allocs:
        status = "dead"
    else:
        status = "pending"
    if job["Status"] != status:
        job["Status"] = status
        cl.stamp(job, index, "jobs")


def _stop(cl: Cluster, alloc: dict, index: int, description: str, client_status: str = "") -> None:
    """Plan.AppendStoppedAlloc (nomad/structs/structs.go): desired stop with a description, the client status
    only when given (lost), and an AllocStates entry {Field: ClientStatus (0), Value: <client status or "">}."""
    alloc["DesiredStatus"] = "stop"
    alloc["DesiredDescription"] = description
    if client_status:
        alloc["ClientStatus"] = client_status
    alloc["AllocStates"] = (alloc.get("AllocStates") or []) + [
        {"Field": 0, "Value": client_status, "Time": rfc3339nano()}]
    alloc["AllocModifyIndex"] = index
    alloc["ModifyTime"] = time.time_ns()
    cl.stamp(alloc, index, "allocs")


def _undo_stop(alloc: dict, saved: dict) -> None:
    """Plan.PopUpdate: the stop planned for a destructive update is taken back when its replacement found no
    node (scheduler/generic_sched.go computePlacements), so the old allocation keeps running."""
    alloc.update(saved)


def _place(cl: Cluster, job: dict, group: dict, name: str, ev: dict, index: int, node: dict, metric: dict,
           prev: dict | None = None, prev_lost: bool = False, reschedule: bool = False) -> dict:
    """One placement (scheduler/generic_sched.go computePlacements). With a previous allocation: the chain
    (PreviousAllocation here, NextAllocation on prev as the state store sets it), the RescheduleTracker when
    rescheduling (updateRescheduleTracker), and the task handles only as `propagateTaskState` copies them."""
    dep = cl.latest_deployment(job["ID"])
    dep_id = dep["ID"] if dep and dep["Status"] == "running" and dep["JobVersion"] == job["Version"] else ""
    now = time.time_ns()
    alloc = {
        "ID": new_id(), "Namespace": "default", "EvalID": ev["ID"], "Name": name, "NodeID": node["ID"],
        "NodeName": node["Name"], "JobID": job["ID"], "Job": copy.deepcopy(job), "TaskGroup": group["Name"],
        "AllocatedResources": {
            "Tasks": {t["Name"]: {"Cpu": {"CpuShares": (t.get("Resources") or {}).get("CPU", 100)},
                                  "Memory": {"MemoryMB": (t.get("Resources") or {}).get("MemoryMB", 300)}}
                      for t in group["Tasks"]},
            "Shared": {"DiskMB": 300}},
        "Resources": None, "SharedResources": None, "TaskResources": None,
        "DesiredStatus": "run", "DesiredDescription": "",
        "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None, "NoShutdownDelay": None},
        "ClientStatus": "pending", "ClientDescription": "", "TaskStates": None, "AllocStates": None,
        "PreviousAllocation": "", "NextAllocation": "", "DeploymentID": dep_id,
        "DeploymentStatus": None, "RescheduleTracker": None, "NetworkStatus": None, "FollowupEvalID": "",
        "PreemptedAllocations": None, "PreemptedByAllocation": "", "SigningKeyID": "",
        "Metrics": copy.deepcopy(metric), "CreateIndex": index, "ModifyIndex": index, "AllocModifyIndex": index,
        "CreateTime": now, "ModifyTime": now,
    }
    if prev is not None:
        alloc["PreviousAllocation"] = prev["ID"]
        if reschedule:
            _update_reschedule_tracker(cl, alloc, prev, now)
        alloc["TaskStates"] = _propagate_task_state(alloc, prev, prev_lost)
        prev["NextAllocation"] = alloc["ID"]
        cl.stamp(prev, index, "allocs")
    cl.allocs[alloc["ID"]] = alloc
    cl.tables["allocs"] = index
    if dep_id:
        dep["TaskGroups"][group["Name"]]["PlacedAllocs"] += 1
        cl.stamp(dep, index, "deployment")
    return alloc


def _propagate_task_state(alloc: dict, prev: dict, prev_lost: bool) -> dict | None:
    """scheduler/generic_sched.go propagateTaskState: only a previous allocation that is not client-terminal
    and is lost or migrating hands its TaskHandles over (a fresh pending TaskState holding a copy). Job
    updates, reschedules of failed allocations and placements after the old one finished get none. As in
    Nomad, a lost alloc is judged by its status before this plan marks it `lost`."""
    if prev["ClientStatus"] in TERMINAL_CLIENT and not (prev_lost and prev.get("_was_live")):
        return None
    if not prev_lost and not prev["DesiredTransition"].get("Migrate"):
        return None
    tasks = alloc["AllocatedResources"]["Tasks"]
    return {t: new_task_state(ts["TaskHandle"]) for t, ts in (prev.get("TaskStates") or {}).items()
            if ts.get("TaskHandle") and t in tasks}


# --- rescheduling (nomad/structs/structs.go Allocation.NextRescheduleTime / NextDelay / RescheduleTracker,
# scheduler/reconcile_util.go filterByRescheduleable, scheduler/reconcile.go) ---------------------------------

RESCHEDULED = "alloc was rescheduled because it failed"
FOLLOWUP_DESC = "created for delayed rescheduling"
RESCHEDULE_WINDOW = 1 * NS          # reconcile.go rescheduleWindowSize: "now" if due within 1 s
BATCHED_FAILED_WINDOW = 5 * NS      # reconcile.go batchedFailedAllocWindowSize: one follow-up eval per 5 s
MAX_PAST_RESCHEDULE_EVENTS = 5      # generic_sched.go maxPastRescheduleEvents (unlimited policies)


def _scaled(cl: Cluster, ns: int) -> int:
    """A policy duration as the simulation waits it (`Timings.reschedule_scale`); JSON keeps Nomad's value."""
    return int(ns * cl.timings.reschedule_scale)


def _policy(alloc: dict) -> dict | None:
    group = _group(alloc["Job"], alloc["TaskGroup"])
    return (group or {}).get("ReschedulePolicy")


def _last_event_time(alloc: dict) -> int:
    """Allocation.LastEventTime: the latest task FinishedAt, else the alloc's ModifyTime (ns)."""
    last = 0
    for ts in (alloc.get("TaskStates") or {}).values():
        if ts.get("FinishedAt"):
            last = max(last, parse_rfc3339nano(ts["FinishedAt"]))
    return last or alloc["ModifyTime"]


def _events(alloc: dict) -> list[dict]:
    return ((alloc.get("RescheduleTracker") or {}).get("Events")) or []


def next_delay(cl: Cluster, alloc: dict) -> int:
    """Allocation.NextDelay (ns): `delay` for the first reschedule, then per `delay_function` (exponential:
    last delay x2; fibonacci: sum of the last two; constant), capped at `max_delay`, and back to `delay`
    once the allocation ran longer than the capped delay since its last reschedule."""
    policy = _policy(alloc)
    if policy is None:
        return 0
    delay = policy["Delay"]
    events = _events(alloc)
    if not events:
        return delay
    fn = policy.get("DelayFunction")
    if fn == "exponential":
        delay = events[-1]["Delay"] * 2
    elif fn == "fibonacci":
        if len(events) >= 2:
            n1, n2 = events[-1]["Delay"], events[-2]["Delay"]
            delay = n1 if (n2 == policy["MaxDelay"] and n1 == policy["Delay"]) else n1 + n2
    else:
        return delay
    if policy.get("MaxDelay", 0) > 0 and delay > policy["MaxDelay"]:
        delay = policy["MaxDelay"]
        if _last_event_time(alloc) - events[-1]["RescheduleTime"] > _scaled(cl, delay):
            delay = policy["Delay"]
    return delay


def _attempted(cl: Cluster, alloc: dict, policy: dict, fail_time: int) -> int:
    return sum(1 for e in _events(alloc) if fail_time - e["RescheduleTime"] < _scaled(cl, policy["Interval"]))


def reschedule_eligible(cl: Cluster, alloc: dict, at: int) -> bool:
    """RescheduleTracker.RescheduleEligible: unlimited, or fewer attempts than `attempts` within `interval`."""
    policy = _policy(alloc)
    if policy is None or not (policy["Attempts"] > 0 or policy.get("Unlimited")):
        return False
    if policy.get("Unlimited") or not _events(alloc):
        return True
    return _attempted(cl, alloc, policy, at) < policy["Attempts"]


def last_reschedule_failed(cl: Cluster, alloc: dict) -> bool:
    """Allocation.LastRescheduleFailed (1.9+): its last reschedule found no node ("no placement")."""
    return cl.vt >= (1, 9, 0) and (alloc.get("RescheduleTracker") or {}).get("LastReschedule") == "no placement"


def next_reschedule_time(cl: Cluster, alloc: dict) -> tuple[int, bool]:
    """Allocation.NextRescheduleTime: (when, eligible). Only failed (or lost) allocations still desired
    running qualify (1.9+: or stopped by a reschedule that found no node); the time is the failure time
    plus NextDelay (scaled for the simulation)."""
    policy = _policy(alloc)
    if policy is None or (policy["Attempts"] == 0 and not policy.get("Unlimited")):
        return 0, False
    if ((alloc["DesiredStatus"] == "stop" and not last_reschedule_failed(cl, alloc))
            or alloc["ClientStatus"] not in ("failed", "lost")):
        return 0, False
    fail_time = _last_event_time(alloc)
    delay = next_delay(cl, alloc)
    when = fail_time + _scaled(cl, delay)
    eligible = bool(policy.get("Unlimited")) or (policy["Attempts"] > 0 and not alloc.get("RescheduleTracker"))
    if policy["Attempts"] > 0 and _events(alloc):
        eligible = _attempted(cl, alloc, policy, fail_time) < policy["Attempts"] and delay < policy["Interval"]
    return when, eligible


def _update_reschedule_tracker(cl: Cluster, alloc: dict, prev: dict, now: int) -> None:
    """generic_sched.go updateRescheduleTracker: carry the previous events (those within `interval` when
    `attempts` is set, else the last 5) and add {RescheduleTime, PrevAllocID, PrevNodeID, Delay}."""
    policy = _policy(prev) or {}
    old = _events(prev)
    if policy.get("Attempts", 0) > 0:
        interval = _scaled(cl, policy.get("Interval", 0))
        carried = [dict(e) for e in old if interval > 0 and now - e["RescheduleTime"] <= interval]
    else:
        carried = [dict(e) for e in old[-MAX_PAST_RESCHEDULE_EVENTS:]]
    carried.append({"RescheduleTime": now, "PrevAllocID": prev["ID"], "PrevNodeID": prev["NodeID"],
                    "Delay": next_delay(cl, prev)})
    alloc["RescheduleTracker"] = {"Events": carried, "LastReschedule": "ok"}
    prev["RescheduleTracker"] = dict(prev.get("RescheduleTracker") or {"Events": None}, LastReschedule="ok")


def _classify_failed(cl: Cluster, a: dict, ev: dict, dep: dict | None, now: int) -> str:
    """reconcile_util.go updateByReschedulable: "now", "later" or "keep" (counts, is not replaced)."""
    if (dep is not None and a["DeploymentID"] == dep["ID"] and dep["Status"] == "running"
            and not a["DesiredTransition"].get("Reschedule")):
        return "keep"  # an active deployment's alloc is only replaced once the deployment watcher allows it
    if a["DesiredTransition"].get("ForceReschedule"):
        return "now"
    when, eligible = next_reschedule_time(cl, a)
    if eligible and (a["FollowupEvalID"] == ev["ID"] or when - now <= _scaled(cl, RESCHEDULE_WINDOW)):
        return "now"
    if eligible and not a["FollowupEvalID"]:
        return "later"
    return "keep"


def _followup_evals(cl: Cluster, job: dict, later: list[dict], index: int) -> None:
    """reconcile.go handleDelayedReschedules: pending `alloc-failure` evals with WaitUntil, one per batch of
    failures due within 5 s of each other; each alloc records its eval in FollowupEvalID."""
    timed = sorted(((next_reschedule_time(cl, a)[0], a) for a in later), key=lambda x: x[0])
    ev, batch_start = None, 0
    for when, a in timed:
        if ev is None or when - batch_start >= _scaled(cl, BATCHED_FAILED_WINDOW):
            batch_start = when
            ev = cl.new_eval(job, job["ID"], "alloc-failure", index, StatusDescription=FOLLOWUP_DESC,
                             WaitUntil=rfc3339nano(when / NS), _wait_until=when)
        a["FollowupEvalID"] = ev["ID"]
        cl.stamp(a, index, "allocs")


# --- the reconciler -------------------------------------------------------------------------------------------

def reconcile(cl: Cluster, ev: dict) -> None:
    """Process one evaluation: make the job's allocations match the job (one plan, one index), following
    scheduler/reconcile.go computeGroup and scheduler/generic_sched.go computeJobAllocs/computePlacements."""
    index = cl.bump("evals", "allocs", "jobs")
    job = cl.jobs.get(ev["JobID"])
    allocs = cl.job_allocs(ev["JobID"])
    ev["SnapshotIndex"] = index - 1
    for a in allocs:
        # scheduler/util.go updateNonTerminalAllocsToLost: an alloc already told to stop whose client never
        # finished it (pending/running) on a down node becomes lost (e.g. a drained alloc when its node dies)
        node = cl.nodes.get(a["NodeID"])
        if ((node is None or node["Status"] == "down") and a["DesiredStatus"] in ("stop", "evict")
                and a["ClientStatus"] in ("pending", "running")):
            _stop(cl, a, index, LOST, "lost")
    if job is None or job["Stop"]:
        for a in allocs:
            if a["DesiredStatus"] == "run":
                node = cl.nodes.get(a["NodeID"])
                if node and node["Status"] == "down" and a["ClientStatus"] not in TERMINAL_CLIENT:
                    _stop(cl, a, index, LOST, "lost")
                else:
                    _stop(cl, a, index, NOT_NEEDED)
        dep = cl.latest_deployment(ev["JobID"])
        if dep and dep["Status"] == "running":
            dep.update(Status="cancelled", StatusDescription="Cancelled because job is stopped")
            cl.stamp(dep, index, "deployment")
        _finish_eval(cl, ev, index, {}, {})
        if job:
            set_job_status(cl, job, index)
        return

    failed: dict[str, dict] = {}
    queued: dict[str, int] = {}
    now = time.time_ns()
    for group in job["TaskGroups"]:
        gname = group["Name"]
        driver = group["Tasks"][0]["Driver"] if group["Tasks"] else ""
        dep = cl.latest_deployment(job["ID"])
        # 1.9+ (reconcile_util.go shouldFilter): a failed alloc whose reschedule found no node is stopped
        # but still rescheduled later, with its tracker; before 1.9 its name is simply placed afresh
        live = [a for a in allocs if a["TaskGroup"] == gname
                and (a["DesiredStatus"] == "run" or last_reschedule_failed(cl, a) and not a["NextAllocation"])]
        # filterByTainted: lost (node down or gone) and migrating allocs are stopped and replaced at once
        replace: list[tuple[dict, bool]] = []      # (previous alloc, lost)
        untainted: list[dict] = []
        reschedule_now: list[dict] = []
        later: list[dict] = []
        for a in live:
            node = cl.nodes.get(a["NodeID"])
            client_terminal = a["ClientStatus"] in TERMINAL_CLIENT
            if not client_terminal and a["DesiredTransition"].get("Migrate"):
                _stop(cl, a, index, MIGRATING)   # unconditional: a migration with no placement is not undone
                replace.append((a, False))
            elif not client_terminal and (node is None or node["Status"] == "down"):
                a["_was_live"] = True
                _stop(cl, a, index, LOST, "lost")
                replace.append((a, True))
            elif a["ClientStatus"] in ("complete", "lost"):
                continue  # shouldFilter: ignored, does not count, its name is placed afresh
            elif a["ClientStatus"] == "failed":
                if a["NextAllocation"]:
                    continue  # already rescheduled
                kind = _classify_failed(cl, a, ev, dep, now)
                if kind == "now":
                    reschedule_now.append(a)
                    continue
                if kind == "later":
                    later.append(a)
                untainted.append(a)
            else:
                untainted.append(a)
        _followup_evals(cl, job, later, index)
        # computeUpdates: a new job version is applied in place unless tasksUpdated says destructive
        destructive, inplace = [], []
        for a in untainted:
            if a["Job"]["Version"] == job["Version"] or a["DesiredStatus"] != "run":
                continue
            (destructive if tasks_updated(a["Job"], job, gname) else inplace).append(a)
        # computeStop: more allocs than Count
        names = [f'{job["ID"]}.{gname}[{i}]' for i in range(group["Count"])]
        for a in untainted:
            if a["Name"] not in names and a["ClientStatus"] not in TERMINAL_CLIENT:
                _stop(cl, a, index, NOT_NEEDED)
        untainted = [a for a in untainted if a["DesiredStatus"] == "run"]
        destructive = [a for a in destructive if a["DesiredStatus"] == "run"]
        inplace = [a for a in inplace if a["DesiredStatus"] == "run"]
        taken = {a["Name"] for a in untainted} | {a["Name"] for a, _ in replace} | {a["Name"] for a in reschedule_now}
        fresh = [n for n in names if n not in taken]
        if ev["TriggeredBy"] in ("job-register", "queued-allocs") and job["Type"] == "service":
            had_running = any(a["Job"]["Version"] == job["Version"] for a in allocs)
            if (destructive or inplace or fresh) and (not had_running or destructive or inplace):
                _ensure_deployment(cl, job, index)
        dep = cl.latest_deployment(job["ID"])
        for a in inplace:
            a["Job"] = copy.deepcopy(job)
            if dep and dep["Status"] == "running" and a["DeploymentID"] != dep["ID"]:
                a["DeploymentID"], a["DeploymentStatus"] = dep["ID"], None
                if a["ClientStatus"] == "running":  # the client's health watcher starts over for the new deployment
                    a["_running_since"] = time.monotonic()
                dep["TaskGroups"][gname]["PlacedAllocs"] += 1
            cl.stamp(a, index, "allocs")
        nodes, metric = feasible_nodes(cl, driver)

        def pick(prev: dict | None = None) -> dict | None:
            if not nodes:
                return None
            penalty = {e["PrevNodeID"] for e in _events(prev or {})}
            if prev is not None and prev["ClientStatus"] == "failed":
                penalty.add(prev["NodeID"])  # generic_sched.go getSelectOptions: penalize where it failed
            load = {n["ID"]: sum(1 for a in cl.allocs.values() if a["NodeID"] == n["ID"]
                                 and a["DesiredStatus"] == "run") for n in nodes}
            return min(nodes, key=lambda n: (n["ID"] in penalty, load[n["ID"]], n["Name"]))

        def no_node() -> None:
            queued[gname] = queued.get(gname, 0) + 1
            failed[gname] = dict(metric, CoalescedFailures=queued[gname] - 1)

        # destructive updates first: stop, then place; no node -> the stop is undone (PopUpdate)
        for a in destructive:
            saved = {k: copy.deepcopy(a[k]) for k in ("DesiredStatus", "DesiredDescription", "AllocStates",
                                                        "AllocModifyIndex", "ModifyTime", "ModifyIndex")}
            _stop(cl, a, index, UPDATING)
            node = pick()
            if node is None:
                _undo_stop(a, saved)
                no_node()
                continue
            _place(cl, job, group, a["Name"], ev, index, node, metric, prev=a)
        for prev, lost in replace:
            node = pick(prev)
            if node is None:
                no_node()
                continue
            _place(cl, job, group, prev["Name"], ev, index, node, metric, prev=prev, prev_lost=lost)
        for prev in reschedule_now:
            if prev["DesiredStatus"] == "run":
                _stop(cl, prev, index, RESCHEDULED)  # reconcile.go markStop(rescheduleNow), placed or not
            node = pick(prev)
            if node is None:
                no_node()
                if cl.vt >= (1, 9, 0):  # generic_sched.go annotateRescheduleTracker
                    prev["RescheduleTracker"] = dict(prev.get("RescheduleTracker") or {"Events": None},
                                                     LastReschedule="no placement")
                continue
            _place(cl, job, group, prev["Name"], ev, index, node, metric, prev=prev, reschedule=True)
        for name in fresh:
            node = pick()
            if node is None:
                no_node()
                continue
            _place(cl, job, group, name, ev, index, node, metric)
    _finish_eval(cl, ev, index, failed, queued)
    set_job_status(cl, job, index)


def _ensure_deployment(cl: Cluster, job: dict, index: int) -> None:
    dep = cl.latest_deployment(job["ID"])
    if dep and dep["JobVersion"] == job["Version"]:
        return
    if dep and dep["Status"] == "running":
        dep.update(Status="cancelled", StatusDescription="Cancelled due to newer version of job")
        cl.stamp(dep, index, "deployment")
    cl.new_deployment(job, index)


def _finish_eval(cl: Cluster, ev: dict, index: int, failed: dict, queued: dict) -> None:
    ev["Status"] = "complete"
    ev["ModifyTime"] = time.time_ns()
    ev["QueuedAllocations"] = {g["Name"]: queued.get(g["Name"], 0)
                               for g in (cl.jobs.get(ev["JobID"]) or {}).get("TaskGroups", [])} or None
    if failed:
        ev["FailedTGAllocs"] = failed
        if ev["TriggeredBy"] == "queued-allocs" and ev.get("_blocked"):
            ev["Status"] = "blocked"  # re-blocked: still nowhere to place
        else:
            job = cl.jobs.get(ev["JobID"])
            for other in cl.evals.values():  # nomad/blocked_evals.go: one blocked eval per job, older ones reaped
                if other["JobID"] == ev["JobID"] and other["Status"] == "blocked":
                    other.update(Status="canceled",
                                 StatusDescription=f'existing blocked evaluation exists for job "{ev["JobID"]}"')
                    cl.stamp(other, index, "evals")
            blocked = cl.new_eval(job, ev["JobID"], "queued-allocs", index, status="blocked",
                                  PreviousEval=ev["ID"], _blocked=True,
                                  StatusDescription="created due to placement conflicts")
            blocked["FailedTGAllocs"] = failed
            ev["BlockedEval"] = blocked["ID"]
    else:
        ev["FailedTGAllocs"] = None
    cl.stamp(ev, index, "evals")


def unblock(cl: Cluster) -> None:
    """Capacity changed: blocked evaluations get another scheduling pass."""
    for ev in list(cl.evals.values()):
        if ev["Status"] == "blocked":
            ev["Status"] = "pending"


def allocs_run_on(cl: Cluster, node_id: str) -> list[dict]:
    return [a for a in cl.node_allocs(node_id) if a["DesiredStatus"] == "run"]


class ServerLoop:
    """The leader's background work, one tick at a time (thread)."""

    def __init__(self, cl: Cluster):
        self.cl = cl
        self._stop = threading.Event()
        self._last_drain = 0.0
        self._thread = threading.Thread(target=self._run, name="fakenomad-server", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.cl.timings.tick):
            with self.cl.cond:
                if not self.cl.leader:
                    continue
                self.check_heartbeats()
                self.client_updates()
                self.mark_healthy()
                if time.monotonic() - self._last_drain >= self.cl.timings.drainer_batch:
                    self._last_drain = time.monotonic()
                    self.drain()
                self.process_evals()

    # --- heartbeats -------------------------------------------------------------------------------
    def check_heartbeats(self) -> None:
        cl = self.cl
        limit = cl.timings.heartbeat_ttl + cl.timings.heartbeat_grace
        for node in cl.nodes.values():
            if node["Status"] in ("ready", "initializing") and time.monotonic() - node["_last_heartbeat"] > limit:
                index = cl.bump("nodes", "evals")
                node["Status"] = "down"
                node["StatusUpdatedAt"] = int(time.time())
                node["LastMissedHeartbeatIndex"] = index
                cl.node_event(node, "Node heartbeat missed", "Cluster", index)
                cl.stamp(node, index, "nodes")
                # nomad/node_endpoint.go createNodeEvals: one node-update eval per job with allocs on the node
                for job_id in sorted({a["JobID"] for a in cl.node_allocs(node["ID"])}):
                    cl.new_eval(cl.jobs.get(job_id), job_id, "node-update", index, node_id=node["ID"])

    # --- client updates -------------------------------------------------------------------------
    def client_updates(self) -> None:
        """What Node.UpdateAlloc (nomad/node_endpoint.go) does when a client reports an allocation `failed`:
        an `alloc-failure` evaluation, if the alloc has no follow-up eval yet and its reschedule policy
        allows another attempt. The client writes its fields into the model; this runs on the next tick.
        (The client's fields themselves are taken as sent, also over a server-side `lost`, as
        nomad/state/state_store.go nestedUpdateAllocFromClient does.)"""
        cl = self.cl
        now = time.time_ns()
        for a in list(cl.allocs.values()):
            if a["ClientStatus"] != "failed" or a.get("_failure_reported"):
                continue
            a["_failure_reported"] = True
            job = cl.jobs.get(a["JobID"])
            if job is None or a["FollowupEvalID"] or not reschedule_eligible(cl, a, now):
                continue
            cl.new_eval(job, job["ID"], "alloc-failure", cl.bump("evals"))

    # --- health -----------------------------------------------------------------------------------
    def mark_healthy(self) -> None:
        cl = self.cl
        for a in cl.allocs.values():
            if a["ClientStatus"] == "failed" and a["DeploymentID"] and not a.get("DeploymentStatus"):
                self._unhealthy(a)
                continue
            if a["ClientStatus"] != "running" or a["DesiredStatus"] != "run" or a.get("DeploymentStatus"):
                continue
            since = a.get("_running_since")
            group = next(g for g in a["Job"]["TaskGroups"] if g["Name"] == a["TaskGroup"])
            strategy = (group.get("Update") if a["DeploymentID"] else group.get("Migrate")) or {}
            wait = cl.timings.min_healthy_time
            if wait is None:
                wait = strategy.get("MinHealthyTime", 10 * NS) / NS
            if since is None or time.monotonic() - since < wait:
                continue
            index = cl.bump("allocs")
            a["DeploymentStatus"] = {"Healthy": True, "Timestamp": rfc3339nano(local=True), "Canary": False,
                                     "ModifyIndex": index}
            cl.stamp(a, index, "allocs")
            dep = cl.deployments.get(a["DeploymentID"]) if a["DeploymentID"] else None
            if dep and dep["Status"] == "running":
                tg = dep["TaskGroups"][a["TaskGroup"]]
                tg["HealthyAllocs"] += 1
                if all(g["HealthyAllocs"] >= g["DesiredTotal"] for g in dep["TaskGroups"].values()):
                    dep.update(Status="successful", StatusDescription="Deployment completed successfully")
                cl.stamp(dep, index, "deployment")

    def _unhealthy(self, a: dict) -> None:
        """A task of a deployment's alloc failed before it was healthy: the client reports Healthy=false
        (client/allochealth/tracker.go). The deployment watcher then fails the deployment when it is not
        progress based or the alloc may not be rescheduled any more (shouldFailEarly), else marks the alloc
        DesiredTransition.Reschedule so the reconciler replaces it (handleAllocUpdate, allowReplacements;
        nomad/deploymentwatcher/deployment_watcher.go)."""
        cl = self.cl
        index = cl.bump("allocs", "deployment", "evals")
        a["DeploymentStatus"] = {"Healthy": False, "Timestamp": rfc3339nano(local=True), "Canary": False,
                                 "ModifyIndex": index}
        cl.stamp(a, index, "allocs")
        dep = cl.deployments.get(a["DeploymentID"])
        if dep is None or dep["Status"] != "running":
            return
        tg = dep["TaskGroups"][a["TaskGroup"]]
        tg["UnhealthyAllocs"] += 1
        if tg.get("ProgressDeadline", 0) == 0 or not reschedule_eligible(cl, a, time.time_ns()):
            dep.update(Status="failed", StatusDescription="Failed due to unhealthy allocations")
        else:
            a["DesiredTransition"]["Reschedule"] = True
            cl.new_eval(cl.jobs.get(a["JobID"]), a["JobID"], "deployment-watcher", index,
                        DeploymentID=dep["ID"])
        cl.stamp(dep, index, "deployment")

    # --- drainer ----------------------------------------------------------------------------------
    def drain(self) -> None:
        cl = self.cl
        for node in cl.nodes.values():
            strategy = node["DrainStrategy"]
            if strategy is None:
                continue
            running = allocs_run_on(cl, node["ID"])
            if self._drain_done(node, running):
                index = cl.bump("nodes")
                node["DrainStrategy"] = None
                node["LastDrain"].update(Status="complete", UpdatedAt=rfc3339nano(local=True))
                cl.node_event(node, "Node drain complete", "Drain", index)
                cl.stamp(node, index, "nodes")
                continue
            force = strategy["Deadline"] < 0 or (strategy.get("_force_at")
                                                 and time.monotonic() >= strategy["_force_at"])
            marked_jobs = set()
            for a in running:
                if a["DesiredTransition"].get("Migrate"):
                    continue
                group = next(g for g in a["Job"]["TaskGroups"] if g["Name"] == a["TaskGroup"])
                healthy = (a.get("DeploymentStatus") or {}).get("Healthy") is True
                if not force:
                    if not healthy:
                        continue
                    limit = (group.get("Migrate") or {}).get("MaxParallel", 1)
                    if self._migrating(a["JobID"], a["TaskGroup"]) >= limit:
                        continue
                index = cl.bump("allocs", "evals")
                a["DesiredTransition"]["Migrate"] = True
                cl.stamp(a, index, "allocs")
                marked_jobs.add(a["JobID"])
            for job_id in sorted(marked_jobs):
                cl.new_eval(cl.jobs.get(job_id), job_id, "node-drain", cl.index, node_id=node["ID"])

    def _drain_done(self, node: dict, running: list[dict]) -> bool:
        """nomad/drainer/draining_node.go IsDone: every (non-system) alloc on the node is terminal; since
        1.3.14, 1.4.9 and 1.5.4 (#14348) client-terminal, i.e. the client has finished stopping/detaching."""
        vt = self.cl.vt
        if not (vt >= (1, 5, 4) or (1, 4, 9) <= vt < (1, 5, 0) or (1, 3, 14) <= vt < (1, 4, 0)):
            return not running
        return all(a["ClientStatus"] in TERMINAL_CLIENT for a in self.cl.node_allocs(node["ID"])
                   if a["Job"]["Type"] != "system")

    def _migrating(self, job_id: str, group: str) -> int:
        """Migrations in flight for a group: marked allocs whose replacement is not healthy yet."""
        n = 0
        for a in self.cl.job_allocs(job_id):
            if a["TaskGroup"] != group or not a["DesiredTransition"].get("Migrate"):
                continue
            nxt = self.cl.allocs.get(a["NextAllocation"]) if a["NextAllocation"] else None
            if nxt is None and a["DesiredStatus"] != "run":
                continue
            if nxt is None or (nxt.get("DeploymentStatus") or {}).get("Healthy") is not True:
                n += 1
        return n

    # --- evaluations ------------------------------------------------------------------------------
    def process_evals(self) -> None:
        now = time.time_ns()
        for ev in sorted(self.cl.evals.values(), key=lambda e: e["CreateIndex"]):
            # a follow-up eval waits in the broker's delay heap until its WaitUntil (nomad/eval_broker.go)
            if ev["Status"] == "pending" and (ev.get("_wait_until") or 0) <= now:
                reconcile(self.cl, ev)
