"""ecsdemo's view of AWS for verification: the demo cluster's ECS tasks, who owns them, stopping leftovers.

The plugin (`driver/`) has its own AWS adapter; this one serves the CLI: `status`, `teardown` and the
scenarios use it to *prove* what happened in ECS. In local mode it talks to the embedded endpoint with the
dummy local credentials; otherwise it uses the user's standard AWS credential chain. Waiting for tasks to
run or stop is boto3's own ECS waiters (`tasks_running`, `tasks_stopped`). It never prints and never logs
credentials.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError, WaiterError

from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import LOCAL_CREDENTIALS, LOCAL_FILE, is_healthy
from ecsdemo.outputs import recorded

ALLOC_TAG = "nomad:alloc_id"
# The driver sets startedBy "nomad-<alloc id[:30]>" (the Go driver: "nomad-ecs-driver").
STARTED_BY_PREFIX = "nomad-"
DESCRIBE_BATCH = 100                  # DescribeTasks takes at most 100 ARNs


def endpoint_url(cfg: DemoConfig) -> str | None:
    """The AWS endpoint to talk to: the embedded one in local mode, None (AWS itself) otherwise."""
    if not cfg.local:
        return None
    doc = cfg.state.read_json(LOCAL_FILE) or {}
    url = doc.get("url") if isinstance(doc, dict) else None
    if not url:
        raise EcsdemoError("the local AWS endpoint is not running (no url recorded in the state directory)",
                           hint="run `ecsdemo up --local` (or `ecsdemo local start`) first")
    return str(url)


def reachable(cfg: DemoConfig) -> bool:
    """Whether ECS can be asked at all: in local mode, the recorded endpoint must answer (without it, its
    resources are gone too); on AWS, always."""
    if not cfg.local:
        return True
    doc = cfg.state.read_json(LOCAL_FILE)
    return isinstance(doc, dict) and bool(doc.get("url")) and is_healthy(str(doc["url"]))


def ecs_client(cfg: DemoConfig, url: str | None = None):
    """A boto3 ECS client for the demo's region (and the local endpoint in local mode)."""
    kwargs: dict[str, Any] = {"region_name": cfg.region,
                              "config": Config(retries={"mode": "standard", "max_attempts": 3},
                                               connect_timeout=5, read_timeout=30)}
    if cfg.local:
        kwargs["endpoint_url"] = url or endpoint_url(cfg)
        kwargs["aws_access_key_id"] = LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]
        kwargs["aws_secret_access_key"] = LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    return boto3.client("ecs", **kwargs)


def cluster_name(cfg: DemoConfig) -> str:
    """The demo's ECS cluster: Terraform's output when recorded, else the configured name."""
    try:
        outs = recorded(cfg.state)
    except EcsdemoError:   # an unreadable record: the configured name is the best guess
        outs = None
    return str(outs.cluster_name) if outs is not None and outs.cluster_name else cfg.name


def _call(what: str, fn, *args, **kwargs):
    """Run one boto3 call, turning AWS and connection failures into a message the user can act on."""
    try:
        return fn(*args, **kwargs)
    except NoCredentialsError as exc:
        raise EcsdemoError(f"{what}: no AWS credentials found",
                           hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or use --local") from exc
    except NoRegionError as exc:
        raise EcsdemoError(f"{what}: no AWS region configured", hint="pass --region") from exc
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise EcsdemoError(f"{what}: {err.get('Code', 'error')}: {err.get('Message', exc)}") from exc
    except BotoCoreError as exc:
        raise EcsdemoError(f"{what}: {exc}") from exc


def _is_cluster_missing(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, EcsdemoError) else exc
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") == "ClusterNotFoundException"


def describe(client, cluster: str, arns: Iterable[str]) -> list[dict]:
    """Describe tasks (with tags) in batches of 100; unknown ARNs are skipped."""
    arns = list(dict.fromkeys(arns))
    out: list[dict] = []
    for i in range(0, len(arns), DESCRIBE_BATCH):
        resp = _call("describing ECS tasks", client.describe_tasks, cluster=cluster,
                     tasks=arns[i:i + DESCRIBE_BATCH], include=["TAGS"])
        out.extend(resp.get("tasks", []))
    return out


def cluster_tasks(cfg: DemoConfig, desired_status: str | None = "RUNNING", client=None) -> list[dict]:
    """The cluster's tasks (full DescribeTasks dicts, with tags), filtered by desired status.

    `desired_status` is "RUNNING", "STOPPED" or None for both. A cluster that does not exist has no tasks.
    """
    if desired_status not in (None, "RUNNING", "STOPPED"):
        raise ValueError(f"desired_status must be RUNNING, STOPPED or None, not {desired_status!r}")
    client = client or ecs_client(cfg)
    cluster = cluster_name(cfg)
    statuses = [desired_status] if desired_status else ["RUNNING", "STOPPED"]
    arns: list[str] = []
    try:
        for status in statuses:
            pages = client.get_paginator("list_tasks").paginate(cluster=cluster, desiredStatus=status)
            for page in _call("listing ECS tasks", list, pages):
                arns.extend(page.get("taskArns", []))
        tasks = describe(client, cluster, arns)
    except EcsdemoError as exc:
        if _is_cluster_missing(exc):
            return []
        raise
    if desired_status:  # the list filter is advisory on some endpoints (moto): check what describe says
        tasks = [t for t in tasks if t.get("desiredStatus") == desired_status]
    return tasks


def task_owner(task: dict) -> str | None:
    """The Nomad allocation that started `task`: from its `nomad:alloc_id` tag, else from startedBy
    `nomad-<alloc id prefix>` (a prefix of up to 30 characters); None when Nomad did not start it that way."""
    for tag in task.get("tags") or []:
        if tag.get("key") == ALLOC_TAG and tag.get("value"):
            return str(tag["value"])
    started_by = task.get("startedBy") or ""
    if started_by.startswith(STARTED_BY_PREFIX):
        rest = started_by[len(STARTED_BY_PREFIX):]
        if rest and all(c in "0123456789abcdef-" for c in rest):
            return rest
    return None


def owned_by(task: dict, alloc_id: str) -> bool:
    """True when `task` belongs to allocation `alloc_id` (a startedBy owner is an id prefix)."""
    owner = task_owner(task)
    return bool(owner) and alloc_id.startswith(owner)


def is_driver_task(task: dict) -> bool:
    """True for tasks a Nomad ECS driver started (ours or the Go reference driver)."""
    return task_owner(task) is not None or (task.get("startedBy") or "").startswith(STARTED_BY_PREFIX)


def task_revision(task: dict) -> str:
    """`family:revision` of the task's task definition."""
    return (task.get("taskDefinitionArn") or "").rsplit("/", 1)[-1]


def stop_driver_tasks(cfg: DemoConfig, reason: str, client=None, wait: float = 0.0,
                      interval: float = 2.0) -> list[str]:
    """Stop every task in the cluster that a Nomad driver started and that is still running.

    Returns the ARNs it asked to stop. With `wait` > 0, waits up to that many seconds for them to be STOPPED
    and raises when some are not.
    """
    client = client or ecs_client(cfg)
    cluster = cluster_name(cfg)
    stopped: list[str] = []
    for task in cluster_tasks(cfg, "RUNNING", client=client):
        if not is_driver_task(task) or task.get("lastStatus") == "STOPPED":
            continue
        _call("stopping an ECS task", client.stop_task, cluster=cluster, task=task["taskArn"], reason=reason[:255])
        stopped.append(task["taskArn"])
    if stopped and wait > 0:
        wait_stopped(cfg, stopped, timeout=wait, interval=interval, client=client)
    return stopped


def _wait(client, waiter_name: str, cluster: str, arns: list[str], timeout: float, interval: float) -> dict | None:
    """Run boto3's ECS waiter `waiter_name` on up to 100 tasks, asking every `interval` seconds for about
    `timeout` seconds. None when it succeeded; else DescribeTasks' last answer (the waiter reached a failure
    state, or the time is up). An AWS error answer or a connection failure raises as `_call` words it."""
    attempts = int(max(timeout, 0.0) // interval) + 1 if interval > 0 else 1
    try:
        _call("describing ECS tasks", client.get_waiter(waiter_name).wait, cluster=cluster, tasks=arns,
              include=["TAGS"], WaiterConfig={"Delay": interval, "MaxAttempts": attempts})
    except EcsdemoError as exc:
        if not isinstance(exc.__cause__, WaiterError):
            raise
        last = exc.__cause__.last_response or {}
        if "Error" in last:   # e.g. ClusterNotFoundException: the same error `_call` gives for it
            err = ClientError(last, "DescribeTasks")
            raise EcsdemoError(f"describing ECS tasks: {last['Error'].get('Code', 'error')}: "
                               f"{last['Error'].get('Message', err)}") from err
        return last
    return None


def wait_running(cfg: DemoConfig, arn: str, timeout: float, interval: float = 2.0, client=None) -> None:
    """Wait until the task `arn` is RUNNING (the `tasks_running` waiter); raise when it stopped, is not
    in the cluster, or is not running within `timeout` seconds."""
    client = client or ecs_client(cfg)
    last = _wait(client, "tasks_running", cluster_name(cfg), [arn], timeout, interval)
    if last is None:
        return
    found = last.get("tasks") or []
    status = found[0].get("lastStatus") if found else "MISSING"
    reason = found[0].get("stoppedReason") if found else "not found in the cluster"
    raise EcsdemoError(f"the ECS task {arn} is {status}" + (f" ({reason})" if reason else ""))


def wait_stopped(cfg: DemoConfig, arns: list[str], timeout: float, interval: float = 2.0, client=None) -> None:
    """Wait until every task in `arns` has lastStatus STOPPED (or is gone): the `tasks_stopped` waiter, in
    batches of 100 within one deadline. A cluster that no longer exists has no tasks left to wait for."""
    client = client or ecs_client(cfg)
    cluster = cluster_name(cfg)
    deadline = time.monotonic() + timeout
    try:
        # Tasks already gone are not waited for: the waiter only succeeds on tasks it can describe.
        pending = [t["taskArn"] for t in describe(client, cluster, arns) if t.get("lastStatus") != "STOPPED"]
        left: list[str] = []
        for i in range(0, len(pending), DESCRIBE_BATCH):
            last = _wait(client, "tasks_stopped", cluster, pending[i:i + DESCRIBE_BATCH],
                         deadline - time.monotonic(), interval)
            if last is not None:
                left += [t["taskArn"] for t in last.get("tasks") or [] if t.get("lastStatus") != "STOPPED"]
    except EcsdemoError as exc:
        if _is_cluster_missing(exc):
            return
        raise
    if left:
        raise EcsdemoError(f"{len(left)} ECS task(s) did not stop within {timeout:.0f}s: {', '.join(left)}",
                           hint="check them in the ECS console and stop them by hand")
