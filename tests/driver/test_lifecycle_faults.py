"""AWS trouble between the plugin and ECS (a fault-injecting proxy in front of moto): nothing exits."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from driver.pb import driver_pb2
from tests.support import faultproxy
from tests.support.plugin_calls import ALLOC_A, TASK, Events, arn_of, body, inspect, recoverable, task_id, wait_req

pytestmark = pytest.mark.slow

HEALTHY = driver_pb2.FingerprintResponse.HEALTHY
UNHEALTHY = driver_pb2.FingerprintResponse.UNHEALTHY


class Fingerprints:
    def __init__(self, host):
        self.call = host.driver.Fingerprint(driver_pb2.FingerprintRequest())
        self.seen: list[tuple[float, int, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for fp in self.call:
                self.seen.append((time.monotonic(), fp.health, fp.health_description))
        except grpc.RpcError:
            pass

    def wait_health(self, health, after: float = 0.0, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, h, desc in list(self.seen):
                if h == health and t >= after:
                    return desc
            time.sleep(0.05)
        raise AssertionError(f"fingerprint never reported {health} after {after}; saw {self.seen[-5:]}")


def test_faults_never_end_a_task_nor_duplicate_it(world, plugin_host):
    aws = world.aws
    with faultproxy.FaultProxy(aws.url) as proxy:
        host = plugin_host()
        host.set_config({"enabled": True, "cluster": world.cluster, "region": aws.region, "endpoint": proxy.url,
                         "fingerprint_interval": "200ms", "poll_interval": "200ms"})
        fps = Fingerprints(host)
        fps.wait_health(HEALTHY)
        events = Events(host)
        tid = task_id(ALLOC_A)
        handle = host.start_task(tid, ALLOC_A, TASK, body(world)).handle
        waiter = host.driver.WaitTask.future(wait_req(tid))

        outage = time.monotonic()
        for mode in ("5xx", "throttle", "refuse"):
            proxy.fault(mode)
            # 9 s in all: several failed DescribeTasks calls (each with botocore's retries) must fit in the
            # outage for the monitor's 3 s "degraded" threshold to be crossed
            time.sleep(3)
        unhealthy = fps.wait_health(UNHEALTHY, after=outage, timeout=1)
        assert unhealthy  # a description a person can act on
        proxy.fault("slow", delay=1.0)
        time.sleep(2)
        proxy.fault(None)
        back = time.monotonic()

        fps.wait_health(HEALTHY, after=back, timeout=30)
        events.wait_for(lambda m: m.startswith("ECS monitoring degraded"), timeout=5)
        events.wait_for(lambda m: m == "ECS monitoring resumed", timeout=30)
        assert not waiter.done(), "a task must not be reported exited because AWS was unreachable"
        ins = inspect(host, tid)
        assert ins.task.state == driver_pb2.RUNNING and ins.driver.attributes["last_status"] == "RUNNING"
        assert proxy.faulted["DescribeTasks"] > 0 and proxy.count("RunTask") == 1
        tasks = world.all_tasks()
        assert [t["taskArn"] for t in tasks] == [arn_of(handle)] and tasks[0]["lastStatus"] == "RUNNING"

        # and the plugin still works normally afterwards
        host.driver.StopTask(driver_pb2.StopTaskRequest(task_id=tid, timeout=Duration(seconds=10)), timeout=20)
        assert waiter.result(timeout=10).result.exit_code == 0
        assert world.describe(arn_of(handle))["lastStatus"] == "STOPPED"
        events.close()
        fps.call.cancel()


def test_throttled_runtask_is_a_recoverable_start_error(world, plugin_host):
    aws = world.aws
    with faultproxy.FaultProxy(aws.url) as proxy:
        host = plugin_host()
        host.set_config({"enabled": True, "cluster": world.cluster, "region": aws.region, "endpoint": proxy.url,
                         "fingerprint_interval": "1h", "poll_interval": "200ms"})
        proxy.fault("throttle")
        try:
            host.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world))
            raise AssertionError("StartTask succeeded through a throttling endpoint")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "Throttling" in err.details()
            assert recoverable(err) is True  # Nomad's restart policy may try again
        assert proxy.faulted["RunTask"] >= 1
        proxy.fault(None)
        assert world.all_tasks() == []
        # the retry Nomad makes (a new StartTask for the same task id) now works
        handle = host.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world)).handle
        assert [t["taskArn"] for t in world.all_tasks()] == [arn_of(handle)]
