"""The task handle: one Nomad task and the ECS task it stands for.

A `TaskHandle` holds the task's status, its exit result and done signal, the writer for the monitoring
lines on its stdout FIFO, and who may stop its ECS task. It applies each ECS observation (from RunTask,
a RecoverTask or the monitor's DescribeTasks cycle) and turns them into lines and task events.

Ownership tags (the ownership rule of docs/driver.md): the ECS task's `nomad:owner` tag names the Nomad
task id allowed to stop it; `nomad:former_owners` keeps 12-hex digests of the ids it was handed over
from; `nomad:owner_since` says when the owner claimed it. `Ownership` reads and writes these tags;
the task store (driver.store) decides from them.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from driver.state import DriverState, parse_time, rfc3339

OWNER_TAG = "nomad:owner"                  # the Nomad task id that may stop the ECS task
FORMER_OWNERS_TAG = "nomad:former_owners"  # space-separated digests of the task ids that handed it over
OWNER_SINCE_TAG = "nomad:owner_since"      # when the owner claimed it (RFC 3339, UTC)
STOPPED = "STOPPED"
EXIT_UNKNOWN = 1  # exit code when ECS gives none for a task that stopped by itself

Notify = Callable[["TaskHandle", str, dict], None]


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
                   since=parse_time(tags.get(OWNER_SINCE_TAG)))

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
        # Ownership (the rule: driver.store's docstring): True = may stop the ECS task; False = a bystander
        # (a former owner restored); None = unknown (the tags could not be read at RecoverTask; resolved later).
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
