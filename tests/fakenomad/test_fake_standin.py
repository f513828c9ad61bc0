"""The stand-in `nomad` executable: server and client agents as processes, a client killed with -9 goes down."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ecsdemo.local import free_port
from ecsdemo.nomad import NomadClient, NomadUnavailable

BIN = Path(__file__).parent / "bin" / "nomad"


def _wait(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = fn()
            if value:
                return value
        except NomadUnavailable:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {fn}")


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_version_line():
    out = subprocess.run([str(BIN), "version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("Nomad v1.6.5")


def test_server_and_client_agents(tmp_path, procs, ecs_demo):
    http, rpc, client_http = free_port(), free_port(), free_port()
    (tmp_path / "server.hcl").write_text(
        f'data_dir = "{tmp_path}/server"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n'
        'server {\n  enabled = true\n  heartbeat_grace = "300ms"\n  min_heartbeat_ttl = "300ms"\n}\n')
    (tmp_path / "client.hcl").write_text(
        f'name = "nomad-client-1"\ndata_dir = "{tmp_path}/client-1"\nports {{\n  http = {client_http}\n}}\n'
        f'client {{\n  enabled = true\n  servers = ["127.0.0.1:{rpc}"]\n}}\n'
        f'plugin "nomad-driver-ecs" {{\n  config {{\n    enabled = true\n    cluster = "{ecs_demo.cluster}"\n'
        f'    region = "{ecs_demo.region}"\n    endpoint = "{ecs_demo.endpoint}"\n  }}\n}}\n')
    logs = open(tmp_path / "agents.log", "w")
    procs.append(subprocess.Popen([str(BIN), "agent", f"-config={tmp_path / 'server.hcl'}"], stdout=logs,
                                  stderr=subprocess.STDOUT, start_new_session=True))
    server = NomadClient(f"http://127.0.0.1:{http}", timeout=2)
    assert _wait(server.leader) == "127.0.0.1:4647"
    client = subprocess.Popen([str(BIN), "agent", f"-config={tmp_path / 'client.hcl'}"], stdout=logs,
                              stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(client)
    node_id = _wait(lambda: NomadClient.client_node_id(f"http://127.0.0.1:{client_http}", timeout=2))
    assert (tmp_path / "client-1" / "client" / "client-id").read_text() == node_id
    assert _wait(lambda: (server.node(node_id) or {}).get("Status") == "ready")
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    assert _wait(lambda: server.node(node_id)["Status"] == "down", timeout=10)
    # restarted with the same data_dir: same node, ready again
    procs.append(subprocess.Popen([str(BIN), "agent", f"-config={tmp_path / 'client.hcl'}"], stdout=logs,
                                  stderr=subprocess.STDOUT, start_new_session=True))
    assert _wait(lambda: server.node(node_id)["Status"] == "ready")
    assert [n["ID"] for n in server.nodes()] == [node_id]


def test_bad_config_exits_with_a_message(tmp_path):
    (tmp_path / "bad.hcl").write_text("server { enabled = \n")
    out = subprocess.run([str(BIN), "agent", f"-config={tmp_path / 'bad.hcl'}"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "Error loading configuration" in out.stderr
