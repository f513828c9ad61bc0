"""A simulated Nomad client agent: registers its node, heartbeats, and runs its allocations.

Each `SimClient` is one thread (plus one short-lived thread per task start or kill, so a slow ECS call
never delays heartbeats). It follows the client's event sequences (doc 6 and 10.10): Received ->
Task Setup -> Started (TaskHandle set) for a start or a recovery; Killing -> Terminated -> Killed, then
`complete`, for a kill; DETACH (leave the ECS task alone) when the alloc is migrating or lost, a normal
kill (ECS StopTask) otherwise. `kill()` is `kill -9` of the agent: heartbeats just stop.
"""

from __future__ import annotations

import os
import threading
import time

from tests.fakenomad.model import TERMINAL_CLIENT, Cluster, new_task_state, task_event
from tests.fakenomad.runtime import RuntimeError_, decode_driver_state
from tests.fakenomad.scheduler import unblock
from tests.fakenomad.wire import go_duration_string, rfc3339nano


def driver_info(detected: bool = True, healthy: bool = True, description: str | None = None) -> dict:
    """Node.Drivers["ecs"] as a client fingerprints it (doc 4.1)."""
    if description is None:
        description = "Healthy" if healthy else ("disabled" if not detected else "failed to fingerprint driver")
    return {"Attributes": {"driver.ecs": "true"} if detected else None, "Detected": detected, "Healthy": healthy,
            "HealthDescription": description, "UpdateTime": rfc3339nano(local=True)}


def _pid_alive(pid: int) -> bool:
    try:
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


class SimClient:
    def __init__(self, cl: Cluster, node_id: str, name: str, http_addr: str, runtime, driver: dict | None = None,
                 pid: int | None = None, on_death=None):
        self.cl = cl
        self.node_id = node_id
        self.name = name
        self.http_addr = http_addr
        self.runtime = runtime
        self.driver = driver or driver_info()
        self.pid = pid
        self.on_death = on_death
        self.alive = False
        self._busy: set[str] = set()
        self._done: set[str] = set()
        self._last_log: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list[threading.Thread] = []

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Register (or re-register) the node and start heartbeating."""
        with self.cl.cond:
            node = self.cl.nodes.get(self.node_id)
            if node is None:
                self.cl.new_node(self.node_id, self.name, self.http_addr, dict(self.driver))
            else:
                index = self.cl.bump("nodes")
                node.update(Status="initializing", StatusUpdatedAt=int(time.time()), _last_heartbeat=time.monotonic())
                node["Drivers"]["ecs"] = dict(self.driver, UpdateTime=rfc3339nano(local=True))
                self.cl.node_event(node, "Node re-registered", "Cluster", index)
                self.cl.stamp(node, index, "nodes")
        self.alive = True
        self._stop.clear()
        self._busy.clear()
        self._done.clear()
        self._thread = threading.Thread(target=self._run, name=f"fakenomad-client-{self.name}", daemon=True)
        self._thread.start()

    def kill(self) -> None:
        """Like `kill -9` of the agent: no more heartbeats, no DETACH, the ECS tasks keep running."""
        self.alive = False
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for w in self._workers:
            w.join(timeout=15)
        self._workers.clear()

    def set_driver(self, **kwargs) -> None:
        """Re-fingerprint: change Drivers.ecs (detected, healthy, description)."""
        self.driver = driver_info(**kwargs)
        with self.cl.cond:
            node = self.cl.nodes[self.node_id]
            index = self.cl.bump("nodes")
            node["Drivers"]["ecs"] = dict(self.driver)
            cl_event = "Driver status changed"
            self.cl.node_event(node, cl_event, "Driver", index, {"driver": "ecs"})
            self.cl.stamp(node, index, "nodes")
            unblock(self.cl)

    # --- the agent loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        t = self.cl.timings
        next_beat = 0.0
        while not self._stop.wait(t.client_tick):
            if self.pid is not None and not _pid_alive(self.pid):
                self.alive = False
                if self.on_death:
                    self.on_death()
                return
            if not self.cl.leader:
                continue
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + t.heartbeat_ttl / 2
            self._sync_allocs()

    def _heartbeat(self) -> None:
        with self.cl.cond:
            node = self.cl.nodes[self.node_id]
            node["_last_heartbeat"] = time.monotonic()
            if node["Status"] != "ready":
                index = self.cl.bump("nodes")
                if node["Status"] == "down":
                    self.cl.node_event(node, "Node reregistered by heartbeat", "Cluster", index)
                node["Status"] = "ready"
                node["StatusUpdatedAt"] = int(time.time())
                self.cl.stamp(node, index, "nodes")
                unblock(self.cl)

    def _sync_allocs(self) -> None:
        actions = []
        with self.cl.cond:
            for a in self.cl.node_allocs(self.node_id):
                aid = a["ID"]
                if aid in self._busy or aid in self._done:
                    continue
                states = a.get("TaskStates") or {}
                all_dead = bool(states) and all(ts["State"] == "dead" for ts in states.values())
                if a["DesiredStatus"] == "run":
                    if a["ClientStatus"] == "pending":
                        actions.append(("start", aid))
                    elif a["ClientStatus"] == "running":
                        actions.append(("monitor", aid))
                elif not all_dead and (a["ClientStatus"] not in TERMINAL_CLIENT or a["ClientStatus"] == "lost"):
                    actions.append(("kill", aid))
                else:
                    self._done.add(aid)
        for action, aid in actions:
            if action == "monitor":
                self._monitor(aid)
                continue
            self._busy.add(aid)
            w = threading.Thread(target=self._work, args=(action, aid), daemon=True,
                                 name=f"fakenomad-{action}-{aid[:8]}")
            self._workers = [x for x in self._workers if x.is_alive()] + [w]
            w.start()

    def _work(self, action: str, aid: str) -> None:
        try:
            (self._start_alloc if action == "start" else self._kill_alloc)(aid)
        finally:
            self._busy.discard(aid)

    # --- helpers that write client-authoritative fields -------------------------------------------
    def _update(self, aid: str, fn) -> bool:
        """Apply `fn(alloc)` under the lock as one client update; False when this agent is dead."""
        with self.cl.cond:
            a = self.cl.allocs.get(aid)
            if not self.alive or a is None:
                return False
            index = self.cl.bump("allocs")
            fn(a)
            a["ModifyTime"] = time.time_ns()
            self.cl.stamp(a, index, "allocs")
            node = self.cl.nodes[self.node_id]
            node["LastAllocUpdateIndex"] = index
            job = self.cl.jobs.get(a["JobID"])
            if job is not None:
                from tests.fakenomad.scheduler import set_job_status

                set_job_status(self.cl, job, index)
            return True

    def _event(self, a: dict, task: str, event: dict, **state) -> None:
        states = a.get("TaskStates") or {}
        ts = states.get(task) or new_task_state()
        ts["Events"] = ((ts["Events"] or []) + [event])[-10:]
        ts.update(state)
        states[task] = ts
        a["TaskStates"] = states

    def _log(self, aid: str, task: str, line: str) -> None:
        with self.cl.cond:
            self.cl.append_log(aid, task, "stdout", f"{rfc3339nano()} {line}\n")

    def _tasks(self, aid: str) -> tuple[dict, list[dict]]:
        with self.cl.cond:
            a = self.cl.allocs[aid]
            group = next(g for g in a["Job"]["TaskGroups"] if g["Name"] == a["TaskGroup"])
            return dict(a), group["Tasks"]

    # --- start / recover ----------------------------------------------------------------------------
    def _start_alloc(self, aid: str) -> None:
        step = self.cl.timings.client_step
        alloc, tasks = self._tasks(aid)
        for task in tasks:
            name = task["Name"]

            def received(a, name=name):
                self._event(a, name, task_event("Received", "Task received by client"))
                a["ClientDescription"] = "No tasks have started"
            if not self._update(aid, received):
                return
            time.sleep(step)
            if not self._update(aid, lambda a, name=name: self._event(
                    a, name, task_event("Task Setup", "Building Task Directory",
                                        {"message": "Building Task Directory"}, Message="Building Task Directory"))):
                return
            time.sleep(step)
            if self.runtime is None:
                self._fail(aid, name, "the fake Nomad was given no task runtime")
                return
            handle = ((alloc.get("TaskStates") or {}).get(name) or {}).get("TaskHandle")
            arn = self.runtime.recover(handle, alloc, task) if handle else None
            try:
                if arn is None:
                    handle, arn = self.runtime.start(alloc, task)
                    self._log(aid, name, f"started ECS task {arn}")
                else:
                    self._log(aid, name, f"recovered ECS task {arn}")
            except RuntimeError_ as exc:
                self._fail(aid, name, str(exc))
                return

            def started(a, name=name, handle=handle):
                self._event(a, name, task_event("Started", "Task started by client"),
                            State="running", StartedAt=rfc3339nano(), TaskHandle=handle)
                if all(ts["State"] == "running" for ts in a["TaskStates"].values()):
                    a["ClientStatus"] = "running"
                    a["ClientDescription"] = "Tasks are running"
                    a["_running_since"] = time.monotonic()
            if not self._update(aid, started):
                return

    def _fail(self, aid: str, name: str, message: str) -> None:
        def failed(a):
            self._event(a, name, task_event("Driver Failure", message, {"driver_error": message},
                                            DriverError=message, FailsTask=True))
            self._event(a, name, task_event("Not Restarting", "Policy allows no restarts",
                                            {"fails_task": "true", "restart_reason": "Policy allows no restarts"},
                                            FailsTask=True, RestartReason="Policy allows no restarts"),
                        State="dead", Failed=True, FinishedAt=rfc3339nano())
            a["ClientStatus"] = "failed"
            a["ClientDescription"] = "Failed tasks"
        self._update(aid, failed)

    def _monitor(self, aid: str) -> None:
        """While running, write a status line to the task's stdout every `monitor_interval`."""
        now = time.monotonic()
        if now - self._last_log.get(aid, 0.0) < self.cl.timings.monitor_interval:
            return
        self._last_log[aid] = now
        with self.cl.cond:
            a = self.cl.allocs.get(aid)
            states = dict((a or {}).get("TaskStates") or {})
        for name, ts in states.items():
            if ts.get("State") == "running" and ts.get("TaskHandle"):
                arn = decode_driver_state(ts["TaskHandle"]["DriverState"]).get("task_arn")
                self._log(aid, name, f"ECS task {arn} is RUNNING")

    # --- kill -----------------------------------------------------------------------------------
    def _kill_alloc(self, aid: str) -> None:
        step = self.cl.timings.client_step
        with self.cl.cond:
            a = self.cl.allocs[aid]
            detach = bool(a["DesiredTransition"].get("Migrate")) or a["ClientStatus"] == "lost"
            states = {k: dict(v) for k, v in (a.get("TaskStates") or {}).items()}
        _, tasks = self._tasks(aid)
        for task in tasks:
            name = task["Name"]
            ts = states.get(name)
            if ts is None or ts["State"] == "dead":
                continue
            started = ts["State"] == "running" and ts.get("TaskHandle")
            if started:
                kt = task.get("KillTimeout") or 0
                if not self._update(aid, lambda a, name=name, kt=kt: self._event(
                        a, name, task_event("Killing", f"Sent interrupt. Waiting {go_duration_string(kt)} before "
                                            "force killing", {"kill_timeout": go_duration_string(kt)},
                                            KillTimeout=kt))):
                    return
                arn = decode_driver_state(ts["TaskHandle"]["DriverState"]).get("task_arn")
                if detach:
                    try:
                        self.runtime.detach(ts["TaskHandle"], aid, name)
                        self._log(aid, name, f"detached from ECS task {arn}; it keeps running")
                    except Exception as exc:  # the kill still completes; record why
                        self._log(aid, name, f"failed to detach from ECS task {arn}: {exc}")
                else:
                    try:
                        self.runtime.stop(ts["TaskHandle"], aid, name)
                        self._log(aid, name, f"stopped ECS task {arn}")
                    except Exception as exc:  # the kill still completes; record why
                        self._log(aid, name, f"failed to stop ECS task {arn}: {exc}")
                time.sleep(step)
                self._update(aid, lambda a, name=name: self._event(
                    a, name, task_event("Terminated", "Exit Code: 0",
                                        {"exit_code": "0", "signal": "0", "oom_killed": "false"})))
                self._update(aid, lambda a, name=name: self._event(
                    a, name, task_event("Killed", "Task successfully killed"), State="dead",
                    FinishedAt=rfc3339nano()))
            else:
                self._update(aid, lambda a, name=name: a["TaskStates"][name].update(
                    State="dead", FinishedAt=rfc3339nano()))

        def complete(a):
            a["ClientStatus"] = "complete"
            a["ClientDescription"] = "All tasks have completed"
        if self._update(aid, complete):
            self._done.add(aid)

    def describe(self) -> str:
        return f"client {self.name} ({self.node_id}, pid {self.pid or os.getpid()})"
