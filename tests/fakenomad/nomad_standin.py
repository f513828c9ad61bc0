"""A stand-in `nomad` executable backed by the fake Nomad, for end-to-end tests of `ecsdemo up`.

- `nomad version` prints `Nomad v<version>` ($FAKENOMAD_VERSION, default 1.6.5).
- `nomad agent -config=FILE [-config=DIR ...]` reads the agent config with python-hcl2:
  * a **server** config runs `FakeNomad` on `ports.http` (heartbeat TTL/grace from `min_heartbeat_ttl` /
    `heartbeat_grace`; other timings fast) and a private registration listener on `ports.rpc`;
  * a **client** config registers its node with the server named in `client.servers` (node ID kept in
    `<data_dir>/client/client-id`, like Nomad), passing its pid, HTTP port and the plugin's
    cluster/region/endpoint; the server then simulates the node (serving the client's HTTP port) until
    this process dies, so `kill -9` of the client makes the node go down after TTL + grace.
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

import hcl2

from tests.fakenomad.fake import FakeNomad
from tests.fakenomad.model import Timings
from tests.fakenomad.runtime import EcsRuntime
from tests.fakenomad.server import _Base, _err, HttpServer
from tests.fakenomad.wire import NS, parse_go_duration

REGISTER_PATH = "/v1/fake/register"


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
    """The server's private endpoint where stand-in clients register (on the RPC port)."""

    def route(self, method, path, body):
        if method != "POST" or path != REGISTER_PATH or not isinstance(body, dict):
            raise _err(404, "")
        fake: FakeNomad = self.fake
        runtime = EcsRuntime(body.get("endpoint") or None, body["cluster"], body.get("region") or "us-east-1")
        node_id, pid = body["node_id"], int(body["pid"])
        if node_id in fake.clients:
            fake.restart_node(node_id, pid=pid, runtime=runtime)
        else:
            fake.add_node(body["name"], node_id=node_id, agent_port=int(body["http_port"]), pid=pid, runtime=runtime)
        log(f"client {body['name']} registered as node {node_id} (pid {pid})")
        self.json_reply({"ID": node_id}, None, read=False)


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
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


def run_client(cfg: dict) -> int:
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
    plugin_cfg = {}
    for item in cfg.get("plugin") or []:
        for _label, body in item.items():
            plugin_cfg = _block(body, "config")
    body = {"node_id": node_id, "name": cfg.get("name", "nomad-client"), "pid": os.getpid(),
            "http_port": int(ports.get("http", 4646)), "cluster": plugin_cfg.get("cluster", ""),
            "region": plugin_cfg.get("region", ""),
            "endpoint": plugin_cfg.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_ECS")
            or os.environ.get("AWS_ENDPOINT_URL")}
    url = f"http://{servers[0]}{REGISTER_PATH}"
    deadline = time.monotonic() + 60
    while True:
        try:
            req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                print(f"==> could not register with {servers[0]}: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    log(f"client {body['name']} running as node {node_id}")
    _wait_for_signal()
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
    paths, args = [], argv[1:]
    for i, a in enumerate(args):
        if a.startswith("-config="):
            paths.append(a.split("=", 1)[1])
        elif a == "-config" and i + 1 < len(args):
            paths.append(args[i + 1])
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
        return run_client(cfg)
    print("==> Must specify either server, client or dev mode for the agent.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
