"""`FakeNomad`: a recording, failure-injecting fake of Nomad's HTTP API with simulated clients.

Typical use (tests/support/fake_nomad.py has the fixtures)::

    fake = FakeNomad(version="1.6.5", timings=Timings.fast(), runtime=PluginRuntime(moto_url, "demo-cluster"))
    fake.start()
    n1 = fake.add_node("nomad-client-1")          # registers, heartbeats, serves its own agent port
    n2, n3 = fake.add_nodes(["nomad-client-2", "nomad-client-3"])   # started at once, both ready
    fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
    ...  # drive it through ecsdemo.nomad.NomadClient(fake.address)
    fake.kill_node(n1); fake.restart_node(n1)     # lost-node scenario
    fake.stop()                                   # joins every thread and closes every port
    fake.runtime.close()                          # shuts the plugin processes down

Only Nomad's HTTP API is faked; every task runs through a real `nomad-driver-ecs` process per node
(`PluginRuntime`, tests/fakenomad/plugin_runtime.py) on ECS (moto in tests). A node without a runtime has a
healthy-looking `ecs` driver but every task start fails (for tests of the API alone).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping

from ecsdemo.local import free_port
from tests.fakenomad.client import SimClient, driver_info
from tests.fakenomad.model import Cluster, Timings
from tests.fakenomad.scheduler import ServerLoop
from tests.fakenomad.server import AgentHandler, HttpServer, NomadHandler, Recorded


class FakeNomad:
    def __init__(self, version: str = "1.6.5", timings: Timings | None = None, runtime=None, port: int = 0):
        self.cluster = Cluster(version, timings or Timings.fast())
        self.runtime = runtime
        self.requests: list[Recorded] = []
        self._port = port
        self._failures: list[list] = []
        self._lock = threading.Lock()
        self._http: HttpServer | None = None
        self._loop = ServerLoop(self.cluster)
        self.clients: dict[str, SimClient] = {}
        self._agents: dict[str, HttpServer] = {}
        self._agent_ports: dict[str, int] = {}

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "FakeNomad":
        self._http = HttpServer(self, NomadHandler, self._port)
        self._loop.start()
        return self

    def stop(self) -> None:
        """Stop every client, listener and thread; afterwards connections are refused."""
        with self.cluster.cond:
            self.cluster.closed = True
            self.cluster.cond.notify_all()
        for node_id in list(self.clients):
            self._stop_client(node_id)
        self._loop.stop()
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> "FakeNomad":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._http is not None, "FakeNomad is not started"
        return self._http.port

    @property
    def address(self) -> str:
        """The server agent's HTTP address, as NOMAD_ADDR would hold it."""
        return f"http://127.0.0.1:{self.port}"

    url = address

    # --- simulated client nodes -------------------------------------------------------------------
    def add_node(self, name: str, node_id: str | None = None, agent_port: int | None = 0,
                 healthy: bool | None = None, detected: bool = True, description: str | None = None,
                 pid: int | None = None, runtime=None, data_dir=None) -> str:
        """Start a client agent for a new node (its plugin fingerprinted, then registered); returns its ID.

        `agent_port=0` serves its HTTP API on a free port (`client_address(node_id)`), None serves none.
        `pid` binds the node to a process: when that process dies, heartbeats stop (node goes down).
        `healthy`/`description` pin Drivers["ecs"] (otherwise the plugin's fingerprint decides it).
        `data_dir` keeps the client's local state (saved task handles) in a file there.
        """
        node_id = node_id or str(uuid.uuid4())
        port = 0
        if agent_port is not None:
            port = agent_port or free_port()
            self._agent_ports[node_id] = port
        runtime = runtime or self.runtime
        pinned = None
        if healthy is not None or description is not None or not detected or runtime is None:
            pinned = driver_info(detected, True if healthy is None else healthy, description)
        client = SimClient(self.cluster, node_id, name, f"127.0.0.1:{port or 4646}", runtime, pinned, pid=pid,
                           on_death=lambda: self._close_agent(node_id), data_dir=data_dir)
        self.clients[node_id] = client
        client.start()
        self._open_agent(node_id)   # Nomad's agent serves HTTP once its client is set up (plugins fingerprinted)
        return node_id

    def add_nodes(self, nodes: Iterable[str] | Mapping[str, dict], **common) -> list[str]:
        """Start several client agents at once (each launches its plugin before it registers) and wait until
        every node is ready; returns their IDs in the order given. `nodes` is names, or names mapped to
        that node's own `add_node` arguments; `common` goes to every node."""
        per_node = dict(nodes) if isinstance(nodes, Mapping) else {name: {} for name in nodes}
        ids: dict[str, str] = {}
        errors: list[BaseException] = []

        def add(name: str) -> None:
            try:
                ids[name] = self.add_node(name, **{**common, **per_node[name]})
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
        threads = [threading.Thread(target=add, args=(name,)) for name in per_node]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        out = [ids[name] for name in per_node]
        self.wait_for(lambda c: all(c.nodes[n]["Status"] == "ready" for n in out), message="nodes ready")
        return out

    def _open_agent(self, node_id: str) -> None:
        if node_id in self._agent_ports and node_id not in self._agents:
            self._agents[node_id] = HttpServer(self, AgentHandler, self._agent_ports[node_id], node_id=node_id)

    def client_address(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self._agent_ports[node_id]}"

    def kill_node(self, node_id: str) -> None:
        """`kill -9` the node's client agent: heartbeats stop (down after TTL + grace), its port closes,
        its ECS tasks keep running."""
        self._stop_client(node_id)

    def restart_node(self, node_id: str, pid: int | None = None, runtime=None, data_dir=None) -> None:
        """Start the node's client agent again (same node ID and port): re-registers, restores every
        allocation of its local state. `pid`/`runtime`/`data_dir` rebind it (the stand-in agent's new process)."""
        client = self.clients[node_id]
        client.kill()
        client.pid = pid
        if runtime is not None:
            client.runtime = runtime
        if data_dir is not None:
            client.set_data_dir(data_dir)
        client.start()
        self._open_agent(node_id)

    def set_driver_health(self, node_id: str, healthy: bool | None, description: str | None = None,
                          detected: bool = True) -> None:
        """Pin the node's Drivers["ecs"] (failure injection); `healthy=None` follows the plugin's fingerprint again."""
        info = None if healthy is None else driver_info(detected, healthy, description)
        self.clients[node_id].pin_driver(info)

    def _stop_client(self, node_id: str) -> None:
        client = self.clients.get(node_id)
        if client is not None:
            client.kill()
        self._close_agent(node_id)

    def _close_agent(self, node_id: str) -> None:
        agent = self._agents.pop(node_id, None)
        if agent is not None:
            agent.close()

    # --- failure injection ------------------------------------------------------------------------
    def set_leader(self, present: bool) -> None:
        """No leader: API calls hang `no_leader_hold` s then answer 500 `No cluster leader`."""
        with self.cluster.cond:
            self.cluster.leader = present
            for node in self.cluster.nodes.values():  # a new leader grants every node a fresh TTL
                node["_last_heartbeat"] = time.monotonic()
            self.cluster.cond.notify_all()

    def fail_next(self, method: str, path_regex: str, status: int, text: str, times: int = 1) -> None:
        """The next `times` requests matching method and path get `status` with plain-text `text`."""
        with self._lock:
            self._failures.append([method.upper(), re.compile(path_regex), status, text, times])

    def _injected(self, method: str, path: str):
        with self._lock:
            for f in self._failures:
                if f[0] == method and f[1].fullmatch(path) and f[4] > 0:
                    f[4] -= 1
                    return f[2], f[3]
        return None

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def requests_to(self, method: str, path_regex: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and re.fullmatch(path_regex, r.path)]

    # --- test helpers -----------------------------------------------------------------------------
    def wait_for(self, predicate, timeout: float = 10.0, message: str = "condition"):
        """Wait until `predicate(cluster)` (called under the lock) is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        with self.cluster.cond:
            while True:
                value = predicate(self.cluster)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Nomad: timed out after {timeout}s waiting for {message}")
                self.cluster.cond.wait(min(left, 0.05))
