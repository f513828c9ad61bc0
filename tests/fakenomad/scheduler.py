"""The server side of the simulation: scheduler, drainer, heartbeat timer, health and deployments.

`ServerLoop` ticks every `Timings.tick` and, under the cluster lock: marks nodes whose heartbeats
stopped `down` (lost allocs, node-update evals), marks allocs healthy after `min_healthy_time`, runs the
drainer, then processes pending evaluations with `reconcile` (doc sections 6 and 10.8/10.9).
"""

from __future__ import annotations

import copy
import threading
import time

from tests.fakenomad.model import TERMINAL_CLIENT, Cluster, new_id, new_task_state
from tests.fakenomad.wire import NS, rfc3339nano

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


def _tasks_changed(old_job: dict, new_job: dict, group: str) -> bool:
    def tasks(job):
        g = next((g for g in job["TaskGroups"] if g["Name"] == group), None)
        return None if g is None else g["Tasks"]
    return tasks(old_job) != tasks(new_job)


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


def _stop(cl: Cluster, alloc: dict, index: int, description: str, client_status: str | None = None) -> None:
    alloc["DesiredStatus"] = "stop"
    alloc["DesiredDescription"] = description
    if client_status:
        alloc["ClientStatus"] = client_status
    alloc["AllocModifyIndex"] = index
    alloc["ModifyTime"] = time.time_ns()
    cl.stamp(alloc, index, "allocs")


def _place(cl: Cluster, job: dict, group: dict, name: str, ev: dict, index: int, node: dict,
           prev: dict | None, copy_handle: bool) -> dict:
    task_states = None
    if prev is not None and copy_handle and prev.get("TaskStates"):
        task_states = {t: new_task_state(ts.get("TaskHandle")) for t, ts in prev["TaskStates"].items()}
    dep = cl.latest_deployment(job["ID"])
    dep_id = dep["ID"] if dep and dep["Status"] == "running" and dep["JobVersion"] == job["Version"] else ""
    now = time.time_ns()
    alloc = {
        "ID": new_id(), "Namespace": "default", "EvalID": ev["ID"], "Name": name, "NodeID": node["ID"],
        "NodeName": node["Name"], "JobID": job["ID"], "Job": copy.deepcopy(job), "TaskGroup": group["Name"],
        "AllocatedResources": {"Tasks": {t["Name"]: {"Cpu": {"CpuShares": (t.get("Resources") or {}).get("CPU", 100)},
                                                     "Memory": {"MemoryMB": (t.get("Resources") or {}).get("MemoryMB", 300)}}
                                         for t in group["Tasks"]},
                               "Shared": {"DiskMB": 300}},
        "Resources": None, "SharedResources": None, "TaskResources": None,
        "DesiredStatus": "run", "DesiredDescription": "",
        "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None, "NoShutdownDelay": None},
        "ClientStatus": "pending", "ClientDescription": "", "TaskStates": task_states, "AllocStates": None,
        "PreviousAllocation": prev["ID"] if prev else "", "NextAllocation": "", "DeploymentID": dep_id,
        "DeploymentStatus": None, "RescheduleTracker": None, "NetworkStatus": None, "FollowupEvalID": "",
        "PreemptedAllocations": None, "PreemptedByAllocation": "", "SigningKeyID": "",
        "Metrics": None, "CreateIndex": index, "ModifyIndex": index, "AllocModifyIndex": index,
        "CreateTime": now, "ModifyTime": now,
    }
    cl.allocs[alloc["ID"]] = alloc
    cl.tables["allocs"] = index
    if prev is not None:
        prev["NextAllocation"] = alloc["ID"]
        cl.stamp(prev, index, "allocs")
    if dep_id:
        dep["TaskGroups"][group["Name"]]["PlacedAllocs"] += 1
        cl.stamp(dep, index, "deployment")
    return alloc


def reconcile(cl: Cluster, ev: dict) -> None:
    """Process one evaluation: make the job's allocations match the job (one plan, one index)."""
    index = cl.bump("evals", "allocs", "jobs")
    job = cl.jobs.get(ev["JobID"])
    allocs = cl.job_allocs(ev["JobID"])
    ev["SnapshotIndex"] = index - 1
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
    for group in job["TaskGroups"]:
        gname = group["Name"]
        driver = group["Tasks"][0]["Driver"] if group["Tasks"] else ""
        live = [a for a in allocs if a["TaskGroup"] == gname and a["DesiredStatus"] == "run"]
        # 1. lost (node down) and migrating allocs are stopped; remember which may hand over their handle
        handover: dict[str, tuple[dict, bool]] = {}
        for a in live:
            node = cl.nodes.get(a["NodeID"])
            was_client_terminal = a["ClientStatus"] in TERMINAL_CLIENT
            if node is None or node["Status"] == "down":
                handover[a["Name"]] = (a, not was_client_terminal)
                _stop(cl, a, index, LOST, "lost" if not was_client_terminal else None)
            elif a["DesiredTransition"].get("Migrate"):
                handover[a["Name"]] = (a, not was_client_terminal)
                _stop(cl, a, index, MIGRATING)
        live = [a for a in live if a["DesiredStatus"] == "run"]
        # 2. job version changes: destructive -> stop and replace without a handle; else update in place
        for a in live:
            if a["Job"]["Version"] != job["Version"]:
                if _tasks_changed(a["Job"], job, gname):
                    handover[a["Name"]] = (a, False)
                    _stop(cl, a, index, UPDATING)
                else:
                    a["Job"] = copy.deepcopy(job)
                    cl.stamp(a, index, "allocs")
        live = [a for a in live if a["DesiredStatus"] == "run"]
        # 3. count: stop extras, place missing names
        names = [f'{job["ID"]}.{gname}[{i}]' for i in range(group["Count"])]
        for a in live:
            if a["Name"] not in names:
                _stop(cl, a, index, NOT_NEEDED)
        have = {a["Name"] for a in live if a["Name"] in names}
        missing = [n for n in names if n not in have]
        if missing and ev["TriggeredBy"] in ("job-register", "queued-allocs") and job["Type"] == "service":
            _ensure_deployment(cl, job, index)
        nodes, metric = feasible_nodes(cl, driver)
        for name in missing:
            if not nodes:
                queued[gname] = queued.get(gname, 0) + 1
                failed[gname] = dict(metric, CoalescedFailures=queued[gname] - 1)
                continue
            load = {n["ID"]: sum(1 for a in cl.allocs.values() if a["NodeID"] == n["ID"]
                                 and a["DesiredStatus"] == "run") for n in nodes}
            node = min(nodes, key=lambda n: (load[n["ID"]], n["Name"]))
            prev, may_copy = handover.get(name, (None, False))
            if prev is None:
                prev = _predecessor(cl, job["ID"], name)
                may_copy = bool(prev and prev["ClientStatus"] not in TERMINAL_CLIENT
                                and prev["DesiredTransition"].get("Migrate"))
            _place(cl, job, group, name, ev, index, node, prev, may_copy)
    _finish_eval(cl, ev, index, failed, queued)
    set_job_status(cl, job, index)


def _predecessor(cl: Cluster, job_id: str, name: str) -> dict | None:
    olds = [a for a in cl.job_allocs(job_id) if a["Name"] == name and not a["NextAllocation"]
            and a["DesiredStatus"] != "run"]
    return olds[-1] if olds else None


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
                for job_id in sorted({a["JobID"] for a in allocs_run_on(cl, node["ID"])}):
                    cl.new_eval(cl.jobs.get(job_id), job_id, "node-update", index, node_id=node["ID"])

    # --- health -----------------------------------------------------------------------------------
    def mark_healthy(self) -> None:
        cl = self.cl
        for a in cl.allocs.values():
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

    # --- drainer ----------------------------------------------------------------------------------
    def drain(self) -> None:
        cl = self.cl
        for node in cl.nodes.values():
            strategy = node["DrainStrategy"]
            if strategy is None:
                continue
            running = allocs_run_on(cl, node["ID"])
            if not running:
                index = cl.bump("nodes")
                node["DrainStrategy"] = None
                node["LastDrain"].update(Status="complete", UpdatedAt=rfc3339nano(local=True))
                cl.node_event(node, "Node drain complete", "Drain", index)
                cl.stamp(node, index, "nodes")
                continue
            force = strategy["Deadline"] < 0 or (strategy.get("_force_at") and time.monotonic() >= strategy["_force_at"])
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
        for ev in sorted(self.cl.evals.values(), key=lambda e: e["CreateIndex"]):
            if ev["Status"] == "pending":
                reconcile(self.cl, ev)
