"""`PluginRuntime`: the simulated clients' tasks run through the REAL plugin (`nomad-driver-ecs` processes).

A drop-in for `EcsRuntime` that does what Nomad's client does with a driver plugin (nomad-plugin-protocol.md
sections F and G), so the fake Nomad's scenarios exercise the plugin end to end:

* one plugin process per simulated node, started lazily with the agent-start sequence (`agent_start`:
  loader fingerprint, config validation, the driver manager's SetConfig), then the Fingerprint and
  TaskEvents streams are opened and read in the background (`NodePlugin.events` keeps the task events);
* start: `StartTask` with a new task id `<alloc_id>/<task>/<8 hex>` and the task's `config {}` encoded
  against the plugin's TaskConfigSchema; the TaskHandle is returned as Nomad's API shows it;
* recover (a replacement alloc with a propagated handle): `RecoverTask` with a NEW task id and the handle
  (no msgpack_driver_config), then `InspectTask`; None on any failure (the client then starts anew);
* detach (drain, lost alloc): `StopTask(signal="DETACH")`, `WaitTask`, `DestroyTask(force=True)`;
* stop (normal kill): `StopTask(signal="", timeout)`, `WaitTask`, `DestroyTask(force=True)`.

Each task's stdout_path is a regular file under `workdir/tasks/` (Nomad's is a logmon FIFO), so the plugin's
task output lines can be read back with `task_output(alloc_id, task)`. `close()` shuts every plugin process
down (GRPCController/Shutdown, then SIGKILL); killing the agent of a node leaves its plugin running, as in
reality, and the node's restarted agent uses the same process (as Nomad reattaches).
"""

from __future__ import annotations

import base64
import json
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration

from driver.pb import driver_pb2
from tests.driver.host import PluginHost, agent_start
from tests.fakenomad.runtime import RuntimeError_

DETACH = "DETACH"
RPC_TIMEOUT = 30.0


def _rpc_error(exc: grpc.RpcError) -> str:
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code}: {details}"


@dataclass
class NodePlugin:
    """One node's plugin process (the driver manager's instance) and what its streams delivered."""

    node_id: str
    host: PluginHost
    launches: list[PluginHost]
    events: list[dict] = field(default_factory=list)          # TaskEvents, as dicts
    health: list[str] = field(default_factory=list)           # Fingerprint health states, in order
    _streams: list = field(default_factory=list)
    _fingerprinted: threading.Event = field(default_factory=threading.Event)

    def follow(self, timeout: float = 10.0) -> None:
        """Open TaskEvents and Fingerprint (Nomad keeps both open), read them on daemon threads, and wait
        for the first fingerprint (Nomad uses a driver only once fingerprinted). TaskEvents is opened first,
        so by then the plugin has subscribed it and no task's event is missed."""
        ev = self.host.driver.TaskEvents(driver_pb2.TaskEventsRequest())
        fp = self.host.driver.Fingerprint(driver_pb2.FingerprintRequest())
        self._streams += [ev, fp]
        threading.Thread(target=self._read, args=(ev, self._on_event), daemon=True).start()
        threading.Thread(target=self._read, args=(fp, self._on_fingerprint), daemon=True).start()
        if not self._fingerprinted.wait(timeout):
            raise RuntimeError_(f"the plugin sent no fingerprint within {timeout:g}s")

    def _on_fingerprint(self, msg) -> None:
        self.health.append(driver_pb2.FingerprintResponse.HealthState.Name(msg.health))
        self._fingerprinted.set()

    def _on_event(self, msg) -> None:
        self.events.append({"time": msg.timestamp.ToNanoseconds(), "task_id": msg.task_id, "alloc_id": msg.alloc_id, "task_name": msg.task_name,
                            "message": msg.message, "annotations": dict(msg.annotations)})

    @staticmethod
    def _read(stream, on_message) -> None:
        try:
            for msg in stream:
                on_message(msg)
        except grpc.RpcError:
            pass  # cancelled at close, or the plugin went away

    def close(self) -> None:
        for s in self._streams:
            s.cancel()
        try:
            self.host.shutdown()
        finally:
            for h in self.launches:
                h.kill()


class PluginRuntime:
    """Runs the simulated clients' tasks through one real plugin process per node (see module doc)."""

    def __init__(self, endpoint: str | None, cluster: str, region: str = "us-east-1", workdir: Path | None = None,
                 poll_interval: str = "100ms", fingerprint_interval: str = "200ms", stop_timeout: float = 10.0):
        self.config = {"enabled": True, "cluster": cluster, "region": region, "endpoint": endpoint,
                       "poll_interval": poll_interval, "fingerprint_interval": fingerprint_interval}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="plugin-runtime-"))
        self.stop_timeout = stop_timeout
        self.nodes: dict[str, NodePlugin] = {}
        self.task_ids: dict[tuple[str, str], tuple[str, str]] = {}   # (alloc id, task) -> (node id, task id)
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._closed = False

    # --- plugin processes ----------------------------------------------------------------------------
    def plugin(self, node_id: str) -> NodePlugin:
        """The node's plugin, launched (agent-start sequence) on first use."""
        with self._lock:
            if self._closed:
                raise RuntimeError_("the plugin runtime is closed")
            lock = self._node_locks.setdefault(node_id, threading.Lock())
        with lock:
            if node_id in self.nodes:
                return self.nodes[node_id]
            launched: list[PluginHost] = []

            def launch() -> PluginHost:
                host = PluginHost(self.workdir / "plugins" / node_id[:8])
                launched.append(host)
                host.start(timeout=30)
                return host
            try:
                node = NodePlugin(node_id, agent_start(launch, self.config).host, launched)
                node.follow()
            except Exception as exc:
                for h in launched:
                    h.kill()
                raise RuntimeError_(f"failed to launch the driver plugin: {exc}") from None
            with self._lock:
                if not self._closed:
                    self.nodes[node_id] = node
                    return node
            node.close()  # closed while launching: leave nothing running
            raise RuntimeError_("the plugin runtime is closed")

    def close(self) -> None:
        """Shut every plugin process down (Shutdown, then SIGKILL); the ECS tasks are left as they are."""
        with self._lock:
            self._closed = True
            nodes = list(self.nodes.values())
        for node in nodes:
            try:
                node.close()
            except Exception:  # noqa: BLE001 - close() kills every launch regardless; go on with the others
                pass

    # --- task config ---------------------------------------------------------------------------------
    def _task_config(self, alloc: dict, task: dict, driver_config: bytes = b"") -> driver_pb2.TaskConfig:
        task_id = f"{alloc['ID']}/{task['Name']}/{secrets.token_hex(4)}"
        stdout = self.workdir / "tasks" / f"{task_id.replace('/', '_')}.stdout"
        stdout.parent.mkdir(parents=True, exist_ok=True)
        stdout.touch()
        return driver_pb2.TaskConfig(id=task_id, name=task["Name"], alloc_id=alloc["ID"], job_name=alloc["JobID"],
                                     task_group_name=alloc["TaskGroup"], msgpack_driver_config=driver_config,
                                     stdout_path=str(stdout), stderr_path=str(stdout.with_suffix(".stderr")))

    def _remember(self, alloc: dict, task: dict, node_id: str, task_id: str) -> None:
        with self._lock:
            self.task_ids[(alloc["ID"], task["Name"])] = (node_id, task_id)

    def task_output(self, alloc_id: str, task_name: str) -> list[str]:
        """The lines the plugin wrote to the stdout of every task id it was given for (alloc, task)."""
        lines = []
        for path in sorted((self.workdir / "tasks").glob(f"{alloc_id}_{task_name}_*.stdout")):
            lines += path.read_text(errors="replace").splitlines()
        return lines

    def events(self, alloc_id: str | None = None) -> list[dict]:
        """Every TaskEvent the plugins sent (optionally for one alloc) in time order, with the node id added."""
        return sorted((dict(e, node_id=n.node_id) for n in list(self.nodes.values()) for e in list(n.events)
                       if alloc_id is None or e["alloc_id"] == alloc_id), key=lambda e: e["time"])

    # --- the runtime interface -------------------------------------------------------------------------
    def start(self, alloc: dict, task: dict) -> tuple[dict, str]:
        """StartTask. Returns (TaskHandle as Nomad's API shows it, task ARN)."""
        node = self.plugin(alloc["NodeID"])
        try:  # TaskConfigSchema, then the config encoded against it (as each TaskRunner does)
            body = node.host.encode_task_config(task.get("Config"))
        except Exception as exc:  # CtyError: Nomad reports these before the plugin sees anything
            raise RuntimeError_(f"failed to decode the task config: {exc}") from None
        cfg = self._task_config(alloc, task, body)
        try:
            resp = node.host.driver.StartTask(driver_pb2.StartTaskRequest(task=cfg), timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise RuntimeError_(f"failed to start task: {_rpc_error(exc)}") from None
        self._remember(alloc, task, node.node_id, cfg.id)
        handle = resp.handle
        arn = json.loads(handle.driver_state)["task_arn"]
        return {"Version": handle.version, "DriverState": base64.b64encode(handle.driver_state).decode()}, arn

    def recover(self, handle: dict, alloc: dict | None = None, task: dict | None = None) -> str | None:
        """RecoverTask with a new task id, then InspectTask: the ARN, or None when either fails."""
        if alloc is None or task is None:
            return None
        node = self.plugin(alloc["NodeID"])
        cfg = self._task_config(alloc, task)
        th = driver_pb2.TaskHandle(version=int(handle.get("Version") or 0), config=cfg, state=driver_pb2.UNKNOWN,
                                   driver_state=base64.b64decode(handle.get("DriverState") or ""))
        try:
            node.host.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=th), timeout=RPC_TIMEOUT)
            status = node.host.driver.InspectTask(driver_pb2.InspectTaskRequest(task_id=cfg.id), timeout=RPC_TIMEOUT)
        except grpc.RpcError:
            return None
        self._remember(alloc, task, node.node_id, cfg.id)
        return status.driver.attributes.get("arn") or None

    def detach(self, handle: dict, alloc_id: str, task_name: str) -> None:
        """DETACH kill: StopTask(signal=DETACH), WaitTask, DestroyTask(force)."""
        self._kill(alloc_id, task_name, DETACH)

    def stop(self, handle: dict, alloc_id: str, task_name: str) -> None:
        """Normal kill: StopTask(signal="", timeout), WaitTask, DestroyTask(force)."""
        self._kill(alloc_id, task_name, "")

    def _kill(self, alloc_id: str, task_name: str, signal: str) -> None:
        with self._lock:
            entry = self.task_ids.get((alloc_id, task_name))
        if entry is None:
            raise RuntimeError_(f"no plugin task id for allocation {alloc_id} task {task_name}")
        node_id, task_id = entry
        driver = self.plugin(node_id).host.driver
        timeout = Duration()
        timeout.FromNanoseconds(int(self.stop_timeout * 1e9))
        try:
            driver.StopTask(driver_pb2.StopTaskRequest(task_id=task_id, timeout=timeout, signal=signal),
                            timeout=self.stop_timeout + RPC_TIMEOUT)
            driver.WaitTask(driver_pb2.WaitTaskRequest(task_id=task_id), timeout=RPC_TIMEOUT)
            driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=task_id, force=True), timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise RuntimeError_(f"{'detach' if signal else 'stop'} of task {task_id} failed: "
                                f"{_rpc_error(exc)}") from None
        with self._lock:
            self.task_ids.pop((alloc_id, task_name), None)
