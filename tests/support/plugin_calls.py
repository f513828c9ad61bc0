"""What the lifecycle tests send the plugin and read back, as Nomad's client does.

Task IDs and a job's `config {}` body, StartTask/StopTask/RecoverTask/InspectTask calls on a
`PluginHost`, a background TaskEvents reader, the RecoverableError detail of a failed call, the read end
of a task's stdout FIFO (`FifoReader`), and driver state in the forms RecoverTask accepts besides its own.
"""

from __future__ import annotations

import json
import os
import select
import struct
import threading
import time

import grpc
import msgpack
from google.protobuf.duration_pb2 import Duration
from grpc_status import rpc_status

from driver.pb import driver_pb2, recoverable_error_pb2
from driver.state import DriverState

ALLOC_A = "aaaaaaaa-1111-2222-3333-444444444444"
ALLOC_B = "bbbbbbbb-1111-2222-3333-444444444444"
TASK = "http-server"


def body(world, revision: int = 1) -> dict:
    """The job's `config {}` block, as HCL gives it (the host encodes it against the plugin's schema)."""
    return {"task": {"task_definition": f"{world.family}:{revision}", "launch_type": "FARGATE",
                     "network_configuration": {"aws_vpc_configuration": {
                         "assign_public_ip": "ENABLED", "subnets": [world.subnet],
                         "security_groups": [world.security_group]}}}}


def launch(plugin_host, config):
    host = plugin_host()
    host.set_config(config)
    return host


def task_id(alloc: str, n: int = 1) -> str:
    return f"{alloc}/{TASK}/{n:08x}"


def wait_req(tid):
    return driver_pb2.WaitTaskRequest(task_id=tid)


def stop(host, tid, signal="", timeout_s=10):
    host.driver.StopTask(driver_pb2.StopTaskRequest(task_id=tid, timeout=Duration(seconds=timeout_s),
                                                    signal=signal), timeout=timeout_s + 10)


def recover(host, handle, new_id=None, new_alloc=None, stdout_path=""):
    """RecoverTask as Nomad sends it: the saved handle, its config without msgpack_driver_config."""
    cfg = driver_pb2.TaskConfig(id=new_id or handle.config.id, name=handle.config.name,
                                alloc_id=new_alloc or handle.config.alloc_id, stdout_path=stdout_path)
    h = driver_pb2.TaskHandle(version=handle.version, config=cfg, driver_state=handle.driver_state)
    host.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=h), timeout=10)
    return cfg.id


def inspect(host, tid):
    return host.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=tid), timeout=10)


def arn_of(handle) -> str:
    return DriverState.decode(handle.driver_state).task_arn


class Events:
    """A TaskEvents stream read in the background, as the driver manager keeps one open."""

    def __init__(self, host):
        self.call = host.driver.TaskEvents(driver_pb2.TaskEventsRequest())
        self.items: list = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        time.sleep(0.5)  # let the plugin subscribe: events published before that are not replayed

    def _read(self):
        try:
            for ev in self.call:
                self.items.append(ev)
        except grpc.RpcError:
            pass

    def messages(self, tid=None) -> list[str]:
        return [e.message for e in list(self.items) if tid is None or e.task_id == tid]

    def wait_for(self, predicate, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(m) for m in self.messages()):
                return
            time.sleep(0.05)
        raise AssertionError(f"no matching task event within {timeout}s; got {self.messages()}")

    def close(self):
        self.call.cancel()


def recoverable(err: grpc.RpcError) -> bool | None:
    """The RecoverableError detail Nomad reads from a StartTask error (None when absent)."""
    status = rpc_status.from_call(err)
    if status is None or not status.details:
        return None
    detail = recoverable_error_pb2.RecoverableError()
    assert status.details[0].Unpack(detail)
    return detail.recoverable


class FifoReader:
    """The read end of a task's stdout FIFO, as Nomad's logmon holds it."""

    def __init__(self, path: str, create: bool = True):
        self.path = path
        if create:
            os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.buf = b""

    def read(self) -> str:
        while True:
            r, _, _ = select.select([self.fd], [], [], 0)
            if not r:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf.decode()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.read():
                return self.buf.decode()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not written to {self.path} within {timeout}s; got:\n{self.read()}")

    def close(self) -> None:
        os.close(self.fd)


# --- driver state in the forms RecoverTask accepts besides its own ----------------------------------

def json_v1_state(arn: str, cluster: str, region: str | None, alloc_id: str = "", task_name: str = "",
                  started_at: str = "2026-11-30T10:00:00.000000Z") -> bytes:
    """Our driver's earlier state: UTF-8 JSON, version 1 (as released before the msgpack state)."""
    return json.dumps({"v": 1, "cluster": cluster, "region": region, "task_arn": arn, "started_at": started_at,
                       "alloc_id": alloc_id, "task_name": task_name, "container": "web"},
                      separators=(",", ":")).encode()


def go_time_binary(ts) -> bytes:
    """A Go time.Time as MarshalBinary (version 1) writes it: seconds since 0001-01-01, nanoseconds, UTC (-1)."""
    secs = int(ts.timestamp()) + 62135596800
    return struct.pack(">Bqih", 1, secs, ts.microsecond * 1000, -1)


def reference_state(arn: str, started_at, task_id: str, alloc_id: str, name: str = "http-server") -> bytes:
    """hashicorp/nomad-driver-ecs's state as Nomad's msgpack handle writes it: classic msgpack (strings as
    raw), field names as keys, the time as MarshalBinary bytes (`TimeNotBuiltin`), no cluster, no region."""
    task_config = {"ID": task_id, "JobName": "nomad-ecs-demo", "TaskGroupName": "ecs-remote-task-demo",
                   "Name": name, "Namespace": "default", "AllocID": alloc_id, "Env": {}, "Resources": None,
                   "StdoutPath": f"/alloc/logs/.{name}.stdout.fifo"}
    return msgpack.packb({"TaskConfig": task_config, "ContainerName": "web", "ARN": arn,
                          "StartedAt": go_time_binary(started_at)}, use_bin_type=False)
