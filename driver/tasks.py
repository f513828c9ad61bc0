"""The driver's task domain: driver state, the per-task handle, and the task store with its operations.

Plain Python types only (no protos). One `TaskManager` per plugin process holds every tracked task by
Nomad task id and drives ECS through `driver.aws.EcsApi`; one `driver.monitor.EcsMonitor` watches them
all. Remote-task semantics (contract section G):

* StopTask with `DETACH` forgets the task without touching ECS, and so does the DestroyTask after it;
* any other StopTask stops the ECS task and waits for STOPPED within the timeout, if this task id owns it;
* RecoverTask re-attaches from `driver_state` alone (any of its three forms, see `DriverState.decode`);
* closing the manager (plugin shutdown) never stops an ECS task.

The ownership rule. The ECS task's `nomad:owner` tag names the Nomad task id allowed to stop it: the one
that started it (RunTask tags), then each allocation that recovered it through a hand-over (RecoverTask
under a task id that is neither the owner nor a former owner). The ids it was taken from are kept, as
12-hex digests, in `nomad:former_owners`; `nomad:owner_since` says when the owner claimed it. A
RecoverTask by a former owner (a restarted client restoring its drained or lost allocation) is accepted
as a *bystander*: monitored (WaitTask ends only when the ECS task really ends), but StopTask and
DestroyTask of it only detach. Before any ECS StopTask the tag is
read again (in the same DescribeTasks): if another task id owns it by then, the stop detaches instead.
When the tag cannot be read, nothing is stopped (StopTask fails and Nomad retries; a forced DestroyTask
forgets the task and says it left it running); a RecoverTask that could not read or write them retries,
and yields to another task id that claimed the task after it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from driver.aws import AwsError, EcsApi, EcsTarget
from driver.taskconfig import TaskConfigError, decode_task_config, run_task_params

DETACH_SIGNAL = "DETACH"
OWNER_TAG = "nomad:owner"                  # the Nomad task id that may stop the ECS task
FORMER_OWNERS_TAG = "nomad:former_owners"  # space-separated digests of the task ids that handed it over
OWNER_SINCE_TAG = "nomad:owner_since"      # when the owner claimed it (RFC 3339, UTC)
HANDLE_VERSION = 1
STATE_VERSION = 2        # msgpack map (ours); version 1 was JSON, still accepted by RecoverTask
JSON_STATE_VERSION = 1
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
    """What a TaskHandle's `driver_state` carries: enough to re-attach with no task config. No secrets.

    Written as a msgpack map `{"ARN", "v": 2, "cluster", "region", "started_at", "task_id", "alloc_id",
    "task_name", "container"}`: `ARN` is the key the Go reference driver (and Nomad's e2e suite) reads."""

    cluster: str
    region: str | None
    task_arn: str
    started_at: datetime
    alloc_id: str = ""
    task_name: str = ""
    container: str | None = None
    task_id: str = ""
    form: str = "msgpack-v2"   # which form it was read from: msgpack-v2, json-v1 or reference

    def encode(self) -> bytes:
        import msgpack

        doc = {"ARN": self.task_arn, "v": STATE_VERSION, "cluster": self.cluster, "region": self.region,
               "started_at": rfc3339(self.started_at), "task_id": self.task_id, "alloc_id": self.alloc_id,
               "task_name": self.task_name, "container": self.container}
        return msgpack.packb(doc, use_bin_type=False)  # classic msgpack: every Go msgpack decoder reads it

    @classmethod
    def decode(cls, data: bytes, cluster: str = "", region: str | None = None) -> "DriverState":
        """Read our msgpack state (v2), our earlier JSON state (v1), or the Go reference driver's state
        (msgpack `{TaskConfig, ContainerName, ARN, StartedAt}`; it names no cluster or region, so
        `cluster`/`region` (the plugin config's) are used)."""
        if not data:
            raise DriverStateError("the task handle has no driver state (nothing to re-attach to)")
        data = bytes(data)
        if data[:1] == b"{":
            return cls._from_json(data)
        import msgpack

        try:
            doc = msgpack.unpackb(data, raw=True)  # raw: Go writes strings and times as raw bytes
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            raise DriverStateError(f"driver state is neither this driver's msgpack or JSON state nor the "
                                   f"reference driver's ({type(exc).__name__}: {exc})") from None
        if not isinstance(doc, dict):
            raise DriverStateError(f"driver state must be a msgpack map, got {type(doc).__name__}")
        doc = {_text(k): v for k, v in doc.items()}
        if "v" in doc:
            return cls._from_ours(doc)
        if "ARN" in doc:
            return cls._from_reference(doc, cluster, region)
        raise DriverStateError("driver state has no ECS task ARN (no `ARN` key)")

    @classmethod
    def _from_ours(cls, doc: dict) -> "DriverState":
        if doc.get("v") != STATE_VERSION:
            raise DriverStateError(f"driver state version {doc.get('v')!r} is not supported "
                                   f"(expected {STATE_VERSION}, or JSON version {JSON_STATE_VERSION})")
        get = lambda key: _text(doc.get(key))  # noqa: E731
        return cls._checked(cluster=get("cluster"), region=get("region"), arn=get("ARN"),
                            started_at=get("started_at"), alloc_id=get("alloc_id"), task_name=get("task_name"),
                            container=get("container"), task_id=get("task_id"), form="msgpack-v2")

    @classmethod
    def _from_json(cls, data: bytes) -> "DriverState":
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DriverStateError(f"driver state is not JSON written by this driver: {exc}") from None
        if not isinstance(doc, dict):
            raise DriverStateError("driver state must be a JSON object")
        if doc.get("v") != JSON_STATE_VERSION:
            raise DriverStateError(f"driver state version {doc.get('v')!r} is not supported "
                                   f"(JSON state is version {JSON_STATE_VERSION})")
        return cls._checked(cluster=doc.get("cluster"), region=doc.get("region"), arn=doc.get("task_arn"),
                            started_at=doc.get("started_at"), alloc_id=doc.get("alloc_id"),
                            task_name=doc.get("task_name"), container=doc.get("container"), task_id="",
                            form="json-v1")

    @classmethod
    def _from_reference(cls, doc: dict, cluster: str, region: str | None) -> "DriverState":
        cfg = doc.get("TaskConfig")
        cfg = {_text(k): _text(v) for k, v in cfg.items()} if isinstance(cfg, dict) else {}
        started = doc.get("StartedAt")
        return cls._checked(cluster=cluster, region=region, arn=_text(doc.get("ARN")),
                            started_at=_go_time(started) if isinstance(started, bytes) else _text(started),
                            alloc_id=cfg.get("AllocID"), task_name=cfg.get("Name"),
                            container=_text(doc.get("ContainerName")), task_id=cfg.get("ID"), form="reference")

    @classmethod
    def _checked(cls, *, cluster, region, arn, started_at, alloc_id, task_name, container, task_id,
                 form) -> "DriverState":
        if not isinstance(arn, str) or not arn.startswith("arn:") or ":task/" not in arn:
            raise DriverStateError(f"driver state has no ECS task ARN (task ARN {arn!r})")
        if not isinstance(cluster, str) or not cluster:
            raise DriverStateError("driver state has no cluster" + (
                " (the reference driver's state names none and the plugin config has no cluster)"
                if form == "reference" else ""))
        if region is not None and not isinstance(region, str):
            raise DriverStateError("driver state region must be a string or null")
        started = started_at if isinstance(started_at, datetime) else _parse_time(started_at)
        text = lambda v: v if isinstance(v, str) else ""  # noqa: E731
        return cls(cluster=cluster, region=region or None, task_arn=arn,
                   started_at=started or datetime.now(timezone.utc), alloc_id=text(alloc_id),
                   task_name=text(task_name), container=text(container) or None, task_id=text(task_id), form=form)


def _text(value: Any) -> Any:
    """Go msgpack's raw strings as str (left as bytes when they are not UTF-8, like a binary time)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


_GO_EPOCH_OFFSET = 62135596800  # seconds from 0001-01-01 (Go's time zero) to the Unix epoch


def _go_time(data: bytes) -> datetime | None:
    """A Go `time.Time` as `MarshalBinary` writes it (how Nomad's msgpack handle stores times)."""
    if len(data) not in (15, 16) or data[0] not in (1, 2):
        return None
    secs, nanos = struct.unpack(">qi", data[1:13])
    try:
        return datetime.fromtimestamp(secs - _GO_EPOCH_OFFSET + nanos / 1e9, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# --- ownership -------------------------------------------------------------------------------------

_TAG_SAFE = re.compile(r"^[\w .:/=+\-@]{1,256}$")
DIGEST_LEN = 12
_MAX_FORMER = 256 // (DIGEST_LEN + 1)  # digests that fit in one tag value


def owner_mark(task_id: str) -> str:
    """The `nomad:owner` value for a task id: the id itself, or a digest when ECS would refuse it as a tag."""
    if _TAG_SAFE.match(task_id):
        return task_id
    return "sha256:" + hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def owner_digest(mark: str) -> str:
    return hashlib.sha256(mark.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_LEN]


@dataclass(frozen=True)
class Ownership:
    """Who may stop an ECS task, from its tags (owner, former owners' digests, time of the last claim)."""

    owner: str | None
    former: tuple[str, ...] = ()
    since: datetime | None = None

    @classmethod
    def of(cls, desc: dict) -> "Ownership":
        tags = {t.get("key"): t.get("value") for t in desc.get("tags") or []}
        return cls(owner=tags.get(OWNER_TAG) or None, former=tuple((tags.get(FORMER_OWNERS_TAG) or "").split()),
                   since=_parse_time(tags.get(OWNER_SINCE_TAG)))

    def owned_by(self, task_id: str) -> bool:
        return self.owner == owner_mark(task_id)

    def handed_over_by(self, task_id: str) -> bool:
        return owner_digest(owner_mark(task_id)) in self.former

    def claimed_by(self, task_id: str, now: datetime | None = None) -> dict[str, str]:
        """The tags that make `task_id` the owner (the current owner, if any, becomes a former owner)."""
        tags = {OWNER_TAG: owner_mark(task_id), OWNER_SINCE_TAG: rfc3339(now or datetime.now(timezone.utc))}
        if self.owner and not self.owned_by(task_id):
            former = [d for d in self.former if d != owner_digest(self.owner)] + [owner_digest(self.owner)]
            tags[FORMER_OWNERS_TAG] = " ".join(former[-_MAX_FORMER:])
        return tags


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
        # Ownership (module docstring): True = may stop the ECS task; False = a bystander (a former owner
        # restored); None = unknown (the tags could not be read at RecoverTask; resolved later).
        self.owner: bool | None = True
        self.owned_by: str | None = None         # the current owner's mark, when it is another task id
        self.claim: dict[str, str] | None = None  # ownership tags still to write (a failed TagResource) ...
        self.claim_basis: str | None = None       # ... and the owner they displace, as read before the claim
        self.blind_since: datetime | None = None  # RecoverTask could not read the tags (from then on)
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

    def detach(self, now: float, why: str = "remote task handed over") -> None:
        if self.detached:
            return
        self.detached = True
        if self.running:
            self.line(f"detached from ECS task {self.arn}; it keeps running on ECS ({why})", now)
            self.event(f"Detached from ECS task; it keeps running ({why})")
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

    def _api(self, handle: "TaskHandle") -> EcsApi:
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

    async def _describe(self, handle: "TaskHandle") -> dict | None:
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

    async def _settle_ownership(self, handle: "TaskHandle", desc: dict | None = None,
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

    async def _write_claim(self, handle: "TaskHandle", retry: bool) -> None:
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

    async def _settle_later(self, handle: "TaskHandle") -> None:
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

    def _detach(self, handle: "TaskHandle", now: float, why: str = "remote task handed over") -> None:
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
