"""How the plugin's one ECS monitor scales with the number of tracked tasks.

    python benchmarks/monitor_scale.py                  # N = 10, 100, 1000 in turn
    python benchmarks/monitor_scale.py --tasks 50 --poll-interval 1

For each N it starts its own moto server (ecsdemo.local) behind a counting HTTP proxy, launches one
plugin process the way Nomad does (ecsdemo.pluginclient), starts N tasks through StartTask, then measures:

* describe_calls_per_cycle: DescribeTasks requests per poll cycle seen at the proxy (the most in any
  cycle while idle; target <= ceil(N/100));
* rss_mb, idle_cpu_pct: the plugin's RSS and CPU (% of one core) over a few idle poll cycles;
* detect_p50_s, detect_p99_s: for a sample of tasks stopped directly in ECS, the time from the ECS
  StopTask to the plugin's WaitTask answer (target p99 <= poll_interval + 1 s).

One JSON line per N on stdout; progress on stderr. Nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from driver.pb import driver_pb2
from driver.state import DriverState
from ecsdemo import cty, local, pluginclient
from tests.support.aws import AwsHelper
from tests.support.faultproxy import FaultProxy
from tests.support.moto_world import make_world

PLUGIN_EXE = Path(sys.executable).parent / "nomad-driver-ecs"


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cycles_of(log: list[tuple[float, str]], since: float, gap: float) -> list[int]:
    """DescribeTasks requests per poll cycle: requests closer than `gap` belong to one cycle."""
    times = [t for t, action in log if action == "DescribeTasks" and t >= since]
    bursts: list[int] = []
    last = None
    for t in times:
        if last is None or t - last > gap:
            bursts.append(0)
        bursts[-1] += 1
        last = t
    return bursts


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]


def run_one(n: int, poll: float, sample: int, idle_cycles: int, workdir: Path) -> dict:
    moto = local.start_moto(workdir / f"moto-{n}.log")
    proxy = FaultProxy(moto.url)
    plugin = None
    try:
        aws = AwsHelper(moto.url)
        world = make_world(aws)
        env = dict(os.environ, **local.LOCAL_CREDENTIALS, AWS_EC2_METADATA_DISABLED="true")
        plugin = pluginclient.PluginProcess([str(PLUGIN_EXE)], workdir / f"plugin-{n}.stderr", env=env)
        plugin.start(timeout=60)
        plugin.set_config({"enabled": True, "cluster": world.cluster, "region": aws.region, "endpoint": proxy.url,
                           "poll_interval": f"{poll}s", "fingerprint_interval": "1h", "log_level": "warn"})
        body = cty.cty_msgpack(plugin.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest()).spec,
                               {"task": {"task_definition": f"{world.family}:1", "launch_type": "FARGATE",
                                         "network_configuration": {"aws_vpc_configuration": {
                                             "subnets": [world.subnet],
                                             "security_groups": [world.security_group]}}}})

        def start(i: int) -> tuple[str, str]:
            tid = f"{i:08d}-0000-0000-0000-000000000000/web/{i:08x}"
            cfg = driver_pb2.TaskConfig(id=tid, name="web", alloc_id=tid[:36], msgpack_driver_config=body)
            resp = plugin.driver.StartTask(driver_pb2.StartTaskRequest(task=cfg), timeout=120)
            return tid, DriverState.decode(resp.handle.driver_state).task_arn

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            started = list(pool.map(start, range(n)))
        note(f"N={n}: started {n} tasks in {time.monotonic() - t0:.1f}s")

        # idle: a few whole poll cycles with nothing changing
        time.sleep(poll * 1.5)
        proc = psutil.Process(plugin.pid)
        idle_from = time.monotonic()
        cpu0 = proc.cpu_times()
        time.sleep(poll * idle_cycles)
        cpu1 = proc.cpu_times()
        idle_s = time.monotonic() - idle_from
        cpu_pct = 100.0 * ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / idle_s
        rss_mb = proc.memory_info().rss / 2**20
        bursts = cycles_of(proxy.log, idle_from, gap=poll / 2)
        note(f"N={n}: idle cycles seen {len(bursts)}, DescribeTasks per cycle {bursts}")

        # detection: stop a sample directly in ECS, time until WaitTask answers
        ecs = aws.client("ecs")
        chosen = started[:: max(1, len(started) // sample)][:sample]
        waits = {tid: plugin.driver.WaitTask.future(driver_pb2.WaitTaskRequest(task_id=tid)) for tid, _ in chosen}
        time.sleep(0.5)
        latencies = []
        stopped_at = {}
        spacing = poll / len(chosen)  # spread the stops over one poll interval: every phase of the cycle
        for tid, arn in chosen:
            time.sleep(spacing)
            ecs.stop_task(cluster=world.cluster, task=arn, reason="benchmark")
            stopped_at[tid] = time.monotonic()
            waits[tid].add_done_callback(lambda f, tid=tid: latencies.append(time.monotonic() - stopped_at[tid]))
        for tid, _ in chosen:
            waits[tid].result(timeout=poll * 3 + 60)
        deadline = time.monotonic() + 5
        while len(latencies) < len(chosen) and time.monotonic() < deadline:
            time.sleep(0.01)

        return {"tasks": n, "poll_interval_s": poll,
                "describe_calls_per_cycle": max(bursts) if bursts else 0,
                "detect_p50_s": round(statistics.median(latencies), 3),
                "detect_p99_s": round(percentile(latencies, 99), 3),
                "rss_mb": round(rss_mb, 1), "idle_cpu_pct": round(cpu_pct, 2),
                "target_calls_per_cycle": math.ceil(n / 100), "detect_samples": len(latencies)}
    finally:
        if plugin is not None:
            plugin.kill()
        proxy.close()
        moto.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, action="append", help="number of tasks (repeatable; default 10, 100, 1000)")
    ap.add_argument("--poll-interval", type=float, default=5.0, help="the plugin's poll_interval in seconds")
    ap.add_argument("--sample", type=int, default=50, help="tasks stopped to measure detection latency")
    ap.add_argument("--idle-cycles", type=int, default=3, help="poll cycles measured while idle")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.tasks or []) or args.poll_interval <= 0 or args.sample < 1 or args.idle_cycles < 1:
        ap.error("--tasks, --poll-interval, --sample and --idle-cycles must be positive")
    with tempfile.TemporaryDirectory(prefix="monitor-scale-") as tmp:
        for n in args.tasks or [10, 100, 1000]:
            print(json.dumps(run_one(n, args.poll_interval, min(args.sample, n), args.idle_cycles, Path(tmp))),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
