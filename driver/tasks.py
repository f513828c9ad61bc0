"""The driver's task domain: driver state, the per-task handle, and the task store with its operations.

Plain Python types only (no protos). One `TaskManager` per plugin process holds every tracked task by
Nomad task id and drives ECS through `driver.aws.EcsApi`; one `driver.monitor.EcsMonitor` watches them
all. Remote-task semantics (contract section G):

* StopTask with `DETACH` forgets the task without touching ECS, and so does the DestroyTask after it;
* any other StopTask stops the ECS task and waits for STOPPED within the timeout;
* RecoverTask re-attaches from `driver_state` alone, and succeeds whenever that decodes;
* closing the manager (plugin shutdown) never stops an ECS task.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from driver.aws import AwsError, EcsApi
from driver.taskconfig import TaskConfigError, decode_task_config, run_task_params

DETACH_SIGNAL = "DETACH"
HANDLE_VERSION = 1
STATE_VERSION = 1
STOPPED = "STOPPED"
STOP_REASON_PREFIX = "Stopped by Nomad"
DEFAULT_STOP_TIMEOUT = 5.0  # Nomad's default kill_timeout, used when a caller sends none
EXIT_UNKNOWN = 1  # exit code when ECS gives none for a task that stopped by itself

# RunTask failure reasons worth a retry by Nomad's restart policy (capacity, throttling, agent trouble).
_RECOVERABLE_FAILURES = ("RESOURCE", "CAPACITY", "AGENT", "THROTTL", "LIMIT", "UNAVAILABLE", "TIMEOUT")

Notify = Callable[["TaskHandle", str, dict], None]


class TaskNotFound(LookupError):
    def __init__(self, task_id: str):
        super().__init__(f"task {task_id!r} is not tracked by this plugin")
        self.task_id = task_id


class StartError(Exception):
    """StartTask failed; `recoverable` tells Nomad whether its restart policy may retry."""

    def __init__(self, message: str, recoverable: bool):
        super().__init__(message)
        self.recoverable = recoverable


class StopTimeout(TimeoutError):
    pass


class DriverStateError(ValueError):
    pass


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


def client_token(task_id: str) -> str:
    """RunTask's idempotency token for a Nomad task id (64 ASCII characters)."""
    return hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()


def stop_reason(alloc_id: str, task_name: str) -> str:
    return f"{STOP_REASON_PREFIX}: allocation {alloc_id} task {task_name}"


# --- driver state ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriverState:
    """What a TaskHandle's `driver_state` carries: enough to re-attach with no task config. No secrets."""

    cluster: str
    region: str | None
    task_arn: str
    started_at: datetime
    alloc_id: str = ""
    task_name: str = ""
    container: str | None = None

    def encode(self) -> bytes:
        doc = {"v": STATE_VERSION, "cluster": self.cluster, "region": self.region, "task_arn": self.task_arn,
               "started_at": rfc3339(self.started_at), "alloc_id": self.alloc_id, "task_name": self.task_name,
               "container": self.container}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> "DriverState":
        if not data:
            raise DriverStateError("the task handle has no driver state (nothing to re-attach to)")
        try:
            doc = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DriverStateError(f"driver state is not JSON written by this driver: {exc}") from None
        if not isinstance(doc, dict):
            raise DriverStateError("driver state must be a JSON object")
        version = doc.get("v")
        if version != STATE_VERSION:
            raise DriverStateError(f"driver state version {version!r} is not supported (expected {STATE_VERSION})")
        cluster, arn, region = doc.get("cluster"), doc.get("task_arn"), doc.get("region")
        if not isinstance(cluster, str) or not cluster:
            raise DriverStateError("driver state has no cluster")
        if not isinstance(arn, str) or not arn.startswith("arn:") or ":task/" not in arn:
            raise DriverStateError(f"driver state has no ECS task ARN (task_arn={arn!r})")
        if region is not None and not isinstance(region, str):
            raise DriverStateError("driver state region must be a string or null")
        container = doc.get("container")
        return cls(cluster=cluster, region=region or None, task_arn=arn,
                   started_at=_parse_time(doc.get("started_at")) or datetime.now(timezone.utc),
                   alloc_id=str(doc.get("alloc_id") or ""), task_name=str(doc.get("task_name") or ""),
                   container=container if isinstance(container, str) and container else None)


# --- per-task plumbing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskInfo:
    """Who the task is in Nomad's terms (from the TaskConfig proto)."""

    task_id: str
    name: str = ""
    alloc_id: str = ""
    job: str = ""
    group: str = ""
    stdout_path: str = ""


@dataclass(frozen=True)
class ExitInfo:
    exit_code: int = 0
    signal: int = 0
    err: str | None = None


class TaskOutput:
    """Best-effort line writer for the task's stdout FIFO: never blocks the event loop, never raises.

    Nomad's logmon holds the FIFO's read end; if it is not there yet (ENXIO) or went away (EPIPE) the
    open is retried on the next line. A full FIFO (EAGAIN) drops the line rather than wait."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def write_line(self, text: str) -> bool:
        if not self.path:
            return False
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND | os.O_CLOEXEC)
            except OSError:
                return False
        try:
            os.write(self._fd, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
            return True
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                self.close()
            return False

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


class TaskHandle:
    """One Nomad task and the ECS task it stands for: status, result, output, and its done signal."""

    def __init__(self, info: TaskInfo, state: DriverState, notify: Notify, recovered: bool = False):
        self.info = info
        self.state = state
        self.recovered = recovered
        self.output = TaskOutput(info.stdout_path)
        self.last_status: str | None = None
        self.task_definition_arn: str | None = None
        self.stopped_reason: str | None = None
        self.detached = False
        self.stop_requested = False
        self.result: ExitInfo | None = None
        self.completed_at: datetime | None = None
        self.done = asyncio.Event()
        self.last_line_at = 0.0
        self.missing_count = 0
        self._notify = notify

    @property
    def task_id(self) -> str:
        return self.info.task_id

    @property
    def arn(self) -> str:
        return self.state.task_arn

    @property
    def running(self) -> bool:
        return not self.done.is_set()

    def event(self, message: str, **annotations: str) -> None:
        self._notify(self, message, {"arn": self.arn, **{k: str(v) for k, v in annotations.items()}})

    def line(self, text: str, now: float) -> None:
        self.last_line_at = now
        self.output.write_line(f"[{rfc3339(datetime.now(timezone.utc))}] - {text}")

    def heartbeat(self, now: float) -> None:
        self.line(f"client is remotely monitoring ECS task: {self.arn} with status {self.last_status or 'UNKNOWN'}",
                  now)

    def observe(self, desc: dict, now: float) -> None:
        """Apply one DescribeTasks/RunTask answer for this task."""
        self.missing_count = 0
        self.task_definition_arn = desc.get("taskDefinitionArn") or self.task_definition_arn
        status = desc.get("lastStatus") or "UNKNOWN"
        if status != self.last_status:
            previous, self.last_status = self.last_status, status
            if previous is not None:
                self.line(f"ECS task {self.arn} changed status: {previous} -> {status}", now)
                self.event(f"ECS task status {status}", status=status, previous=previous)
            else:
                self.heartbeat(now)
        if status == STOPPED and self.running:
            self.stopped_reason = desc.get("stoppedReason") or desc.get("stopCode") or "stopped"
            self.finish(self._exit_from(desc), now)

    def observe_missing(self, now: float, confirmations: int) -> None:
        """ECS did not return this task; after `confirmations` cycles in a row it is gone."""
        self.missing_count += 1
        if self.missing_count < confirmations or not self.running:
            return
        self.last_status = "MISSING"
        if self.stop_requested:
            self.stopped_reason = "ECS no longer knows the task (stopped)"
            self.finish(ExitInfo(0), now)
        else:
            self.stopped_reason = "MISSING"
            self.finish(ExitInfo(EXIT_UNKNOWN, err=f"ECS task {self.arn} is MISSING: ECS no longer knows it "
                                                   "(stopped long ago, deleted, or in another cluster/region)"), now)

    def _exit_from(self, desc: dict) -> ExitInfo:
        if self.stop_requested:
            return ExitInfo(0)
        reason = self.stopped_reason
        code = _essential_exit_code(desc.get("containers") or [], self.state.container)
        if code == 0 and desc.get("stopCode") == "EssentialContainerExited":
            return ExitInfo(0)
        return ExitInfo(EXIT_UNKNOWN if code is None else code,
                        err=f"ECS task stopped outside Nomad: {reason}")

    def finish(self, result: ExitInfo, now: float) -> None:
        if self.done.is_set():
            return
        self.result = result
        self.completed_at = datetime.now(timezone.utc)
        self.done.set()
        if self.detached:
            return
        why = self.stopped_reason or "stopped"
        self.line(f"ECS task {self.arn} finished ({why}), exit code {result.exit_code}", now)
        self.event(f"ECS task stopped: {why}", reason=why, exit_code=str(result.exit_code))
        self.output.close()

    def detach(self, now: float) -> None:
        if self.detached:
            return
        self.detached = True
        if self.running:
            self.line(f"detached from ECS task {self.arn}; it keeps running on ECS", now)
            self.event("Detached from ECS task; it keeps running (remote task handed over)")
            self.finish(ExitInfo(0), now)
        self.output.close()


def _essential_exit_code(containers: list[dict], essential: str | None) -> int | None:
    stopped = [c for c in containers if c.get("lastStatus") == STOPPED and isinstance(c.get("exitCode"), int)]
    if essential:
        for c in stopped:
            if c.get("name") == essential:
                return c["exitCode"]
        return None
    if len(containers) == 1 and stopped:
        return stopped[0]["exitCode"]
    nonzero = [c["exitCode"] for c in stopped if c["exitCode"] != 0]
    return nonzero[0] if nonzero else None


# --- the store and its operations ------------------------------------------------------------------

class TaskManager:
    """Every task this plugin process tracks, keyed by Nomad task id, and the operations on them."""

    def __init__(self, ecs: EcsApi, notify: Notify, poll_interval: float = 5.0,
                 clock: Callable[[], float] | None = None):
        from driver.monitor import EcsMonitor

        self.ecs = ecs
        self.notify = notify
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self.monitor = EcsMonitor(ecs, poll_interval=poll_interval, clock=self._clock)
        self._tasks: dict[str, TaskHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def reconfigure(self, ecs: EcsApi, poll_interval: float) -> None:
        """A later SetConfig: use its ECS client and poll interval for every task from now on."""
        self.ecs = ecs
        self.monitor.reconfigure(ecs, poll_interval)

    # -- lookups
    def get(self, task_id: str) -> TaskHandle:
        handle = self._tasks.get(task_id)
        if handle is None:
            raise TaskNotFound(task_id)
        return handle

    def ids(self) -> list[str]:
        return list(self._tasks)

    # -- StartTask
    async def start(self, info: TaskInfo, driver_config: bytes) -> TaskHandle:
        """Run the ECS task for `info`; a repeated call with the same task id returns the same handle."""
        if not info.task_id:
            raise StartError("the task config has no id", recoverable=False)
        # One start at a time per task id (dropped by DestroyTask): a retry waits, then finds the handle.
        async with self._locks.setdefault(info.task_id, asyncio.Lock()):
            if info.task_id in self._tasks:
                return self._tasks[info.task_id]
            handle = await self._run(info, driver_config)
            self._track(handle)
            handle.event("Started ECS task", cluster=handle.state.cluster,
                         task_definition=handle.task_definition_arn or "")
            return handle

    async def _run(self, info: TaskInfo, driver_config: bytes) -> TaskHandle:
        try:
            cfg = decode_task_config(driver_config)
        except TaskConfigError as exc:
            raise StartError(str(exc), recoverable=False) from None
        params = run_task_params(cfg, alloc_id=info.alloc_id, job=info.job, group=info.group, task=info.name,
                                 client_token=client_token(info.task_id))
        try:
            resp = await self.ecs.run_task(**params)
        except AwsError as exc:
            raise StartError(f"ECS RunTask failed: {exc}", recoverable=exc.transient) from None
        tasks, failures = resp.get("tasks") or [], resp.get("failures") or []
        if not tasks:
            raise _failure_error(failures)
        desc = tasks[0]
        state = DriverState(cluster=self.ecs.target.cluster, region=self.ecs.target.region,
                            task_arn=desc["taskArn"], started_at=_started_at(desc), alloc_id=info.alloc_id,
                            task_name=info.name, container=await self._essential_container(desc))
        handle = TaskHandle(info, state, self.notify)
        handle.observe(desc, self._clock())
        return handle

    async def _essential_container(self, desc: dict) -> str | None:
        containers = desc.get("containers") or []
        if len(containers) == 1:
            return containers[0].get("name")
        try:
            td = await self.ecs.describe_task_definition(desc.get("taskDefinitionArn") or "")
        except AwsError:
            return None  # best effort: the exit code then comes from any container that failed
        for c in td.get("containerDefinitions") or []:
            if c.get("essential", True):
                return c.get("name")
        return None

    # -- RecoverTask
    async def recover(self, info: TaskInfo, driver_state: bytes) -> TaskHandle:
        """Re-attach to the ECS task in `driver_state`; a task id already tracked is left as it is."""
        if not info.task_id:
            raise DriverStateError("the task handle has no task id (handle.config.id)")
        if info.task_id in self._tasks:
            return self._tasks[info.task_id]
        state = DriverState.decode(driver_state)
        info = TaskInfo(info.task_id, info.name or state.task_name, info.alloc_id or state.alloc_id,
                        info.job, info.group, info.stdout_path)
        handle = TaskHandle(info, state, self.notify, recovered=True)
        self._track(handle)
        handle.line(f"recovered ECS task {state.task_arn} (cluster {state.cluster}); monitoring resumes",
                    self._clock())
        handle.event("Recovered ECS task", cluster=state.cluster)
        return handle

    def _track(self, handle: TaskHandle) -> None:
        self._tasks[handle.task_id] = handle
        if handle.running:
            self.monitor.watch(handle)

    # -- WaitTask
    async def wait(self, task_id: str) -> ExitInfo:
        handle = self.get(task_id)
        await handle.done.wait()
        return handle.result or ExitInfo(0)

    # -- StopTask
    async def stop(self, task_id: str, timeout: float, signal: str) -> None:
        handle = self._tasks.get(task_id)
        if handle is None:
            return  # unknown: nothing to stop (Nomad retries failed stops, so this must succeed)
        now = self._clock()
        if signal == DETACH_SIGNAL:
            handle.detach(now)
            self.monitor.unwatch(handle)
            return
        if not handle.running:
            return
        await self._request_stop(handle)
        try:
            await asyncio.wait_for(handle.done.wait(), timeout if timeout > 0 else DEFAULT_STOP_TIMEOUT)
        except asyncio.TimeoutError:
            raise StopTimeout(f"timed out after {timeout:g}s waiting for ECS task {handle.arn} to stop "
                              f"(last status {handle.last_status or 'UNKNOWN'})") from None

    async def _request_stop(self, handle: TaskHandle) -> None:
        now = self._clock()
        if not handle.stop_requested:
            handle.stop_requested = True
            handle.line(f"Nomad asked to stop ECS task {handle.arn}", now)
            handle.event("Stop requested: stopping ECS task")
        # Look first: stopping an unknown task is an error on AWS (and HTTP 500 on moto), and stopping a
        # stopped one would overwrite ECS's stopped reason.
        tasks, _ = await self.ecs.describe_tasks([handle.arn], cluster=handle.state.cluster)
        desc = next((t for t in tasks if t.get("taskArn") == handle.arn), None)
        if desc is None:
            handle.observe_missing(now, confirmations=1)
            return
        if desc.get("lastStatus") == STOPPED:
            handle.observe(desc, now)
            return
        await self.ecs.stop_task(handle.arn, stop_reason(handle.info.alloc_id, handle.info.name),
                                 cluster=handle.state.cluster)
        self.monitor.poke()

    # -- DestroyTask
    async def destroy(self, task_id: str, force: bool) -> None:
        handle = self._tasks.get(task_id)
        if handle is None:
            return
        if handle.running and not handle.detached:
            if not force:
                raise RuntimeError(f"task {task_id!r} is still running; stop it first or destroy with force")
            await self._request_stop(handle)
            handle.stopped_reason = handle.stopped_reason or "destroyed by Nomad"
            handle.finish(ExitInfo(0), self._clock())
        self.monitor.unwatch(handle)
        handle.output.close()
        self._tasks.pop(task_id, None)
        self._locks.pop(task_id, None)

    # -- shutdown
    async def close(self) -> None:
        """Stop watching; ECS tasks keep running (a new plugin process recovers them)."""
        await self.monitor.close()
        for handle in self._tasks.values():
            handle.output.close()


def _started_at(desc: dict) -> datetime:
    for key in ("startedAt", "createdAt"):
        value = desc.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.now(timezone.utc)


def _failure_error(failures: list[dict]) -> StartError:
    if not failures:
        return StartError("ECS RunTask returned no task and no failure", recoverable=True)
    text = "; ".join(f"{f.get('reason') or 'unknown'}" + (f" ({f['detail']})" if f.get("detail") else "")
                     + (f" [{f['arn']}]" if f.get("arn") else "") for f in failures)
    upper = text.upper()
    recoverable = any(word in upper for word in _RECOVERABLE_FAILURES)
    return StartError(f"ECS RunTask failed: {text}", recoverable=recoverable)
