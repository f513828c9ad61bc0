"""The simulated clients' driver plugins: REAL `nomad-driver-ecs` processes, one per node.

`NodePlugin` is one node's plugin instance as Nomad's driver manager holds it
(`client/pluginmanager/drivermanager/instance.go`): a gRPC connection, the Fingerprint and TaskEvents
streams read in the background, and the task RPCs the task runner makes (`plugins/drivers/client.go`),
each recorded in `calls` (a call log tests assert on). Two ways to get one, as in Nomad
(docs/nomad-notes.md, "Agent start: three launches" and "Shutdown and reattach"):

* `NodePlugin.launch`: the agent-start sequence (`agent_start`: loader fingerprint, config validation,
  the driver manager's SetConfig; three launches); the instance owns its process;
* `NodePlugin.reattach`: dial a running plugin by its go-plugin reattach info (network, address, pid)
  and call only PluginInfo, no handshake and no SetConfig. The stand-in client agent launches its plugin
  and the server process's simulated client reattaches to it; the agent owns that process.

`PluginRuntime` launches and owns one plugin per node for an in-process `FakeNomad`. Killing a node's
agent (`kill -9`) leaves its plugin running, and the restarted agent uses the same process (as Nomad
reattaches). `close()` shuts every plugin down (GRPCController/Shutdown, then SIGKILL); ECS tasks are left
as they are. `AttachedRuntime` is the same interface over a plugin that a stand-in agent process owns.

Test knob: `recover_starts_new=True` hands the replacement allocation's RecoverTask a driver state this
plugin cannot read (what happens when a client switches driver implementations), so the plugin refuses
it and the client, as Nomad does (`remotetask_hook.go`: a soft error), starts a second ECS task.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from google.protobuf.duration_pb2 import Duration
from grpc_status import rpc_status

from driver.pb import base_pb2, driver_pb2, recoverable_error_pb2
from ecsdemo.cty import cty_msgpack
from ecsdemo.pluginclient import Handshake, PluginProcess
from tests.support.plugin_host import PluginHost, agent_start

DETACH = "DETACH"           # plugins/drivers/driver.go DetachSignal
RPC_TIMEOUT = 30.0
UNREADABLE_STATE = b"\x00not a driver state this plugin wrote"


class DriverError(Exception):
    """A driver call failed; the text becomes the task event's message. `recoverable` follows the
    RecoverableError detail of StartTask errors (plugins/drivers/client.go, plugins/base/structs)."""

    def __init__(self, message: str, recoverable: bool = False, code: str = ""):
        super().__init__(message)
        self.recoverable = recoverable
        self.code = code


class TaskNotFound(DriverError):
    """drivers.ErrTaskNotFound: the plugin answered NOT_FOUND."""


class PluginGone(DriverError):
    """drivers.ErrPluginShutdown: the plugin process is gone (UNAVAILABLE / CANCELLED)."""


def _rpc_error(exc: grpc.RpcError, what: str) -> DriverError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        return TaskNotFound(f"{what}: {details}", code=code.name)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return PluginGone(f"{what}: plugin is shut down ({details})", code=code.name)
    recoverable = False
    try:
        status = rpc_status.from_call(exc)
        for d in (status.details if status else []):
            if d.Is(recoverable_error_pb2.RecoverableError.DESCRIPTOR):
                detail = recoverable_error_pb2.RecoverableError()
                d.Unpack(detail)
                recoverable = detail.recoverable
    except Exception:  # noqa: BLE001 - no details: not recoverable
        pass
    return DriverError(f"{what}: {details}", recoverable=recoverable, code=code.name)


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _attr(value) -> str:
    kind = value.WhichOneof("value")
    return ("" if kind is None
            else str(getattr(value, kind)).lower() if kind == "bool_val" else str(getattr(value, kind)))


class ReattachedProcess(PluginProcess):
    """A plugin process known only by its reattach info (no pipe to it): go-plugin's ReattachConfig."""

    def __init__(self, network: str, address: str, pid: int, stderr_path: Path | None = None):
        super().__init__(["(reattached)"], stderr_path or Path(os.devnull))
        self.handshake = Handshake(f"1|2|{network}|{address}|grpc", 1, 2, network, address, "grpc")
        self._pid = pid

    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        try:
            return psutil.Process(self._pid).status() != psutil.STATUS_ZOMBIE
        except Exception:
            return False

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        return 0

    def kill(self) -> None:
        if self.alive():
            try:
                os.kill(self._pid, signal.SIGKILL)
            except OSError:
                pass
            self.wait(5)
        self.close_channel()


@dataclass
class Call:
    """One driver RPC the simulated client made (the call log)."""

    rpc: str
    task_id: str
    detail: dict
    error: str = ""


class NodePlugin:
    """One node's driver plugin instance: streams, task RPCs and a call log (see module doc)."""

    def __init__(self, node_id: str, proc: PluginProcess, launches: list[PluginProcess], owned: bool):
        self.node_id = node_id
        self.host = proc
        self.launches = launches
        self.owned = owned
        self.events: list[dict] = []          # TaskEvents, as dicts
        self.health: list[str] = []           # Fingerprint health states, in order
        self.calls: list[Call] = []
        self.fingerprint: driver_pb2.FingerprintResponse | None = None
        self.on_fingerprint = None            # callback(FingerprintResponse), set by the node's client
        self._streams: list = []
        self._fingerprinted = threading.Event()
        self._lock = threading.Lock()

    # --- getting one ------------------------------------------------------------------------------
    @classmethod
    def launch(cls, node_id: str, launch, config: dict) -> "NodePlugin":
        """docs/nomad-notes.md, "Agent start: three launches" (loader/init.go, drivermanager/instance.go)."""
        launched: list[PluginProcess] = []

        def counted():
            proc = launch()
            launched.append(proc)
            return proc
        try:
            node = cls(node_id, agent_start(counted, config).host, launched, owned=True)
            node.follow()
        except Exception:
            for p in launched:
                p.kill()
            raise
        return node

    @classmethod
    def reattach(cls, node_id: str, network: str, address: str, pid: int, owned: bool = False,
                 stderr_path: Path | None = None) -> "NodePlugin":
        """A.9: dial the saved address and call only PluginInfo (no handshake, no SetConfig)."""
        proc = ReattachedProcess(network, address, pid, stderr_path)
        proc.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=5)
        node = cls(node_id, proc, [proc], owned=owned)
        node.follow()
        return node

    def follow(self, timeout: float = 15.0) -> None:
        """Open TaskEvents and Fingerprint (the driver manager keeps both open) and wait for the first
        fingerprint (drivermanager/manager.go WaitForFirstFingerprint: the client registers only then)."""
        ev = self.host.driver.TaskEvents(driver_pb2.TaskEventsRequest())
        fp = self.host.driver.Fingerprint(driver_pb2.FingerprintRequest())
        self._streams += [ev, fp]
        threading.Thread(target=self._read, args=(ev, self._on_event), daemon=True).start()
        threading.Thread(target=self._read, args=(fp, self._on_fingerprint), daemon=True).start()
        if not self._fingerprinted.wait(timeout):
            raise DriverError(f"the plugin sent no fingerprint within {timeout:g}s")

    def _on_fingerprint(self, msg) -> None:
        self.health.append(driver_pb2.FingerprintResponse.HealthState.Name(msg.health))
        self.fingerprint = msg
        self._fingerprinted.set()
        callback = self.on_fingerprint
        if callback is not None:
            callback(msg)

    def driver_info(self) -> dict:
        """The last fingerprint as Node.Drivers["ecs"] fields (client.go updateNodeFromDriver)."""
        fp = self.fingerprint
        H = driver_pb2.FingerprintResponse
        return {"detected": fp.health != H.UNDETECTED, "healthy": fp.health == H.HEALTHY,
                "description": fp.health_description,
                "attributes": {k: _attr(v) for k, v in sorted(fp.attributes.items())}}

    def _on_event(self, msg) -> None:
        self.events.append({"time": msg.timestamp.ToNanoseconds(), "task_id": msg.task_id,
                            "alloc_id": msg.alloc_id, "task_name": msg.task_name, "message": msg.message,
                            "annotations": dict(msg.annotations)})

    @staticmethod
    def _read(stream, on_message) -> None:
        try:
            for msg in stream:
                on_message(msg)
        except grpc.RpcError:
            pass  # cancelled at close, or the plugin went away

    def close(self) -> None:
        """Cancel the streams; an owned plugin is shut down (go-plugin Client.Kill), else only disconnected."""
        for s in self._streams:
            s.cancel()
        if not self.owned:
            self.host.close_channel()
            return
        try:
            self.host.shutdown()
        finally:
            for p in self.launches:
                p.kill()

    # --- task RPCs (plugins/drivers/client.go) ---------------------------------------------------------
    def _call(self, rpc: str, task_id: str, fn, **detail):
        entry = Call(rpc, task_id, detail)
        with self._lock:
            self.calls.append(entry)
        try:
            return fn()
        except grpc.RpcError as exc:
            err = _rpc_error(exc, f"{rpc} {task_id}")
            entry.error = str(err)
            raise err from None

    def encode_task_config(self, body: dict | None) -> bytes:
        """TaskConfigSchema, then the `config {}` body encoded against it (each TaskRunner's initDriver)."""
        spec = self._call("TaskConfigSchema", "", lambda: self.host.driver.TaskConfigSchema(
            driver_pb2.TaskConfigSchemaRequest(), timeout=RPC_TIMEOUT)).spec
        return cty_msgpack(spec, body)

    def start_task(self, cfg: driver_pb2.TaskConfig) -> driver_pb2.TaskHandle:
        resp = self._call("StartTask", cfg.id, lambda: self.host.driver.StartTask(
            driver_pb2.StartTaskRequest(task=cfg), timeout=RPC_TIMEOUT))
        return resp.handle

    def recover_task(self, handle: driver_pb2.TaskHandle) -> None:
        self._call("RecoverTask", handle.config.id, lambda: self.host.driver.RecoverTask(
            driver_pb2.RecoverTaskRequest(task_id=handle.config.id, handle=handle), timeout=RPC_TIMEOUT))

    def inspect_task(self, task_id: str) -> driver_pb2.InspectTaskResponse:
        return self._call("InspectTask", task_id, lambda: self.host.driver.InspectTask(
            driver_pb2.InspectTaskRequest(task_id=task_id), timeout=RPC_TIMEOUT))

    def capabilities(self) -> driver_pb2.DriverCapabilities:
        return self._call("Capabilities", "", lambda: self.host.driver.Capabilities(
            driver_pb2.CapabilitiesRequest(), timeout=RPC_TIMEOUT)).capabilities

    def wait_task(self, task_id: str):
        """WaitTask as a future (the task runner keeps it open; cancel it when the agent stops)."""
        return self._call("WaitTask", task_id, lambda: self.host.driver.WaitTask.future(
            driver_pb2.WaitTaskRequest(task_id=task_id)))

    def stop_task(self, task_id: str, timeout: float, sig: str) -> None:
        self._call("StopTask", task_id, lambda: self.host.driver.StopTask(
            driver_pb2.StopTaskRequest(task_id=task_id, timeout=_duration(timeout), signal=sig),
            timeout=timeout + RPC_TIMEOUT), signal=sig, timeout=timeout)

    def destroy_task(self, task_id: str, force: bool) -> None:
        self._call("DestroyTask", task_id, lambda: self.host.driver.DestroyTask(
            driver_pb2.DestroyTaskRequest(task_id=task_id, force=force), timeout=RPC_TIMEOUT), force=force)

    def call_log(self, alloc_id: str | None = None) -> list[tuple[str, str, dict, str]]:
        """(rpc, task id, detail, error) of every call in order, optionally only one allocation's tasks."""
        with self._lock:
            return [(c.rpc, c.task_id, c.detail, c.error) for c in self.calls
                    if alloc_id is None or c.task_id.startswith(alloc_id + "/")]


class PluginRuntime:
    """Launches and owns one real plugin process per node of an in-process FakeNomad (see module doc)."""

    def __init__(self, endpoint: str | None, cluster: str, region: str = "us-east-1", workdir: Path | None = None,
                 poll_interval: str = "100ms", fingerprint_interval: str = "200ms", recover_starts_new: bool = False):
        self.config = {"enabled": True, "cluster": cluster, "region": region, "endpoint": endpoint,
                       "poll_interval": poll_interval, "fingerprint_interval": fingerprint_interval}
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="plugin-runtime-"))
        self.recover_starts_new = recover_starts_new
        self.nodes: dict[str, NodePlugin] = {}
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._closed = False

    def plugin(self, node_id: str) -> NodePlugin:
        """The node's plugin, launched (agent-start sequence) on first use and reused after an agent restart."""
        with self._lock:
            if self._closed:
                raise DriverError("the plugin runtime is closed")
            lock = self._node_locks.setdefault(node_id, threading.Lock())
        with lock:
            if node_id in self.nodes:
                return self.nodes[node_id]

            def launch() -> PluginHost:
                host = PluginHost(self.workdir / "plugins" / node_id[:8])
                host.start(timeout=30)
                return host
            try:
                node = NodePlugin.launch(node_id, launch, self.config)
            except Exception as exc:
                raise DriverError(f"failed to launch the driver plugin: {exc}") from None
            with self._lock:
                if not self._closed:
                    self.nodes[node_id] = node
                    return node
            node.close()  # closed while launching: leave nothing running
            raise DriverError("the plugin runtime is closed")

    def release(self, node_id: str) -> None:
        """The node's agent died (kill -9): its plugin keeps running, for the next agent to reattach."""

    def alloc_dir(self, node_id: str) -> Path:
        return self.workdir / "nodes" / node_id[:8] / "alloc"

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

    # --- what the plugins did, for tests --------------------------------------------------------------
    def events(self, alloc_id: str | None = None) -> list[dict]:
        """Every TaskEvent the plugins sent (optionally for one alloc) in time order, with the node id added."""
        return sorted((dict(e, node_id=n.node_id) for n in list(self.nodes.values()) for e in list(n.events)
                       if alloc_id is None or e["alloc_id"] == alloc_id), key=lambda e: e["time"])

    def call_log(self, alloc_id: str | None = None) -> list[tuple[str, str, str, dict, str]]:
        """(node id, rpc, task id, detail, error) of every plugin's calls (per node in order)."""
        return [(n.node_id, *c) for n in list(self.nodes.values()) for c in n.call_log(alloc_id)]

    def task_output(self, alloc_id: str, task_name: str) -> list[str]:
        """The lines the plugin wrote to (alloc, task)'s stdout, on whichever node ran it."""
        lines = []
        for node_id in list(self.nodes):
            path = self.alloc_dir(node_id) / alloc_id / "alloc" / "logs" / f"{task_name}.stdout.0"
            if path.exists():
                lines += path.read_text(errors="replace").splitlines()
        return lines


class AttachedRuntime:
    """The plugin a stand-in client agent process launched and owns, reattached by address."""

    def __init__(self, node_id: str, network: str, address: str, pid: int, alloc_dir: Path,
                 recover_starts_new: bool = False):
        self.node_id, self.network, self.address, self.pid = node_id, network, address, pid
        self._alloc_dir = Path(alloc_dir)
        self.recover_starts_new = recover_starts_new
        self.node: NodePlugin | None = None
        self._lock = threading.Lock()

    def plugin(self, node_id: str) -> NodePlugin:
        with self._lock:
            if self.node is None:
                try:
                    self.node = NodePlugin.reattach(node_id, self.network, self.address, self.pid)
                except (grpc.RpcError, DriverError) as exc:
                    raise DriverError(f"failed to reattach to the driver plugin at {self.address}: {exc}") from None
            return self.node

    def release(self, node_id: str) -> None:
        """The agent process is gone or stopping: disconnect (it owns, and stops, the plugin process)."""
        with self._lock:
            node, self.node = self.node, None
        if node is not None:
            node.close()

    def alloc_dir(self, node_id: str) -> Path:
        return self._alloc_dir

    def close(self) -> None:
        self.release(self.node_id)
