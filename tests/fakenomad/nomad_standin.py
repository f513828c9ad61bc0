"""A stand-in `nomad` executable backed by the fake Nomad, for end-to-end tests of `ecsdemo up`.

- `nomad version` prints `Nomad v<version>` ($FAKENOMAD_VERSION, default 1.6.5).
- `nomad agent -config=FILE [-config=DIR ...]` reads the agent config with python-hcl2:
  * a **server** config runs `FakeNomad` on `ports.http` (heartbeat TTL/grace from `min_heartbeat_ttl` /
    `heartbeat_grace`; other timings fast) and a private registration listener on `ports.rpc`;
  * a **client** config launches the driver plugin named by its `plugin "<name>" { config {...} }` stanza
    from `plugin_dir` (`-plugin-dir=DIR`, the config's `plugin_dir`, or `<data_dir>/plugins`) the way
    Nomad does (docs/nomad-notes.md, "Agent start: three launches"; after a `kill -9` the next agent reattaches
    to a plugin that survived, A.9), then registers its node with the server named in `client.servers`
    (node ID kept in `<data_dir>/client/client-id`, like Nomad), passing its pid, HTTP port, data_dir and
    the plugin's go-plugin reattach info. The server's simulated client (tests/fakenomad/client.py)
    reattaches to that plugin and drives every task through it, keeping the node's state (saved task
    handles) in `<data_dir>/client/fake-state.json`, until this process dies: `kill -9` of the client
    makes the node go down after TTL + grace and leaves the plugin running (as with Nomad); SIGTERM
    tells the server, then shuts the plugin down (Shutdown, then SIGKILL) and clears its reattach info.
  Both run until SIGTERM/SIGINT and exit 0. Errors in the config exit 1 with a message on stderr.
The launcher on PATH is tests/fakenomad/bin/nomad.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import hcl2
import psutil

from driver.pb import base_pb2
from tests.fakenomad.client import driver_info
from tests.fakenomad.fake import FakeNomad
from tests.fakenomad.model import Timings
from tests.fakenomad.plugin_runtime import AttachedRuntime, ReattachedProcess
from tests.fakenomad.server import HttpServer, _Base, _err
from tests.fakenomad.wire import NS, parse_go_duration
from tests.support.plugin_host import PluginHost, agent_start

REGISTER_PATH = "/v1/fake/register"
DEREGISTER_PATH = "/v1/fake/deregister"
REATTACH_FILE = "fake-plugin-reattach.json"   # Nomad keeps it in the client state DB


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [INFO]  fake-nomad: {msg}", flush=True)


def load_config(paths: list[str]) -> dict:
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "*.hcl"))) if os.path.isdir(p) else [p]
    merged: dict = {}
    for f in files:
        with open(f) as fh:
            doc = hcl2.load(fh, serialization_options=hcl2.SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False))
        merged.update(doc)
    return merged


def _block(cfg: dict, name: str) -> dict:
    b = cfg.get(name) or [{}]
    return b[0] if isinstance(b, list) else b


class RegisterHandler(_Base):
    """The server's private endpoint where stand-in clients register and say they stop (on the RPC port)."""

    def route(self, method, path, body):
        if method != "POST" or path not in (REGISTER_PATH, DEREGISTER_PATH) or not isinstance(body, dict):
            raise _err(404, "")
        fake: FakeNomad = self.fake
        node_id = body["node_id"]
        if path == DEREGISTER_PATH:   # the agent is shutting down (it stops its plugin next)
            if node_id in fake.clients:
                fake.kill_node(node_id)
            log(f"client {node_id} stopped")
            return self.json_reply({"ID": node_id}, None, read=False)
        pid, data_dir, plugin = int(body["pid"]), body["data_dir"], body.get("plugin")
        runtime = None
        if plugin:   # the agent launched its plugin; the simulated client reattaches to it (go-plugin ReattachConfig)
            runtime = AttachedRuntime(node_id, plugin["network"], plugin["address"], int(plugin["pid"]),
                                      Path(data_dir) / "alloc")
        if node_id in fake.clients:
            fake.clients[node_id].pinned_driver = None if plugin else _no_driver(body)
            fake.restart_node(node_id, pid=pid, runtime=runtime, data_dir=data_dir)
        else:
            health = {} if plugin else dict(detected=False, healthy=False, description=body.get("plugin_error"))
            fake.add_node(body["name"], node_id=node_id, agent_port=int(body["http_port"]), pid=pid,
                          runtime=runtime, data_dir=data_dir, **health)
        fake.clients[node_id].max_kill_timeout = body.get("max_kill_timeout")
        log(f"client {body['name']} registered as node {node_id} (pid {pid}, plugin {plugin})")
        self.json_reply({"ID": node_id}, None, read=False)


def _no_driver(body: dict) -> dict:
    return driver_info(False, False, body.get("plugin_error"))


def _signal_event() -> threading.Event:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    return done


def _wait_for_signal() -> None:
    done = _signal_event()
    while not done.wait(0.2):
        pass


def run_server(cfg: dict) -> int:
    ports, server = _block(cfg, "ports"), _block(cfg, "server")
    ttl = parse_go_duration(server.get("min_heartbeat_ttl", "10s")) / NS
    grace = parse_go_duration(server.get("heartbeat_grace", "10s")) / NS
    timings = Timings.fast(heartbeat_ttl=ttl, heartbeat_grace=grace)
    if os.environ.get("FAKENOMAD_MIN_HEALTHY"):
        timings.min_healthy_time = float(os.environ["FAKENOMAD_MIN_HEALTHY"])
    if not os.environ.get("AWS_ACCESS_KEY_ID"):  # local endpoint: moto accepts these dummies
        os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    fake = FakeNomad(version=os.environ.get("FAKENOMAD_VERSION", "1.6.5"), timings=timings,
                     port=int(ports.get("http", 4646))).start()
    reg = HttpServer(fake, RegisterHandler, int(ports.get("rpc", 4647)))
    log(f"server started: http {fake.address}, registration on port {reg.port}")
    try:
        _wait_for_signal()
    finally:
        reg.close()
        fake.stop()
        log("server stopped")
    return 0


def _plugin_stanza(cfg: dict) -> tuple[str, dict]:
    """The first `plugin "<name>" { config {...} }` block: (executable name, config)."""
    for item in cfg.get("plugin") or []:
        for label, body in item.items():
            return label, _block(body, "config")
    return "", {}


def _launcher(exe: Path, logs: Path):
    """How Nomad's go-plugin client starts a plugin: the agent's environment plus the plugin variables;
    the plugin's stderr goes to the agent's own log (Nomad relays it through hclog)."""
    def launch() -> PluginHost:
        host = PluginHost(logs, argv=[str(exe)], env=dict(os.environ))
        host.stderr_path = Path("/proc/self/fd/2")
        host.start(timeout=60)
        log(f"launched plugin {exe} (pid {host.pid})")
        return host
    return launch


def _reattach_saved(saved: dict | None, launch, config: dict):
    """Agent start with saved reattach info (docs/nomad-notes.md, "Shutdown and reattach"): the loader's two launches
    (loader/init.go fingerprintPlugin, validatePluginConfig), then reattach to the saved plugin
    (drivermanager/instance.go) calling only PluginInfo; None when it cannot be reached (its pid is killed)."""
    if not saved:
        return None
    proc = ReattachedProcess(saved["network"], saved["address"], int(saved["pid"]))
    try:
        ps = psutil.Process(proc.pid)
        if abs(ps.create_time() - float(saved["create_time"])) > 1 or ps.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.Error:
        return None
    first = launch()
    first.plugin_info()
    first.config_schema()
    first.shutdown()
    second = launch()
    second.set_config(config, agent=False)
    second.set_config(config, agent=False)
    second.shutdown()
    try:
        proc.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=5)
    except Exception as exc:  # noqa: BLE001 - dial failed: kill the saved pid, launch a new instance
        log(f"reattach to plugin pid {proc.pid} failed ({exc}); killing it")
        proc.kill()
        return None
    log(f"reattached to plugin pid {proc.pid} at {proc.handshake.address}")
    return proc


def start_plugin(cfg: dict, plugin_dir: str | None, data_dir: str):
    """The driver plugin of a client agent, as Nomad starts it: (process or None, error text)."""
    name, config = _plugin_stanza(cfg)
    if not name:
        return None, "no plugin stanza in the agent config"
    plugin_dir = plugin_dir or cfg.get("plugin_dir") or os.path.join(data_dir, "plugins")
    exe = Path(plugin_dir) / name
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        log(f"[ERROR] plugin {name} not found in plugin_dir {plugin_dir}")
        return None, f"plugin {name} not found in {plugin_dir}"
    launch = _launcher(exe, Path(data_dir) / "plugins")
    reattach_file = Path(data_dir) / "client" / REATTACH_FILE
    saved = json.loads(reattach_file.read_text()) if reattach_file.exists() else None
    try:
        proc = _reattach_saved(saved, launch, config) or agent_start(launch, config).host
    except Exception as exc:  # noqa: BLE001 - a plugin that fails to start: the driver is not detected
        log(f"[ERROR] plugin {name} failed to start: {exc}")
        return None, f"plugin {name} failed to start: {exc}"
    ps = psutil.Process(proc.pid)
    reattach_file.parent.mkdir(parents=True, exist_ok=True)
    reattach_file.write_text(json.dumps({"network": proc.handshake.network, "address": proc.handshake.address,
                                         "pid": proc.pid, "create_time": ps.create_time()}))
    return proc, ""


def stop_plugin(proc, data_dir: str) -> None:
    """A clean agent shutdown kills the plugin and clears its reattach info (instanceManager.cleanup)."""
    try:
        proc.shutdown()
    finally:
        proc.kill()
        (Path(data_dir) / "client" / REATTACH_FILE).unlink(missing_ok=True)
    log(f"plugin pid {proc.pid} stopped")


def _post(server: str, path: str, body: dict, deadline: float, stop: threading.Event | None = None) -> None:
    url = f"http://{server}{path}"
    while True:
        try:
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=30).read()
            return
        except OSError:
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise
            time.sleep(0.2)


def run_client(cfg: dict, plugin_dir: str | None = None) -> int:
    client, ports = _block(cfg, "client"), _block(cfg, "ports")
    servers = client.get("servers") or ["127.0.0.1:4647"]
    data_dir = cfg.get("data_dir")
    if not data_dir:
        print("==> data_dir is required for a client agent", file=sys.stderr)
        return 1
    id_file = os.path.join(data_dir, "client", "client-id")
    if os.path.exists(id_file):
        node_id = open(id_file).read().strip()
    else:
        node_id = str(uuid.uuid4())
        os.makedirs(os.path.dirname(id_file), exist_ok=True)
        with open(id_file, "w") as fh:
            fh.write(node_id)
    stop = _signal_event()
    proc, error = start_plugin(cfg, plugin_dir, data_dir)
    max_kill = parse_go_duration(client["max_kill_timeout"]) / NS if client.get("max_kill_timeout") else None
    body = {"node_id": node_id, "name": cfg.get("name", "nomad-client"), "pid": os.getpid(),
            "http_port": int(ports.get("http", 4646)), "data_dir": os.path.abspath(data_dir),
            "max_kill_timeout": max_kill, "plugin_error": error,
            "plugin": {"network": proc.handshake.network, "address": proc.handshake.address, "pid": proc.pid}
            if proc else None}
    try:
        try:
            _post(servers[0], REGISTER_PATH, body, time.monotonic() + 60, stop)
        except OSError as exc:
            print(f"==> could not register with {servers[0]}: {exc}", file=sys.stderr)
            return 1
        log(f"client {body['name']} running as node {node_id}")
        while not stop.wait(0.2):
            pass
        try:   # the server's simulated client lets go of the plugin first
            _post(servers[0], DEREGISTER_PATH, {"node_id": node_id}, time.monotonic() + 2)
        except OSError:
            pass
    finally:
        if proc is not None:
            stop_plugin(proc, data_dir)
    log("client stopped")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["version"]:
        print(f"Nomad v{os.environ.get('FAKENOMAD_VERSION', '1.6.5')}\nBuildDate 2023-10-03T00:00:00Z\n"
              f"Revision {'f' * 40}")
        return 0
    if argv[:1] != ["agent"]:
        print("usage: nomad version | nomad agent -config=FILE...", file=sys.stderr)
        return 1
    paths, args, plugin_dir = [], argv[1:], None
    for i, a in enumerate(args):
        if a.startswith("-config="):
            paths.append(a.split("=", 1)[1])
        elif a == "-config" and i + 1 < len(args):
            paths.append(args[i + 1])
        elif a.startswith("-plugin-dir="):
            plugin_dir = a.split("=", 1)[1]
        elif a == "-plugin-dir" and i + 1 < len(args):
            plugin_dir = args[i + 1]
    if not paths:
        print("==> no -config given", file=sys.stderr)
        return 1
    try:
        cfg = load_config(paths)
    except Exception as exc:
        print(f"==> Error loading configuration from {paths}: {exc}", file=sys.stderr)
        return 1
    if _block(cfg, "server").get("enabled"):
        return run_server(cfg)
    if _block(cfg, "client").get("enabled"):
        return run_client(cfg, plugin_dir)
    print("==> Must specify either server, client or dev mode for the agent.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
