"""The driver's AWS adapter: the only module that talks to ECS (boto3).

boto3 is imported lazily, on first use, to keep it off the path to the plugin's handshake line.
Retries of throttling, 5xx answers and connection errors are botocore's ("standard" retry mode); the
callers add no retry loops of their own beyond the monitor's persistence across poll cycles.
Blocking boto3 calls run in a small dedicated thread pool so the asyncio server never blocks.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

DESCRIBE_BATCH = 100  # DescribeTasks takes at most 100 ARNs per call on AWS


class AwsError(Exception):
    """An AWS call failed. `transient` is True for throttling, 5xx and connection trouble."""

    def __init__(self, message: str, code: str = "", transient: bool = False):
        super().__init__(message)
        self.code = code
        self.transient = transient


_TRANSIENT_CODES = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "ServiceUnavailable", "ServiceUnavailableException",
    "InternalError", "InternalFailure", "ServerException", "RequestTimeout", "RequestTimeoutException",
}


def _translate(exc: Exception) -> AwsError:
    # Lazy like boto3 in EcsApi._ecs (this module is on the path to the handshake); botocore is loaded by then.
    from botocore import exceptions as bex  # noqa: PLC0415 - start-up time (lazy)

    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        msg = err.get("Message") or str(exc)
        return AwsError(f"{code}: {msg}" if code else msg, code=code,
                        transient=code in _TRANSIENT_CODES or status >= 500)
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return AwsError("no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE "
                        "in the Nomad agent's environment)", code="NoCredentials")
    if isinstance(exc, bex.NoRegionError):
        return AwsError("no AWS region configured (set `region` in the plugin config or AWS_REGION)",
                        code="NoRegion")
    if isinstance(exc, (bex.EndpointConnectionError, bex.ConnectionError, bex.ConnectTimeoutError,
                        bex.ReadTimeoutError, bex.HTTPClientError)):
        return AwsError(f"cannot reach the ECS endpoint: {exc}", code="Unreachable", transient=True)
    if isinstance(exc, bex.BotoCoreError):
        return AwsError(str(exc), code=type(exc).__name__)
    return AwsError(f"{type(exc).__name__}: {exc}", code=type(exc).__name__)


@dataclass(frozen=True)
class EcsTarget:
    """Where the tasks live: cluster, region (None: the SDK's default chain) and optional endpoint URL."""

    cluster: str
    region: str | None = None
    endpoint: str | None = None


class EcsApi:
    """Async facade over the ECS calls the driver makes."""

    def __init__(self, target: EcsTarget, max_attempts: int = 3, connect_timeout: float = 5.0,
                 read_timeout: float = 15.0, workers: int = 4):
        self.target = target
        self._max_attempts = max_attempts
        self._timeouts = (connect_timeout, read_timeout)
        self._client = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecs-api")

    def _ecs(self):
        if self._client is None:
            # Lazy: boto3 costs ~100 ms of import, and this module is imported before the handshake line
            # (benchmarks/plugin_startup.py); the first ECS call pays it instead.
            import boto3  # noqa: PLC0415 - start-up time (lazy)
            from botocore.config import Config  # noqa: PLC0415 - start-up time (lazy)

            cfg = Config(retries={"mode": "standard", "max_attempts": self._max_attempts},
                         connect_timeout=self._timeouts[0], read_timeout=self._timeouts[1])
            kwargs: dict[str, Any] = {"config": cfg}
            if self.target.region:
                kwargs["region_name"] = self.target.region
            if self.target.endpoint:
                kwargs["endpoint_url"] = self.target.endpoint
            self._client = boto3.session.Session().client("ecs", **kwargs)
        return self._client

    async def _call(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))
        except AwsError:
            raise
        except Exception as exc:  # botocore raises many types; callers see one
            raise _translate(exc) from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- calls ---------------------------------------------------------------------------------
    async def describe_cluster(self) -> dict | None:
        """The cluster's description, or None when ECS does not know it."""
        def call():
            resp = self._ecs().describe_clusters(clusters=[self.target.cluster])
            clusters = resp.get("clusters") or []
            return clusters[0] if clusters else None
        return await self._call(call)

    async def run_task(self, **params: Any) -> dict:
        """RunTask on the target cluster; returns the raw answer (`tasks`, `failures`)."""
        return await self._call(lambda: self._ecs().run_task(cluster=self.target.cluster, **params))

    async def describe_tasks(self, arns: list[str], cluster: str | None = None,
                             tags: bool = False) -> tuple[list[dict], list[dict]]:
        """Describe `arns` in batches of at most 100 (sent concurrently); returns (tasks, failures).
        With `tags`, each task carries its `tags` (include=["TAGS"]).

        Raises the first AwsError if any batch fails, so a caller never mistakes a failed batch for
        tasks that ECS does not know."""
        cluster = cluster or self.target.cluster
        extra = {"include": ["TAGS"]} if tags else {}
        chunks = [arns[i:i + DESCRIBE_BATCH] for i in range(0, len(arns), DESCRIBE_BATCH)]
        answers = await asyncio.gather(
            *(self._call(lambda c=chunk: self._ecs().describe_tasks(cluster=cluster, tasks=c, **extra))
              for chunk in chunks),
            return_exceptions=True)
        tasks: list[dict] = []
        failures: list[dict] = []
        for resp in answers:
            if isinstance(resp, BaseException):
                raise resp
            tasks.extend(resp.get("tasks") or [])
            failures.extend(resp.get("failures") or [])
        return tasks, failures

    async def describe_task_definition(self, task_definition: str) -> dict:
        """The task definition (family, family:revision or ARN)."""
        return await self._call(
            lambda: self._ecs().describe_task_definition(taskDefinition=task_definition)["taskDefinition"])

    async def task_tags(self, arn: str) -> list[dict]:
        """ListTagsForResource on a task ARN: its tags as [{"key", "value"}]."""
        resp = await self._call(lambda: self._ecs().list_tags_for_resource(resourceArn=arn))
        return resp.get("tags") or []

    async def tag_task(self, arn: str, tags: dict[str, str]) -> None:
        """TagResource on a task ARN: upserts each key (other tags are left as they are)."""
        await self._call(lambda: self._ecs().tag_resource(
            resourceArn=arn, tags=[{"key": k, "value": v} for k, v in tags.items()]))

    async def stop_task(self, arn: str, reason: str, cluster: str | None = None) -> dict | None:
        """StopTask with `reason` (at most 255 characters). None when ECS does not know the task.

        Callers that may hold an unknown ARN should describe it first: moto answers StopTask on an
        unknown task with HTTP 500, which botocore retries as a server error before it gets here."""
        cluster = cluster or self.target.cluster
        try:
            resp = await self._call(lambda: self._ecs().stop_task(cluster=cluster, task=arn, reason=reason[:255]))
        except AwsError as exc:
            # AWS answers InvalidParameterException for an unknown task.
            if exc.code in ("InvalidParameterException", "ClientException") or "not found" in str(exc).lower():
                return None
            raise
        return resp.get("task")
