"""Stand-in `nomad` agents (tests/support/standin_agent.py) and a demo whose agents they are.

`standin_nomad(dir, version)` and `write_standin_bin(dir)` write a `nomad` executable that runs the
stand-in; `free_ports_cfg(tmp_path)` is a config whose agent ports are free right now.

`Demo` wires one test's world: the session moto server with the demo's ECS resources, a `FakeNomad`
whose server port is the config's, stand-in agent processes started by ecsdemo itself, and a bridge that
registers a fake client node for each client agent process ecsdemo starts (bound to its pid, so killing
the process stops the node's heartbeats, as with a real agent). Configs and the job are rendered by the
real renderer from outputs shaped like Terraform's.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecsdemo import agents, local, render
from ecsdemo.config import DemoConfig
from ecsdemo.lifecycle import Timing
from ecsdemo.progress import RecordingReporter
from tests.fakenomad import FakeNomad, PluginRuntime, Timings
from tests.support.moto_world import EcsDemo

STANDIN = Path(__file__).with_name("standin_agent.py")
MIRROR = Path("/opt/tf-plugins")   # free_ports_cfg's tf_plugin_dir where it exists


def standin_nomad(directory: Path, version: str | None = None, body: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "nomad"
    if body is None:
        env = f"STANDIN_NOMAD_VERSION={version} " if version else ""
        body = f'exec env {env}"{sys.executable}" "{STANDIN}" "$@"'
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return exe


def free_ports_cfg(tmp_path, **kw) -> DemoConfig:
    """A config whose agent ports are free right now (never the fixed defaults, which may be busy)."""
    ports = [local.free_port() for _ in range(4)]
    return DemoConfig(state_dir=tmp_path / "state", render_dir=tmp_path / "nomad", server_http_port=ports[0],
                      server_rpc_port=ports[1], server_serf_port=ports[2], client_http_base=ports[3],
                      client_http_step=1, clients=1, tf_plugin_dir=MIRROR if MIRROR.is_dir() else None, **kw)


def write_standin_bin(directory: Path) -> Path:
    """An executable `nomad` that runs the stand-in agent with this interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "nomad"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    exe.chmod(0o755)
    return exe


def dead_pid() -> int:
    """The pid of a process that has exited (a record pointing at it is stale)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def free_port_pair() -> int:
    """A port p with p and p+1 free (client 1 and client 2 HTTP ports with step 1)."""
    for _ in range(50):
        p = local.free_port()
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


class AgentBridge:
    """Registers a fake client node when ecsdemo starts a client agent process (and re-binds it when the
    agent is restarted), the way a real agent registers its node with the server."""

    def __init__(self, cfg: DemoConfig, fake, runtime_factory=None, healthy: bool = True,
                 description: str | None = None):
        self.cfg, self.fake = cfg, fake
        self.runtime_factory = runtime_factory
        self.healthy, self.description = healthy, description
        self.node_ids: dict[str, str] = {}
        self._pids: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "AgentBridge":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                records = agents.load(self.cfg)
            except Exception:
                continue
            for rec in records.values():
                if rec.role != "client" or self._pids.get(rec.name) == rec.pid or agents.status(rec) != "running":
                    continue
                self._pids[rec.name] = rec.pid
                if rec.name in self.node_ids:
                    node_id = self.node_ids[rec.name]
                    self.fake.restart_node(node_id)
                    self.fake.clients[node_id].pid = rec.pid
                    continue
                port = int(rec.http_addr.rsplit(":", 1)[1])
                runtime = self.runtime_factory() if self.runtime_factory else None
                self.node_ids[rec.name] = self.fake.add_node(rec.name, agent_port=port, pid=rec.pid,
                                                             healthy=self.healthy, description=self.description,
                                                             runtime=runtime)


def make_config(tmp_path: Path, server_port: int, **kw) -> DemoConfig:
    return DemoConfig(state_dir=tmp_path / "state", render_dir=tmp_path / "nomad", local=True, clients=2,
                      server_http_port=server_port, server_rpc_port=local.free_port(),
                      server_serf_port=local.free_port(), client_http_base=free_port_pair(), client_http_step=1,
                      **kw)


def record_endpoint(cfg: DemoConfig, url: str) -> None:
    """Point the demo at an already running endpoint without owning it (teardown will not stop it)."""
    port = int(url.rsplit(":", 1)[1])
    cfg.state.ensure().write_json(local.LOCAL_FILE, {"pid": dead_pid(), "port": port, "url": url,
                                                     "log": "", "started_at": ""})


@dataclass
class Demo:
    cfg: DemoConfig
    fake: object
    ecs_demo: object
    aws: object
    reporter: RecordingReporter = field(default_factory=RecordingReporter)
    bridge: AgentBridge | None = None

    @property
    def ecs(self):
        return self.aws.client("ecs")

    def bridge_agents(self, **kw) -> AgentBridge:
        self.bridge = AgentBridge(self.cfg, self.fake, **kw).start()
        return self.bridge

    def add_nodes(self, healthy: bool = True, description: str | None = None) -> list[str]:
        """Two client nodes that are not tied to agent processes (for run/status/logs tests)."""
        return self.fake.add_nodes(self.cfg.client_names(), healthy=healthy, description=description)

    def task_status(self, arn: str) -> str:
        return self.ecs.describe_tasks(cluster=self.ecs_demo.cluster, tasks=[arn])["tasks"][0]["lastStatus"]


def fast_timing():
    return Timing(ready=10, run=20, stop=10, poll=0.05, block=1, grace=2)


def _demo(tmp_path, monkeypatch, ecs_demo, aws):
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(write_standin_bin(tmp_path / "bin")))
    for var in ("STANDIN_IGNORE_TERM", "STANDIN_EXIT_AT_START", "STANDIN_SPAWN_PLUGIN", "STANDIN_ENV_DUMP"):
        monkeypatch.delenv(var, raising=False)
    runtime = (PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
               if aws is not None else None)
    fake = FakeNomad(timings=Timings.fast(), runtime=runtime).start()
    cfg = make_config(tmp_path, fake.port)
    cfg.save()
    record_endpoint(cfg, ecs_demo.endpoint)
    render.render_all(cfg, ecs_demo.outputs(), ecs_demo.endpoint)
    d = Demo(cfg=cfg, fake=fake, ecs_demo=ecs_demo, aws=aws)
    try:
        yield d
    finally:
        if d.bridge is not None:
            d.bridge.stop()
        agents.stop_all(cfg, grace=1)
        fake.stop()
        if runtime is not None:
            runtime.close()


@pytest.fixture
def demo(tmp_path, aws, ecs_demo, monkeypatch):
    """A rendered demo on the fake Nomad whose clients run ECS tasks on the (reset) moto server; agents
    (if a test starts any) are stopped after."""
    yield from _demo(tmp_path, monkeypatch, ecs_demo, aws)


@pytest.fixture
def nomad_demo(tmp_path, moto_url, monkeypatch):
    """The same without ECS resources (cheaper): for tests that never run a task."""
    fake_ecs = EcsDemo(endpoint=moto_url, region="us-east-1", cluster=DemoConfig().name, subnet="subnet-0abc",
                       security_group="sg-0abc", task_definition=f"{DemoConfig().name}:1")
    yield from _demo(tmp_path, monkeypatch, fake_ecs, None)
