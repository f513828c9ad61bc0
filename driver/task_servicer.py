"""Task lifecycle RPCs of the Driver service (StartTask, WaitTask, StopTask, ...).

Proto <-> domain translation only: every RPC reads its request into plain values, calls the task
store (`self.plugin.enabled_tasks`, a `driver.store.TaskStore`) and builds the answer Nomad 1.1 expects, with
every sub-message it dereferences present (docs/nomad-notes.md, "Sub-messages that must be set"). Errors
travel as gRPC status codes other than UNAVAILABLE/CANCELLED (which Nomad reads as "the plugin died");
StartTask failures carry the RecoverableError detail Nomad's restart policy reads (docs/nomad-notes.md,
"Errors").
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import grpc
from google.protobuf.any_pb2 import Any as AnyPb
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2
from grpc_status import rpc_status

from driver.aws import AwsError
from driver.declaration import DRIVER_NAME
from driver.handle import TaskHandle, TaskInfo
from driver.pb import driver_pb2, recoverable_error_pb2
from driver.state import DriverStateError
from driver.store import StartError, StopTimeout, TaskNotFound

_DISABLED = f"the {DRIVER_NAME} driver is disabled or not configured"
_NO_EXEC = f"the {DRIVER_NAME} driver does not support exec (use ECS Exec with the AWS CLI)"
HANDLE_VERSION = 1  # the version of the TaskHandle message Nomad stores for us (its driver_state is ours)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ts(dt: datetime | None) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt or _EPOCH)
    return ts


def _seconds(duration) -> float:
    return max(0.0, duration.seconds + duration.nanos / 1e9)


def _info(cfg: driver_pb2.TaskConfig) -> TaskInfo:
    return TaskInfo(task_id=cfg.id, name=cfg.name, alloc_id=cfg.alloc_id, job=cfg.job_name,
                    group=cfg.task_group_name, stdout_path=cfg.stdout_path)


def _exit_result(result) -> driver_pb2.ExitResult:
    if result is None:
        return driver_pb2.ExitResult()
    return driver_pb2.ExitResult(exit_code=result.exit_code, signal=result.signal)


def _handle_proto(cfg: driver_pb2.TaskConfig, handle: TaskHandle) -> driver_pb2.TaskHandle:
    return driver_pb2.TaskHandle(version=HANDLE_VERSION, config=cfg,
                                 state=driver_pb2.RUNNING if handle.running else driver_pb2.EXITED,
                                 driver_state=handle.state.encode())


async def _abort_start(context, message: str, recoverable: bool) -> None:
    """FAILED_PRECONDITION with a RecoverableError detail, the way Nomad's Go plugin server sends it."""
    detail = AnyPb()
    detail.Pack(recoverable_error_pb2.RecoverableError(recoverable=recoverable))
    status = status_pb2.Status(code=grpc.StatusCode.FAILED_PRECONDITION.value[0], message=message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))


class TaskRpcs:
    """Task lifecycle RPCs, mixed into the Driver servicer (which provides `self.plugin`)."""

    async def _store(self, context):
        tasks = self.plugin.enabled_tasks
        if tasks is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"{_DISABLED} (plugin config: enabled = true, cluster = \"...\")")
        return tasks

    async def _handle(self, context, task_id: str) -> TaskHandle:
        tasks = await self._store(context)
        try:
            return tasks.get(task_id)
        except TaskNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    async def StartTask(self, request, context):
        tasks = self.plugin.enabled_tasks
        if tasks is None:
            await _abort_start(context, _DISABLED, recoverable=False)
        try:
            handle = await tasks.start(_info(request.task), request.task.msgpack_driver_config)
        except StartError as exc:
            await _abort_start(context, str(exc), exc.recoverable)
        return driver_pb2.StartTaskResponse(result=driver_pb2.StartTaskResponse.SUCCESS,
                                            handle=_handle_proto(request.task, handle))

    async def RecoverTask(self, request, context):
        tasks = await self._store(context)
        cfg = request.handle.config
        info = _info(cfg)
        if request.task_id and not cfg.id:
            info = TaskInfo(request.task_id, info.name, info.alloc_id, info.job, info.group, info.stdout_path)
        try:
            await tasks.recover(info, request.handle.driver_state)
        except DriverStateError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot recover task {info.task_id!r}: {exc}")
        return driver_pb2.RecoverTaskResponse()

    async def WaitTask(self, request, context):
        tasks = await self._store(context)
        try:
            result = await tasks.wait(request.task_id)
        except TaskNotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return driver_pb2.WaitTaskResponse(result=_exit_result(result), err=result.err or "")

    async def StopTask(self, request, context):
        tasks = await self._store(context)
        try:
            await tasks.stop(request.task_id, _seconds(request.timeout), request.signal)
        except StopTimeout as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, str(exc))
        except AwsError as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, f"cannot stop task {request.task_id!r} (its ECS task "
                                                         f"was not stopped): {exc}")
        return driver_pb2.StopTaskResponse()

    async def DestroyTask(self, request, context):
        tasks = await self._store(context)
        try:
            await tasks.destroy(request.task_id, request.force)
        except AwsError as exc:
            await context.abort(grpc.StatusCode.UNKNOWN, f"DestroyTask: {exc}")
        except RuntimeError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return driver_pb2.DestroyTaskResponse()

    async def InspectTask(self, request, context):
        h = await self._handle(context, request.task_id)
        status = driver_pb2.TaskStatus(
            id=h.task_id, name=h.info.name, state=driver_pb2.RUNNING if h.running else driver_pb2.EXITED,
            started_at=_ts(h.state.started_at), completed_at=_ts(h.completed_at), result=_exit_result(h.result))
        attrs = {"arn": h.arn, "cluster": h.state.cluster, "region": h.state.region or "",
                 "last_status": h.last_status or "UNKNOWN", "task_definition": h.task_definition_arn or "",
                 "detached": str(h.detached).lower(),
                 "owner": {True: "true", False: "false", None: "unknown"}[h.owner]}
        if h.owned_by:
            attrs["owned_by"] = h.owned_by
        if h.stopped_reason:
            attrs["stopped_reason"] = h.stopped_reason
        return driver_pb2.InspectTaskResponse(task=status, driver=driver_pb2.TaskDriverStatus(attributes=attrs))

    async def TaskStats(self, request, context):
        tasks = await self._store(context)
        await self._handle(context, request.task_id)
        interval = _seconds(request.collection_interval) or 1.0
        while request.task_id in tasks.ids():
            # ECS gives no per-task usage through these APIs: empty but present usage (Nomad needs it).
            usage = driver_pb2.TaskResourceUsage(cpu=driver_pb2.CPUUsage(), memory=driver_pb2.MemoryUsage())
            yield driver_pb2.TaskStatsResponse(stats=driver_pb2.TaskStats(
                id=request.task_id, timestamp=_ts(datetime.now(timezone.utc)), agg_resource_usage=usage))
            await asyncio.sleep(max(interval, 0.05))

    async def SignalTask(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            f"the {DRIVER_NAME} driver does not support signals (task {request.task_id!r}, "
                            f"signal {request.signal!r}): ECS tasks can only be stopped")

    async def ExecTask(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NO_EXEC)

    async def ExecTaskStreaming(self, request_iterator, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, _NO_EXEC)
        yield  # pragma: no cover - makes this a stream
