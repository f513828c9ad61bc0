"""A simulated Nomad client agent that drives every task through its node's REAL driver plugin.

It follows Nomad 1.1-1.9's client (paths in Nomad's repository; summary in
docs/nomad-notes.md, "How the client drives a task"):

* `SimClient` (client/client.go): waits for the plugin's first fingerprint, registers the node, heartbeats,
  restores every allocation of its local state DB (`StateDB`, client/state), pulls its allocations from the
  server and runs one `AllocRunner` each. Node.Drivers["ecs"] follows the plugin's Fingerprint stream
  (client.go updateNodeFromDriver) unless a test pinned it (`pin_driver`).
* `AllocRunner` (client/allocrunner/alloc_runner.go): a TaskRunner per task; kills them when the server's
  copy turns terminal; ClientStatus from the task states (getClientStatus).
* `TaskRunner` (client/allocrunner/taskrunner/task_runner.go): StartTask, then WaitTask opened at once and
  kept open for the task's life. When WaitTask returns while the allocation should run: a `Terminated`
  event (exit code, signal, the driver's message), DestroyTask(force) (clearDriverHandle), then the restart
  tracker (`RestartTracker`, restarts/restarts.go): a new StartTask with a new task id, or `Not Restarting`
  and a failed task. Kill (handleKill/killTask): `Killing`, StopTask with kill_timeout capped by
  max_kill_timeout, retried with Nomad's backoff (scaled by `Timings.kill_backoff_scale`), ErrTaskNotFound
  counts as done, then it blocks on WaitTask until the task is dead (forever if the stop never works, as
  Nomad does); the allocation is complete only then. The remote-task hook (remotetask_hook.go) switches
  the kill signal to DETACH when the allocation is lost or migrating, and on a replacement allocation
  recovers the propagated handle (RecoverTask with a NEW task id, InspectTask; a failure is soft: StartTask).
* Restore (task_runner.go Restore/restoreHandle/Run): RecoverTask with the saved handle and the OLD task id
  for every saved handle, dead tasks included; a dead task then gets DestroyTask(id, force=true); a failed
  RecoverTask of a running task gets DestroyTask(force) and waits for the servers. On Nomad < 1.6 a
  restored allocation's "running" update reaches the server before the client pulls it (so a lost
  allocation is then stopped normally, not detached); 1.6+ sends nothing for an unchanged allocation.

`kill()` is `kill -9` of the agent (or its SIGTERM: Nomad's client shutdown leaves tasks running too):
threads stop, open WaitTask calls are cancelled, nothing is sent; the plugin process is left to its owner.
Each task's stdout is a regular file `<alloc_dir>/<alloc>/alloc/logs/<task>.stdout.0` the plugin appends to
(Nomad's is a logmon FIFO); the client copies new output into the fake's log store (what logmon does).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import secrets
import threading
import time
from pathlib import Path

import grpc
import psutil

from driver.pb import driver_pb2
from tests.fakenomad.model import TERMINAL_CLIENT, Cluster, new_task_state, task_event
from tests.fakenomad.plugin_runtime import DETACH, UNREADABLE_STATE, DriverError, PluginGone, TaskNotFound
from tests.fakenomad.scheduler import set_job_status, unblock
from tests.fakenomad.wire import NS, go_duration_string, rfc3339nano

# task_runner.go killTask: killFailureLimit, killBackoffBaseline, killBackoffLimit
KILL_FAILURE_LIMIT = 5
KILL_BACKOFF_BASELINE = 5.0
KILL_BACKOFF_LIMIT = 120.0
# restarts/restarts.go
REASON_WITHIN_POLICY = "Restart within policy"
REASON_NO_RESTARTS = "Policy allows no restarts"
REASON_UNRECOVERABLE = "Error was unrecoverable"
REASON_DELAY = "Exceeded allowed attempts, applying a delay"
JITTER = 0.25


def driver_info(detected: bool = True, healthy: bool = True, description: str | None = None,
                attributes: dict | None = None) -> dict:
    """Node.Drivers["ecs"] (structs.DriverInfo) as the client reports it."""
    if description is None:
        description = "Healthy" if healthy else ("disabled" if not detected else "failed to fingerprint driver")
    attrs = dict(attributes or {}) if detected else None
    if attrs is not None:
        attrs.setdefault("driver.ecs", "true")
    return {"Attributes": attrs, "Detected": detected, "Healthy": healthy,
            "HealthDescription": description, "UpdateTime": rfc3339nano(local=True)}


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


class AgentStopped(Exception):
    """The agent died or stopped: a runner leaves everything as it is."""


def client_status(states: dict) -> tuple[str, str]:
    """alloc_runner.go getClientStatus."""
    kinds = {"failed" if ts["State"] == "dead" and ts["Failed"] else ts["State"] for ts in states.values()}
    if "failed" in kinds:
        return "failed", "Failed tasks"
    if "pending" in kinds:
        return "pending", "No tasks have started"
    if "running" in kinds:
        return "running", "Tasks are running"
    if "dead" in kinds:
        return "complete", "All tasks have completed"
    return "pending", ""


# --- the local state DB ----------------------------------------------------------------------------------
class StateDB:
    """The client's local state (client/state/db_bolt.go, here one JSON file or memory): per allocation
    the client's copy of it and, per task, the driver TaskHandle (serialized proto: config with the task
    id, version, driver state) and the TaskState. A task's handle is never cleared when it dies or is
    detached (task_runner_getters.go), so a restart restores dead tasks too."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self.allocs: dict[str, dict] = {}
        self.lock = threading.RLock()
        if self.path is not None and self.path.exists():
            self.allocs = json.loads(self.path.read_text() or "{}").get("allocs", {})

    def put_alloc(self, alloc: dict) -> dict:
        with self.lock:
            entry = self.allocs.setdefault(alloc["ID"], {"alloc": None, "tasks": {}})
            entry["alloc"] = {k: copy.deepcopy(v) for k, v in alloc.items() if not k.startswith("_")}
            return entry

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            text = json.dumps({"allocs": self.allocs})
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, self.path)


def encode_handle(handle: driver_pb2.TaskHandle) -> str:
    return base64.b64encode(handle.SerializeToString()).decode()


def decode_handle(text: str) -> driver_pb2.TaskHandle:
    h = driver_pb2.TaskHandle()
    h.ParseFromString(base64.b64decode(text))
    return h


def api_handle(handle: driver_pb2.TaskHandle) -> dict:
    """TaskState.TaskHandle as the servers hold it: {Version, DriverState} only (task_runner.go UpdateState)."""
    return {"Version": handle.version, "DriverState": base64.b64encode(handle.driver_state).decode()}


# --- the restart tracker -----------------------------------------------------------------------------------
class RestartTracker:
    """client/allocrunner/taskrunner/restarts/restarts.go: attempts within interval, delay + 25% jitter,
    mode fail/delay; service jobs restart after a successful exit too. Delays are multiplied by `scale`."""

    def __init__(self, policy: dict | None, batch: bool, scale: float):
        p = policy or {}
        self.attempts = int(p.get("Attempts", 2))
        self.interval = (p.get("Interval") or 0) / NS
        self.delay = (p.get("Delay") or 0) / NS
        self.mode = p.get("Mode") or "fail"
        self.on_success = not batch
        self.scale = scale
        self.count = 0
        self.started = time.monotonic()

    def _jitter(self) -> float:
        return (self.delay + random.random() * self.delay * JITTER) * self.scale

    def decide(self, start_error: DriverError | None = None, exit_ok: bool = False) -> tuple[str, float, str]:
        """("restart", delay, reason) | ("fail", 0, reason) | ("done", 0, "")."""
        if self.attempts == 0:
            if start_error is None and exit_ok and not self.on_success:
                return "done", 0.0, ""
            return "fail", 0.0, REASON_NO_RESTARTS
        now = time.monotonic()
        end = self.started + self.interval
        if now > end:
            self.count, self.started = 0, now
            end = now + self.interval
        self.count += 1
        if start_error is not None and not start_error.recoverable:
            return "fail", 0.0, REASON_UNRECOVERABLE
        if start_error is None and exit_ok and not self.on_success:
            return "done", 0.0, ""
        if self.count > self.attempts:
            if self.mode == "fail":
                return "fail", 0.0, (f"Exceeded allowed attempts {self.attempts} in interval "
                                     f"{go_duration_string(int(self.interval * NS))} and mode is \"fail\"")
            return "restart", max(0.0, end - now) * self.scale, REASON_DELAY
        return "restart", self._jitter(), REASON_WITHIN_POLICY


# --- runners ---------------------------------------------------------------------------------------------
class TaskRunner:
    """One task of one allocation (task_runner.go); its thread runs `run`."""

    def __init__(self, ar: "AllocRunner", task: dict, local: dict, restored: bool):
        self.ar = ar
        self.client = ar.client
        self.task = task
        self.name = task["Name"]
        self.local = local               # StateDB entry: {"handle": b64 proto | None, "state": TaskState}
        self.restored = restored
        self.handle: driver_pb2.TaskHandle | None = None    # the live driver handle (tr.handle)
        self.kill_requested = threading.Event()
        self.exited = threading.Event()  # set when the open WaitTask returned
        self.cv = threading.Condition()
        self.phase = "init"              # init | starting | waiting | delay | done
        self.wait_servers = False        # a running task whose restore failed waits for the servers
        group = ar.group()
        self.tracker = RestartTracker(group.get("RestartPolicy"), ar.alloc["Job"].get("Type") == "batch",
                                      self.client.cl.timings.restart_delay_scale)
        self.thread = threading.Thread(target=self.run, daemon=True,
                                       name=f"fakenomad-task-{ar.alloc_id[:8]}-{self.name}")

    # --- helpers ------------------------------------------------------------------------------------
    @property
    def plugin(self):
        if self.client.plugin is None:
            raise DriverError("the fake Nomad was given no task runtime (plugin) for this node")
        return self.client.plugin

    def _set_phase(self, phase: str) -> None:
        with self.cv:
            self.phase = phase
            self.cv.notify_all()

    def _emit(self, event: dict | None = None, **state) -> None:
        """task_runner.go UpdateState/EmitEvent: append the event (last 10), apply state, sync to servers."""
        def fn(ts):
            if event is not None:
                ts["Events"] = ((ts["Events"] or []) + [event])[-10:]
                if event["FailsTask"]:
                    ts["Failed"] = True
                if event["Type"] == "Restarting":
                    ts["Restarts"] += 1
                    ts["LastRestart"] = rfc3339nano()
            ts.update(state)
        if not self.client.task_update(self.ar, self.name, fn):
            raise AgentStopped()

    def _sleep(self, seconds: float, until: threading.Event | None = None) -> None:
        """Sleep, woken early by `until`; raises AgentStopped when the agent goes away."""
        deadline = time.monotonic() + seconds
        while True:
            self.client.check_alive()
            left = deadline - time.monotonic()
            if left <= 0 or (until is not None and until.is_set()):
                return
            (until or self.client.stopping).wait(min(left, 0.05))

    def _task_config(self, driver_config: bytes = b"") -> driver_pb2.TaskConfig:
        """task_runner.go buildTaskConfig: a new id `<alloc>/<task>/<8 hex>` for every start."""
        alloc = self.ar.alloc
        logs = self.client.alloc_dir / alloc["ID"] / "alloc" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stdout = logs / f"{self.name}.stdout.0"
        stdout.touch()
        (logs / f"{self.name}.stderr.0").touch()
        return driver_pb2.TaskConfig(
            id=f"{alloc['ID']}/{self.name}/{secrets.token_hex(4)}", name=self.name, alloc_id=alloc["ID"],
            job_name=alloc["JobID"], task_group_name=alloc["TaskGroup"], msgpack_driver_config=driver_config,
            alloc_dir=str(self.client.alloc_dir / alloc["ID"]), stdout_path=str(stdout),
            stderr_path=str(logs / f"{self.name}.stderr.0"))

    def _set_handle(self, handle: driver_pb2.TaskHandle | None) -> None:
        """Keep the driver handle, and persist it locally (never cleared on death: task_runner_getters.go)."""
        self.handle = handle
        if handle is not None:
            with self.client.db.lock:
                self.local["handle"] = encode_handle(handle)
            self.client.db.save()

    def _clear_handle(self) -> None:
        """task_runner.go clearDriverHandle: DestroyTask(id, force=true), errors ignored."""
        if self.handle is None:
            return
        task_id, self.handle = self.handle.config.id, None
        try:
            self.plugin.destroy_task(task_id, force=True)
        except DriverError as exc:
            self.client.log(f"task {task_id}: DestroyTask failed (ignored): {exc}")

    # --- the run loop -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except AgentStopped:
            pass
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: keep it visible to tests
            self.client.errors.append(f"{self.ar.alloc_id}/{self.name}: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._set_phase("done")
            self.ar.task_done()

    def restore(self) -> None:
        """task_runner.go Restore -> restoreHandle (called synchronously at agent start, before Run)."""
        saved = self.local.get("handle")
        if not saved:
            return
        handle = decode_handle(saved)
        try:
            self.plugin.recover_task(handle)        # the OLD task id and config (handle.config)
            self.handle = handle
            return
        except DriverError as exc:
            self.client.log(f"task {handle.config.id}: RecoverTask failed: {exc}")
        if self.local["state"]["State"] == "running":
            try:   # a running task that cannot be recovered is destroyed, then started after the servers answer
                self.plugin.destroy_task(handle.config.id, force=True)
            except DriverError as exc:
                self.client.log(f"task {handle.config.id}: DestroyTask after failed restore: {exc}")
            self.wait_servers = True

    def _run(self) -> None:
        if self.restored and self.local["state"]["State"] == "dead":
            self._clear_handle()                   # Run: an already dead task gets its handle cleared
            return
        if self.wait_servers:                      # 1.1.3+: "failed to restore task", wait for the servers
            self._emit(task_event("Failed Restoring Task", "failed to restore task; will not run until server "
                                  "is contacted", Message="failed to restore task; will not run until server "
                                  "is contacted"))
            while not self.client.synced.is_set():
                self._sleep(0.05)
        step = self.client.cl.timings.client_step
        if not self.restored:
            self.ar.received(self.name)
            self._sleep(step)
            self._emit(task_event("Task Setup", "Building Task Directory", {"message": "Building Task Directory"},
                                  Message="Building Task Directory"))
            self._sleep(step)
        first = not self.restored and self._remote_tasks()
        while True:
            self.client.check_alive()
            if self.kill_requested.is_set() and self.handle is None:
                return self._dead_by_kill()
            if self.handle is None:
                self._set_phase("starting")
                error = self._start(handover=first)
                first = False
                if error is not None:
                    self._set_phase("init")
                    if not self._after_exit(start_error=error):
                        return
                    continue
            self.exited.clear()
            result = self._wait()
            self.exited.set()
            self._terminated(result)
            self._clear_handle()
            if self.kill_requested.is_set():
                return self._dead_by_kill()
            ok = result is not None and result.result.exit_code == 0 and result.result.signal == 0 and not result.err
            if not self._after_exit(exit_ok=ok):
                return

    def _remote_tasks(self) -> bool:
        """initDriver (task_runner_hooks.go initHooks): the remote-task hook is installed when the driver's
        Capabilities say remote_tasks, and Nomad still has remote tasks (removed in 1.10, PR #24909)."""
        if self.client.cl.vt >= (1, 10) or self.client.plugin is None:
            return False
        try:
            self.ar.remote = self.plugin.capabilities().remote_tasks
        except DriverError:
            self.ar.remote = False
        return self.ar.remote

    def _start(self, handover: bool) -> DriverError | None:
        """runDriver (and before it the remote-task hook's Prestart for a replacement allocation)."""
        if handover and self._handover():
            return None
        try:
            cfg = self._task_config(self.plugin.encode_task_config(self.task.get("Config")))
        except DriverError as exc:
            err = exc
        except Exception as exc:  # CtyError: Nomad reports the config error before the plugin sees anything
            err = DriverError(f"failed to decode driver config: {exc}")
        else:
            try:
                handle = self.plugin.start_task(cfg)
            except PluginGone:
                self.client.check_alive()
                raise
            except DriverError as exc:
                err = exc
            else:
                self._set_handle(handle)
                self._started(handle)
                return None
        message = str(err)
        self._emit(task_event("Driver Failure", message, {"driver_error": message}, DriverError=message))
        return err

    def _handover(self) -> bool:
        """remotetask_hook.go Prestart: the server copied the previous allocation's {Version, DriverState};
        RecoverTask it under a NEW task id (no msgpack config), InspectTask, and emit Started. A failure is
        soft (logged); the caller then starts a new task."""
        propagated = self.local["state"].get("TaskHandle")
        if not propagated or not propagated.get("DriverState") or self.client.plugin is None:
            return False
        state = base64.b64decode(propagated["DriverState"])
        if getattr(self.client.runtime, "recover_starts_new", False):
            state = UNREADABLE_STATE
        handle = driver_pb2.TaskHandle(version=int(propagated.get("Version") or 0), config=self._task_config(),
                                       state=driver_pb2.UNKNOWN, driver_state=state)
        try:
            self.plugin.recover_task(handle)
            self.plugin.inspect_task(handle.config.id)
        except DriverError as exc:
            self.client.log(f"remote task hook: failed to recover the propagated handle: {exc}")
            return False
        handle.state = driver_pb2.RUNNING
        self._set_handle(handle)
        self._started(handle)
        return True

    def _started(self, handle: driver_pb2.TaskHandle) -> None:
        ts = self.local["state"]
        self._emit(task_event("Started", "Task started by client"), State="running",
                   StartedAt=ts.get("StartedAt") or rfc3339nano(), FinishedAt=None, TaskHandle=api_handle(handle))

    def _wait(self):
        """WaitTask, open for the task's whole life; None if it failed (logged, as task_runner.go does)."""
        task_id = self.handle.config.id
        try:
            future = self.plugin.wait_task(task_id)
        except DriverError as exc:
            self.client.log(f"task {task_id}: WaitTask failed: {exc}")
            return None
        self._set_phase("waiting")
        while True:
            try:
                return future.result(timeout=0.1)
            except grpc.FutureTimeoutError:
                if not self.client.alive:
                    future.cancel()
                    raise AgentStopped() from None
            except grpc.FutureCancelledError:
                raise AgentStopped() from None
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    # ErrPluginShutdown. Nomad relaunches the plugin and recovers (protocol F.5); the fake's
                    # plugins only go away with their agent, so wait for that.
                    while True:
                        self._sleep(0.1)
                self.client.log(f"task {task_id}: WaitTask failed: {exc.details()}")
                return None

    def _terminated(self, resp) -> None:
        """emitExitResultEvent: Terminated with exit code, signal and the driver's message."""
        if resp is None:
            return
        r, err = resp.result, resp.err
        parts = [f"Exit Code: {r.exit_code}"] + ([f"Signal: {r.signal}"] if r.signal else []) + \
            ([f"Exit Message: {json.dumps(err)}"] if err else [])
        details = {"exit_code": str(r.exit_code), "signal": str(r.signal), "oom_killed": str(r.oom_killed).lower()}
        if err:
            details["exit_message"] = err
        self._emit(task_event("Terminated", ", ".join(parts), details, ExitCode=r.exit_code, Signal=r.signal,
                              Message=err))

    def _after_exit(self, start_error: DriverError | None = None, exit_ok: bool = False) -> bool:
        """task_runner.go shouldRestart: True to start again (after the delay), False when the task is dead."""
        decision, delay, reason = self.tracker.decide(start_error, exit_ok)
        if decision == "restart":
            display = f"Task restarting in {go_duration_string(int(delay * NS))}"
            if reason != REASON_WITHIN_POLICY:
                display = f"{reason} - {display}"
            self._emit(task_event("Restarting", display,
                                  {"restart_reason": reason, "start_delay": str(int(delay * NS))},
                                  RestartReason=reason, StartDelay=int(delay * NS)), State="pending")
            self._set_phase("delay")
            self._sleep(delay, self.kill_requested)
            return True
        if decision == "fail":
            self._emit(task_event("Not Restarting", reason, {"restart_reason": reason, "fails_task": "true"},
                                  RestartReason=reason, FailsTask=True), State="dead", FinishedAt=rfc3339nano())
        else:
            self._emit(None, State="dead", FinishedAt=rfc3339nano())
        return False

    def _dead_by_kill(self) -> None:
        ran = bool(self.local["state"].get("StartedAt"))
        if ran:
            self._emit(task_event("Killed", "Task successfully killed"), State="dead", FinishedAt=rfc3339nano())
        else:
            self._emit(None, State="dead", FinishedAt=rfc3339nano())

    # --- kill ---------------------------------------------------------------------------------------
    def kill(self) -> None:
        """TaskRunner.Kill + handleKill/killTask (runs on the alloc runner's kill thread)."""
        with self.cv:
            if self.kill_requested.is_set():
                return
            self.kill_requested.set()
            # wait out a StartTask in flight, and a restored handle's run loop reaching WaitTask
            while self.client.alive and (self.phase == "starting" or (self.phase == "init" and self.handle)):
                self.cv.wait(0.05)
            phase = self.phase
        if phase != "waiting" or self.handle is None:
            return    # not running: the run loop marks it dead
        handle = self.handle
        kt = min((self.task.get("KillTimeout") or 5 * NS) / NS,
                 self.client.max_kill_timeout or self.client.cl.timings.max_kill_timeout)
        kt_ns = int(kt * NS)
        self._emit(task_event("Killing", f"Sent interrupt. Waiting {go_duration_string(kt_ns)} before force killing",
                              {"kill_timeout": go_duration_string(kt_ns)}, KillTimeout=kt_ns))
        sig = self.ar.kill_signal()
        scale = self.client.cl.timings.kill_backoff_scale
        for attempt in range(KILL_FAILURE_LIMIT):
            if self.exited.is_set():
                break    # WaitTask already returned: nothing left to stop
            try:
                self.plugin.stop_task(handle.config.id, kt, sig)
                break
            except TaskNotFound:
                break
            except PluginGone:
                self.client.check_alive()
                raise
            except DriverError as exc:
                if attempt == KILL_FAILURE_LIMIT - 1:
                    self.client.log(f"task {handle.config.id}: failed to kill task, possible leak: {exc}")
                    break
                backoff = min(KILL_BACKOFF_BASELINE * (1 << (2 * attempt)), KILL_BACKOFF_LIMIT) * scale
                self.client.log(f"task {handle.config.id}: failed to kill task (retry in {backoff:g}s): {exc}")
                self._sleep(backoff, self.exited)
        # then block until WaitTask returns (the run loop emits Terminated and Killed): nothing else here


class AllocRunner:
    """One allocation on this client (alloc_runner.go)."""

    def __init__(self, client: "SimClient", alloc: dict, entry: dict, restored: bool):
        self.client = client
        self.alloc_id = alloc["ID"]
        self.alloc = alloc                # the client's copy: the last one pulled from the servers
        self.entry = entry                # StateDB entry
        self.killing = False
        self.remote = client.cl.vt < (1, 10)   # the remote-task hook is installed (TaskRunner._remote_tasks)
        self.finished = threading.Event()
        self._done_count = 0
        self.tasks: list[TaskRunner] = []
        for task in self.group()["Tasks"]:
            local = entry["tasks"].setdefault(task["Name"], {"handle": None, "state": None})
            if local["state"] is None:   # NewTaskRunner: the task state as the alloc arrived (propagated handle)
                server_ts = (alloc.get("TaskStates") or {}).get(task["Name"])
                local["state"] = copy.deepcopy(server_ts) if server_ts else new_task_state()
            self.tasks.append(TaskRunner(self, task, local, restored))

    def group(self) -> dict:
        return next(g for g in self.alloc["Job"]["TaskGroups"] if g["Name"] == self.alloc["TaskGroup"])

    def received(self, task: str) -> None:
        def fn(ts):
            ts["Events"] = ((ts["Events"] or []) + [task_event("Received", "Task received by client")])[-10:]
        if not self.client.task_update(self, task, fn):
            raise AgentStopped()

    def start(self) -> None:
        for tr in self.tasks:
            tr.thread.start()

    def update(self, alloc: dict) -> None:
        """alloc_runner.go Update: keep the servers' copy; a terminal one kills the tasks."""
        self.alloc = alloc
        terminal = alloc["DesiredStatus"] != "run" or alloc["ClientStatus"] in TERMINAL_CLIENT
        if terminal and not self.killing and not self.finished.is_set():
            self.killing = True
            threading.Thread(target=self._kill, daemon=True, name=f"fakenomad-kill-{self.alloc_id[:8]}").start()

    def _kill(self) -> None:
        try:
            for tr in self.tasks:
                tr.kill()
        except AgentStopped:
            pass
        except DriverError as exc:   # the plugin went away mid-kill
            self.client.log(f"alloc {self.alloc_id}: kill interrupted: {exc}")

    def destroy(self) -> None:
        """alloc_runner.go Destroy: kill the tasks (a normal kill), then drop the allocation from the state DB."""
        def run():
            self._kill()
            self.finished.wait()
            with self.client.db.lock:
                self.client.db.allocs.pop(self.alloc_id, None)
            self.client.db.save()
        self.killing = True
        threading.Thread(target=run, daemon=True, name=f"fakenomad-destroy-{self.alloc_id[:8]}").start()

    def kill_signal(self) -> str:
        """remotetask_hook.go PreKilling/setSignal: DETACH when the alloc is lost or migrating."""
        a = self.alloc
        if not self.remote:
            return ""
        if a["ClientStatus"] == "lost" or (a.get("DesiredTransition") or {}).get("Migrate"):
            return DETACH
        return ""

    def task_done(self) -> None:
        with self.client.lock:
            self._done_count += 1
            if self._done_count >= len(self.tasks):
                self.finished.set()


class SimClient:
    def __init__(self, cl: Cluster, node_id: str, name: str, http_addr: str, runtime, driver: dict | None = None,
                 pid: int | None = None, on_death=None, data_dir: Path | None = None):
        self.cl = cl
        self.node_id = node_id
        self.name = name
        self.http_addr = http_addr
        self.runtime = runtime
        self.pinned_driver = driver          # a test's fixed Drivers["ecs"]; None: from the fingerprint
        self.pid = pid
        self.on_death = on_death
        self.max_kill_timeout: float | None = None   # the agent's client.max_kill_timeout (else Timings')
        self.alive = False
        self.plugin = None
        self.errors: list[str] = []
        self.messages: list[str] = []
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self.runners: dict[str, AllocRunner] = {}
        self._log_offsets: dict[tuple[str, str], int] = {}
        self._log_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._releaser: threading.Thread | None = None
        self.set_data_dir(data_dir)

    def set_data_dir(self, data_dir: Path | None) -> None:
        self.data_dir = Path(data_dir) if data_dir else None
        if self.data_dir is not None:
            self.db = StateDB(self.data_dir / "client" / "fake-state.json")
            self.alloc_dir = self.data_dir / "alloc"
        else:
            self.db = getattr(self, "db", None) or StateDB()
            base = self.runtime.alloc_dir(self.node_id) if self.runtime is not None else None
            self.alloc_dir = base or Path(os.environ.get("TMPDIR", "/tmp")) / f"fakenomad-{self.node_id[:8]}" / "alloc"

    def log(self, message: str) -> None:
        self.messages.append(f"{rfc3339nano()} {message}")

    # --- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Agent start: the plugin (first fingerprint), register, restore the local state, run."""
        if self._releaser is not None:   # the previous incarnation's death is fully processed first
            self._releaser.join()
            self._releaser = None
        self.stopping.clear()
        self.synced.clear()
        self.runners = {}
        self.plugin = None
        launch_error = None
        if self.runtime is not None:
            self.alloc_dir = self.runtime.alloc_dir(self.node_id) if self.data_dir is None else self.alloc_dir
            try:
                self.plugin = self.runtime.plugin(self.node_id)
            except DriverError as exc:
                launch_error = str(exc)
        if self.pinned_driver is not None:
            driver = dict(self.pinned_driver)
        elif self.plugin is not None:
            driver = driver_info(**self.plugin.driver_info())
        else:
            driver = driver_info(False, False, launch_error or "no driver plugin")
        with self.cl.cond:
            node = self.cl.nodes.get(self.node_id)
            if node is None:
                self.cl.new_node(self.node_id, self.name, self.http_addr, driver)
            else:
                index = self.cl.bump("nodes")
                node.update(Status="initializing", StatusUpdatedAt=int(time.time()), _last_heartbeat=time.monotonic())
                node["Drivers"]["ecs"] = driver
                self.cl.node_event(node, "Node re-registered", "Cluster", index)
                self.cl.stamp(node, index, "nodes")
        self.alive = True
        if self.plugin is not None:
            self.plugin.on_fingerprint = self._fingerprint
        self._restore()
        self._thread = threading.Thread(target=self._run, name=f"fakenomad-client-{self.name}", daemon=True)
        self._thread.start()

    def _restore(self) -> None:
        """client.go restoreState: every allocation of the local state DB, terminal ones included."""
        restored = []
        with self.db.lock:
            entries = [(aid, e) for aid, e in self.db.allocs.items() if e.get("alloc")]
        for aid, entry in entries:
            ar = AllocRunner(self, copy.deepcopy(entry["alloc"]), entry, restored=True)
            self.runners[aid] = ar
            for tr in ar.tasks:
                if self.plugin is not None:
                    tr.restore()
            restored.append(ar)
        if self.cl.vt < (1, 6):
            # Nomad 1.1-1.5: the restored allocation's state goes to the servers before the client pulls them
            for ar in restored:
                self.task_update(ar, None, None)
        for ar in restored:
            ar.start()

    def kill(self) -> None:
        """Like `kill -9` of the agent: no more heartbeats or updates; the ECS tasks and the plugin keep running."""
        self.alive = False
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._release()

    def _release(self) -> None:
        for ar in list(self.runners.values()):
            for tr in ar.tasks:
                if tr.thread.is_alive() and tr.thread is not threading.current_thread():
                    tr.thread.join(timeout=10)
        if self.plugin is not None:
            self.plugin.on_fingerprint = None
        if self.runtime is not None:
            self.runtime.release(self.node_id)

    def check_alive(self) -> None:
        if not self.alive:
            raise AgentStopped()

    # --- the node's driver --------------------------------------------------------------------------
    def pin_driver(self, info: dict | None) -> None:
        """A test fixes Drivers["ecs"] (None: follow the plugin's fingerprint again)."""
        self.pinned_driver = info
        if info is None and self.plugin is not None and self.plugin.fingerprint is not None:
            info = driver_info(**self.plugin.driver_info())
        if info is not None:
            self._set_driver(info)

    def _fingerprint(self, msg) -> None:
        if self.pinned_driver is None and self.alive:
            self._set_driver(driver_info(**self.plugin.driver_info()))

    def _set_driver(self, info: dict) -> None:
        """client.go updateNodeFromDriver: a change of health updates the node, with a Driver event."""
        with self.cl.cond:
            node = self.cl.nodes.get(self.node_id)
            if node is None:
                return
            old = node["Drivers"].get("ecs") or {}
            keys = ("Attributes", "Detected", "Healthy", "HealthDescription")
            if all(old.get(k) == info.get(k) for k in keys):
                return
            index = self.cl.bump("nodes")
            node["Drivers"]["ecs"] = dict(info)
            if old.get("Healthy") != info["Healthy"] or old.get("HealthDescription") != info["HealthDescription"]:
                self.cl.node_event(node, info["HealthDescription"], "Driver", index, {"driver": "ecs"})
            self.cl.stamp(node, index, "nodes")
            unblock(self.cl)

    # --- the agent loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        t = self.cl.timings
        next_beat = 0.0
        while not self.stopping.wait(t.client_tick):
            if self.pid is not None and not _pid_alive(self.pid):
                self.alive = False
                self.stopping.set()
                if self.on_death:
                    self.on_death()
                self._releaser = threading.Thread(target=self._release, daemon=True)
                self._releaser.start()
                return
            self._logmon()
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
        """client.go watchAllocations/runAllocs: new allocations get a runner, known ones the new copy."""
        with self.cl.cond:
            pulled = {a["ID"]: copy.deepcopy({k: v for k, v in a.items() if not k.startswith("_")})
                      for a in self.cl.node_allocs(self.node_id)}
        for aid, alloc in pulled.items():
            ar = self.runners.get(aid)
            if ar is None:
                if alloc["DesiredStatus"] != "run" or alloc["ClientStatus"] in TERMINAL_CLIENT:
                    continue
                entry = self.db.put_alloc(alloc)
                self.db.save()
                ar = AllocRunner(self, alloc, entry, restored=False)
                self.runners[aid] = ar
                ar.start()
            else:
                if alloc.get("AllocModifyIndex") != ar.alloc.get("AllocModifyIndex"):
                    self.db.put_alloc(alloc)      # the client persists each pulled update (alloc_runner.go)
                    self.db.save()
                ar.update(alloc)
        for aid in set(self.runners) - set(pulled):
            self.runners.pop(aid).destroy()       # client.go removeAlloc: the servers forgot it
        self.synced.set()

    def _logmon(self) -> None:
        """What logmon does: the task's stdout file, as the plugin appends to it, into the fake's log store."""
        for ar in list(self.runners.values()):
            self._tail(ar)

    def _tail(self, ar: "AllocRunner") -> None:
        with self._log_lock:
            for tr in ar.tasks:
                path = self.alloc_dir / ar.alloc_id / "alloc" / "logs" / f"{tr.name}.stdout.0"
                key = (ar.alloc_id, tr.name)
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                offset = self._log_offsets.get(key, 0)
                if size <= offset:
                    continue
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(size - offset)
                self._log_offsets[key] = offset + len(data)
                with self.cl.cond:
                    self.cl.append_log(ar.alloc_id, tr.name, "stdout", data.decode(errors="replace"))

    # --- client updates to the servers (Node.UpdateAlloc) --------------------------------------------
    def task_update(self, ar: AllocRunner, task: str | None, fn) -> bool:
        """Apply `fn` to the task's local TaskState, then send the allocation's TaskStates and ClientStatus
        (alloc_runner.go clientAlloc) as one update. False when this agent is dead. The task's output so
        far is copied first (Nomad's logs API reads logmon's files, which never lag the task state)."""
        self._tail(ar)
        with self.cl.cond:
            if not self.alive:
                return False
            with self.db.lock:
                if fn is not None:
                    fn(ar.entry["tasks"][task]["state"])
                states = {name: copy.deepcopy(t["state"]) for name, t in ar.entry["tasks"].items()}
            a = self.cl.allocs.get(ar.alloc_id)
            if a is None:
                return True
            index = self.cl.bump("allocs")
            status, description = client_status(states)
            if status == "running" and a["ClientStatus"] != "running" and "_running_since" not in a:
                a["_running_since"] = time.monotonic()
            a["TaskStates"] = states
            a["ClientStatus"], a["ClientDescription"] = status, description
            a["ModifyTime"] = time.time_ns()
            self.cl.stamp(a, index, "allocs")
            with self.db.lock:
                ar.entry["alloc"].update(ClientStatus=status, ClientDescription=description,
                                         TaskStates=copy.deepcopy(states))
            self.cl.nodes[self.node_id]["LastAllocUpdateIndex"] = index
            job = self.cl.jobs.get(a["JobID"])
            if job is not None:
                set_job_status(self.cl, job, index)
        self.db.save()
        return True

    def describe(self) -> str:
        return f"client {self.name} ({self.node_id}, pid {self.pid or os.getpid()})"
