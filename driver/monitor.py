"""The one ECS monitor of a plugin process: a single asyncio loop that polls every watched task.

Each cycle sends one DescribeTasks per 100 distinct ARNs per region and cluster (each task's own, from
its driver state; batches run concurrently in the adapter's thread pool), then hands every answer to
its task handle(s): status changes, STOPPED, and tasks that ECS no longer returns (MISSING after a few
cycles in a row, so a just-started task that AWS has not made visible yet is not mistaken for a lost
one). Between status changes it writes a heartbeat line to each task's stdout at most every
`heartbeat_interval`.

AWS trouble never ends a task: a failed cycle changes nothing, botocore's retry mode retries inside
each call, and the loop simply tries again next cycle. After `degraded_after` seconds of failures each
task gets a "monitoring degraded" event, and a "monitoring resumed" one when a cycle succeeds again.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from driver import log as _logmod
from driver.aws import AwsError, EcsApi
from driver.handle import TaskHandle

log = _logmod.get_logger("monitor")

MISSING_CONFIRMATIONS = 3


class EcsMonitor:
    def __init__(self, api_for: Callable[[str | None], EcsApi], poll_interval: float, clock: Callable[[], float]):
        self._clock = clock
        self.reconfigure(api_for, poll_interval)
        self._watched: dict[str, TaskHandle] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._outage_since: float | None = None
        self._degraded = False
        self.cycles = 0
        self.describe_calls = 0

    def reconfigure(self, api_for: Callable[[str | None], EcsApi], poll_interval: float) -> None:
        """`api_for(region)` gives the ECS client for a task's region (None: the plugin's)."""
        self.api_for = api_for
        self.poll_interval = max(0.05, float(poll_interval))
        # A heartbeat line at least every poll and at most every 5 s (the reference driver's rhythm).
        self.heartbeat_interval = max(self.poll_interval, min(5.0, 5 * self.poll_interval))
        # Warn after a sustained outage, not after one failed call (botocore already retried inside it).
        self.degraded_after = max(3.0, 6 * self.poll_interval)

    # -- membership
    def watch(self, handle: TaskHandle, poke: bool = True) -> None:
        """Poll `handle` from now on; `poke=False`: it was just described, the next timed cycle will do."""
        self._watched[handle.task_id] = handle
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run(), name="ecs-monitor")
        if poke:
            self.poke()

    def unwatch(self, handle: TaskHandle) -> None:
        if self._watched.get(handle.task_id) is handle:
            del self._watched[handle.task_id]

    def poke(self) -> None:
        """Run the next cycle now (after a stop request, a new task)."""
        self._wake.set()

    @property
    def degraded(self) -> bool:
        return self._degraded

    async def close(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    # -- the loop
    async def _run(self) -> None:
        next_at = self._clock() + self.poll_interval  # a poke (a new task) runs the first cycle sooner
        while True:
            delay = next_at - self._clock()
            if delay > 0 and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
            self._wake.clear()
            next_at = self._clock() + self.poll_interval
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one cycle must not end monitoring
                log.exception("ECS monitor cycle failed")

    async def cycle(self) -> None:
        """One poll of every watched task."""
        for task_id in [t for t, h in self._watched.items() if not h.running]:
            del self._watched[task_id]
        if not self._watched:
            return
        by_cluster: dict[tuple[str | None, str], dict[str, list[TaskHandle]]] = {}
        for handle in self._watched.values():
            key = (handle.state.region, handle.state.cluster)
            by_cluster.setdefault(key, {}).setdefault(handle.arn, []).append(handle)
        self.cycles += 1
        started = self._clock()
        try:
            answers = await asyncio.gather(*(self._describe(region, cluster, list(arns))
                                             for (region, cluster), arns in by_cluster.items()))
        except AwsError as exc:
            self._failed(exc, started)
            return
        now = self._clock()
        self._succeeded()
        for arns, (tasks, failures) in zip(by_cluster.values(), answers):
            seen = {t.get("taskArn"): t for t in tasks}
            for arn, handles in arns.items():
                desc = seen.get(arn)
                for handle in handles:
                    if not handle.running or self._watched.get(handle.task_id) is not handle:
                        continue  # stopped or detached while the call was in flight
                    if desc is None:  # MISSING in `failures`, or (moto) in neither list
                        handle.observe_missing(now, MISSING_CONFIRMATIONS)
                        continue
                    before = handle.last_status
                    handle.observe(desc, now)
                    if handle.running and handle.last_status == before \
                            and now - handle.last_line_at >= self.heartbeat_interval - 1e-3:
                        handle.heartbeat(now)

    async def _describe(self, region: str | None, cluster: str, arns: list[str]):
        self.describe_calls += -(-len(arns) // 100)
        return await self.api_for(region).describe_tasks(arns, cluster=cluster)

    def _failed(self, exc: AwsError, started: float) -> None:
        now = self._clock()
        if self._outage_since is None:
            self._outage_since = started  # the outage began when the failing call (and its retries) began
        log.warning("ECS DescribeTasks failed (%s); tasks keep their last known status", exc)
        if not self._degraded and now - self._outage_since >= self.degraded_after:
            self._degraded = True
            for handle in list(self._watched.values()):
                handle.line(f"ECS monitoring degraded: {exc}; task {handle.arn} is still considered "
                            f"{handle.last_status or 'running'}", now)
                handle.event(f"ECS monitoring degraded: cannot reach ECS for {now - self._outage_since:.0f}s "
                             f"({exc}); the task is not considered stopped", error=str(exc)[:500])

    def _succeeded(self) -> None:
        was, self._degraded, self._outage_since = self._degraded, False, None
        if was:
            now = self._clock()
            for handle in list(self._watched.values()):
                handle.line(f"ECS monitoring resumed for task {handle.arn}", now)
                handle.event("ECS monitoring resumed")
