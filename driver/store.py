"""The task store: every task this plugin process tracks, and the lifecycle operations on them.

One `TaskStore` per plugin process holds each tracked `TaskHandle` (driver.handle) by Nomad task id and
drives ECS through `driver.aws.EcsApi`; one `driver.monitor.EcsMonitor` watches them all. Plain Python
types only (no protos). Remote-task semantics (docs/driver.md, "Remote-task semantics"):

* StopTask with `DETACH` forgets the task without touching ECS, and so does the DestroyTask after it;
* any other StopTask stops the ECS task and waits for STOPPED within the timeout, if this task id owns it;
* RecoverTask re-attaches from `driver_state` alone (any of its three forms, see `DriverState.decode`);
* closing the store (plugin shutdown) never stops an ECS task.

The ownership rule (docs/driver.md). The ECS task's `nomad:owner` tag names the Nomad task id allowed to
stop it: the one that started it (RunTask tags), then each allocation that recovered it through a
hand-over (RecoverTask under a task id that is neither the owner nor a former owner). The ids it was
taken from are kept, as 12-hex digests, in `nomad:former_owners`; `nomad:owner_since` says when the
owner claimed it. A RecoverTask by a former owner (a restarted client restoring its drained or lost
allocation) is accepted as a *bystander*: monitored (WaitTask ends only when the ECS task really ends),
but StopTask and DestroyTask of it only detach. Before any ECS StopTask the tag is read again (in the
same DescribeTasks): if another task id owns it by then, the stop detaches instead. When the tag cannot
be read, nothing is stopped (StopTask fails and Nomad retries; a forced DestroyTask forgets the task and
says it left it running); a RecoverTask that could not read or write them retries, and yields to another
task id that claimed the task after it.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone
from typing import Callable

from driver.aws import AwsError, EcsApi, EcsTarget
from driver.handle import STOPPED, ExitInfo, Notify, Ownership, TaskHandle, TaskInfo
from driver.monitor import EcsMonitor
from driver.state import DriverState, DriverStateError
from driver.taskconfig import TaskConfigError, decode_task_config, run_task_params

DETACH_SIGNAL = "DETACH"
STOP_REASON_PREFIX = "Stopped by Nomad"
DEFAULT_STOP_TIMEOUT = 5.0  # Nomad's default kill_timeout, used when a caller sends none

# RunTask failure reasons worth a retry by Nomad's restart policy (capacity, throttling, agent trouble).
_RECOVERABLE_FAILURES = ("RESOURCE", "CAPACITY", "AGENT", "THROTTL", "LIMIT", "UNAVAILABLE", "TIMEOUT")


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


def client_token(task_id: str) -> str:
    """RunTask's idempotency token for a Nomad task id (64 ASCII characters)."""
    return hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()


def stop_reason(alloc_id: str, task_name: str) -> str:
    return f"{STOP_REASON_PREFIX}: allocation {alloc_id} task {task_name}"


class TaskStore:
    """Every task this plugin process tracks, keyed by Nomad task id, and the operations on them."""

    def __init__(self, ecs: EcsApi, notify: Notify, poll_interval: float = 5.0,
                 clock: Callable[[], float] | None = None):
        self.ecs = ecs
        self.notify = notify
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._regional: dict[tuple[str, str | None], EcsApi] = {}
        self.monitor = EcsMonitor(self.api_for, poll_interval=poll_interval, clock=self._clock)
        self._tasks: dict[str, TaskHandle] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task] = set()
        self._settling: set[TaskHandle] = set()  # handles with a retry loop of _settle_later running

    def reconfigure(self, ecs: EcsApi, poll_interval: float) -> None:
        """A later SetConfig: use its ECS client and poll interval for every task from now on."""
        self.ecs = ecs
        self.monitor.reconfigure(self.api_for, poll_interval)

    def api_for(self, region: str | None) -> EcsApi:
        """The ECS client for a task's region (its driver state's; None: the plugin's)."""
        target = self.ecs.target
        if not region or region == target.region:
            return self.ecs
        key = (region, target.endpoint)
        if key not in self._regional:
            self._regional[key] = EcsApi(EcsTarget(target.cluster, region, target.endpoint))
        return self._regional[key]

    def _api(self, handle: TaskHandle) -> EcsApi:
        return self.api_for(handle.state.region)

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
                                 client_token=client_token(info.task_id),
                                 owner_tags=Ownership(None).claimed_by(info.task_id))
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
                            task_name=info.name, container=await self._essential_container(desc),
                            task_id=info.task_id)
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
        """Re-attach to the ECS task in `driver_state`; a task id already tracked is left as it is.

        Ownership is settled from the task's tags (module docstring): the owner's own restore re-attaches
        as owner, a hand-over claims the task, a former owner's restore re-attaches as a bystander."""
        if not info.task_id:
            raise DriverStateError("the task handle has no task id (handle.config.id)")
        known = self._tasks.get(info.task_id)
        if known is not None:
            # A reattached agent restoring a task this process still tracks: the task may have been
            # handed over meanwhile (a lost node's plugin lives on). Best effort; stops re-read anyway.
            if known.running and not known.detached and known.owner is not False:
                try:
                    await self._settle_ownership(known)
                except AwsError:
                    pass
            return known
        state = DriverState.decode(driver_state, cluster=self.ecs.target.cluster, region=self.ecs.target.region)
        info = TaskInfo(info.task_id, info.name or state.task_name, info.alloc_id or state.alloc_id,
                        info.job, info.group, info.stdout_path)
        handle = TaskHandle(info, state, self.notify, recovered=True)
        handle.owner = None
        recovered_at = datetime.now(timezone.utc)
        desc = None
        try:
            desc = await self._settle_ownership(handle)
        except AwsError as exc:
            handle.blind_since = recovered_at
            handle.line(f"cannot read the ownership tags of ECS task {state.task_arn} ({exc}); "
                        "it will not be stopped until they are read", self._clock())
            self._in_background(self._settle_later(handle))
        if info.task_id in self._tasks:  # a concurrent RecoverTask of the same id won
            return self._tasks[info.task_id]
        # The description the tags were read from is this task's first observation, so no monitor cycle
        # is asked for (a mass RecoverTask after a restart would otherwise poll every task once per
        # recovery); only a task ECS did not describe is looked at by the next cycle right away.
        self._track(handle, poke=desc is None)
        handle.line(f"recovered ECS task {state.task_arn} (cluster {state.cluster}); monitoring resumes",
                    self._clock())
        if handle.owner is False:
            handle.event(f"Recovered ECS task as a bystander: task {handle.owned_by} owns it since a hand-over; "
                         "this allocation will not stop it", cluster=state.cluster, owner=handle.owned_by or "")
        else:
            handle.event("Recovered ECS task", cluster=state.cluster, state_format=state.form)
        if desc is not None:
            handle.observe(desc, self._clock())
        return handle

    async def _describe(self, handle: TaskHandle) -> dict | None:
        """The task's description with its tags (None: ECS does not know it). Raises AwsError."""
        api = self._api(handle)
        tasks, _ = await api.describe_tasks([handle.arn], cluster=handle.state.cluster, tags=True)
        desc = next((t for t in tasks if t.get("taskArn") == handle.arn), None)
        if desc is not None and "tags" not in desc:
            # Asked with include=TAGS, an answer always has `tags` (`[]` for an untagged task); moto drops
            # the key when another DescribeTasks without TAGS runs at the same time (its response filter is
            # shared by all requests). Taken for "no owner", that would claim the task back: ask directly.
            desc = {**desc, "tags": await api.task_tags(handle.arn)}
        return desc

    async def _settle_ownership(self, handle: TaskHandle, desc: dict | None = None,
                                retry: bool = True) -> dict | None:
        """Decide `handle.owner` from the task's tags, claiming the task on a hand-over; returns the
        description used (None: ECS does not know the task). Raises AwsError."""
        if desc is None:
            desc = await self._describe(handle)
        if desc is None:
            handle.owner = True  # ECS does not know it: nothing to protect; the monitor reports it MISSING
            return None
        tags = Ownership.of(desc)
        blind, handle.blind_since = handle.blind_since, None
        if tags.owned_by(handle.task_id):
            handle.owner, handle.owned_by, handle.claim = True, None, None
        elif tags.handed_over_by(handle.task_id) \
                or (handle.claim is not None and tags.owner != handle.claim_basis) \
                or (blind is not None and tags.owner is not None and tags.since is not None and tags.since > blind):
            # a former owner, or another task id claimed it after this one recovered it (while this one's
            # claim was not written yet, or while the tags could not be read)
            handle.owner, handle.owned_by, handle.claim = False, tags.owner, None
        else:  # a hand-over (or a task no owner was recorded for): this task id owns it from now on
            handle.owner, handle.owned_by = True, None
            handle.claim, handle.claim_basis = tags.claimed_by(handle.task_id), tags.owner
            await self._write_claim(handle, retry)
        return desc

    async def _write_claim(self, handle: TaskHandle, retry: bool) -> None:
        if handle.claim is None:
            return
        try:
            await self._api(handle).tag_task(handle.arn, handle.claim)
        except AwsError as exc:
            handle.line(f"cannot record the hand-over of ECS task {handle.arn} in its tags ({exc}); retrying",
                        self._clock())
            if retry:
                self._in_background(self._settle_later(handle))
            return
        handle.claim = None

    async def _settle_later(self, handle: TaskHandle) -> None:
        """Retry an unread ownership or an unwritten claim every poll interval while the task is tracked."""
        if handle in self._settling:
            return
        self._settling.add(handle)
        try:
            while self._tasks.get(handle.task_id, handle) is handle and handle.running \
                    and (handle.owner is None or handle.claim is not None):
                await asyncio.sleep(self.monitor.poll_interval)
                try:
                    await self._settle_ownership(handle, retry=False)
                except AwsError:
                    continue
        finally:
            self._settling.discard(handle)

    def _in_background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _track(self, handle: TaskHandle, poke: bool = True) -> None:
        self._tasks[handle.task_id] = handle
        if handle.running:
            self.monitor.watch(handle, poke=poke)

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
            self._detach(handle, now)
            return
        if not handle.running:
            return
        await self._request_stop(handle)
        if handle.detached:
            return  # another task id owns the ECS task: detached, not stopped
        try:
            await asyncio.wait_for(handle.done.wait(), timeout if timeout > 0 else DEFAULT_STOP_TIMEOUT)
        except asyncio.TimeoutError:
            raise StopTimeout(f"timed out after {timeout:g}s waiting for ECS task {handle.arn} to stop "
                              f"(last status {handle.last_status or 'UNKNOWN'})") from None

    def _detach(self, handle: TaskHandle, now: float, why: str = "remote task handed over") -> None:
        handle.detach(now, why)
        self.monitor.unwatch(handle)

    async def _request_stop(self, handle: TaskHandle) -> None:
        """Stop the ECS task if this task id owns it (read from its tags first); detach it otherwise."""
        now = self._clock()
        if handle.owner is False:
            self._detach(handle, now, f"task {handle.owned_by} owns it since a hand-over; not stopping it")
            return
        # Look first: stopping an unknown task is an error on AWS (and HTTP 500 on moto), stopping a
        # stopped one would overwrite ECS's stopped reason, and the tags say who may stop it.
        desc = await self._describe(handle)
        if desc is None:
            handle.observe_missing(now, confirmations=1)
            return
        if desc.get("lastStatus") == STOPPED:
            handle.observe(desc, now)
            return
        if handle.owner is None or handle.claim is not None:  # not settled yet: decide from these tags
            await self._settle_ownership(handle, desc)
            if handle.claim is not None:
                raise AwsError(f"cannot stop ECS task {handle.arn} yet: recording this task's ownership in its "
                               "tags failed (Nomad retries the stop)", code="OwnershipUnrecorded", transient=True)
        else:
            tags = Ownership.of(desc)
            if tags.owner is not None and not tags.owned_by(handle.task_id):  # handed over since
                handle.owner, handle.owned_by = False, tags.owner
        if handle.owner is False:
            self._detach(handle, now, f"task {handle.owned_by} owns it since a hand-over; not stopping it")
            return
        if not handle.stop_requested:
            handle.stop_requested = True
            handle.line(f"Nomad asked to stop ECS task {handle.arn}", now)
            handle.event("Stop requested: stopping ECS task")
        await self._api(handle).stop_task(handle.arn, stop_reason(handle.info.alloc_id, handle.info.name),
                                          cluster=handle.state.cluster)
        self.monitor.poke()

    # -- DestroyTask
    async def destroy(self, task_id: str, force: bool) -> None:
        handle = self._tasks.get(task_id)
        if handle is None:
            return
        failure: AwsError | None = None
        if handle.running and not handle.detached:
            if not force:
                raise RuntimeError(f"task {task_id!r} is still running; stop it first or destroy with force")
            try:
                await self._request_stop(handle)
            except AwsError as exc:
                # Ownership unknown or ECS unreachable: never stop blindly. Forget the task, say so.
                failure = exc
                self._detach(handle, self._clock(), f"destroyed while ECS could not be asked ({exc}); "
                                                    "left running")
            if not handle.detached:
                handle.stopped_reason = handle.stopped_reason or "destroyed by Nomad"
                handle.finish(ExitInfo(0), self._clock())
        self.monitor.unwatch(handle)
        handle.output.close()
        self._tasks.pop(task_id, None)
        self._locks.pop(task_id, None)
        if failure is not None:
            raise AwsError(f"ECS task {handle.arn} was left running and is no longer tracked by task "
                           f"{task_id!r}: {failure}", code=failure.code, transient=failure.transient)

    # -- shutdown
    async def close(self) -> None:
        """Stop watching; ECS tasks keep running (a new plugin process recovers them)."""
        for task in list(self._background):
            task.cancel()
        await self.monitor.close()
        for handle in self._tasks.values():
            handle.output.close()
        for api in self._regional.values():
            api.close()


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
