"""The stand-in `nomad` executable: server and client agents as processes; the client launches the real
plugin from its plugin_dir and every task runs through it; a client killed with -9 goes down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import boto3
import psutil
import pytest

from ecsdemo.local import free_port
from ecsdemo.nomad import NomadClient, NomadUnavailable, task_arn
from ecsdemo.plugininstall import install_launcher

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


def _plugin_pids(client_pid: int) -> list[int]:
    """Live plugin processes in the client agent's process group (what it launched and still runs)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getpgid(p.pid) == client_pid and p.pid != client_pid and "driver.main" in " ".join(p.cmdline()) \
                    and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (psutil.Error, OSError):
            continue
    return out


@pytest.mark.slow
def test_server_and_client_agents_drive_tasks_through_the_plugin(tmp_path, procs, ecs_demo):
    """The client launches the plugin from plugin_dir (three launches), the server's simulated client runs
    the job's task through it; kill -9 leaves the plugin running and the restarted agent reattaches to it
    and restores the allocation; SIGTERM stops the plugin."""
    http, rpc, client_http = free_port(), free_port(), free_port()
    plugin_dir = tmp_path / "plugins"
    install_launcher(plugin_dir)
    (tmp_path / "server.hcl").write_text(
        f'data_dir = "{tmp_path}/server"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n'
        'server {\n  enabled = true\n  heartbeat_grace = "300ms"\n  min_heartbeat_ttl = "300ms"\n}\n')
    (tmp_path / "client.hcl").write_text(
        f'name = "nomad-client-1"\ndata_dir = "{tmp_path}/client-1"\nports {{\n  http = {client_http}\n}}\n'
        f'client {{\n  enabled = true\n  servers = ["127.0.0.1:{rpc}"]\n}}\n'
        f'plugin "nomad-driver-ecs" {{\n  config {{\n    enabled = true\n    cluster = "{ecs_demo.cluster}"\n'
        f'    region = "{ecs_demo.region}"\n    endpoint = "{ecs_demo.endpoint}"\n  }}\n}}\n')
    log_path = tmp_path / "client.log"
    client_argv = [str(BIN), "agent", f"-config={tmp_path / 'client.hcl'}", f"-plugin-dir={plugin_dir}"]

    def start_client():
        p = subprocess.Popen(client_argv, stdout=open(log_path, "a"), stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p
    procs.append(subprocess.Popen([str(BIN), "agent", f"-config={tmp_path / 'server.hcl'}"],
                                  stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True))
    server = NomadClient(f"http://127.0.0.1:{http}", timeout=5)
    assert _wait(server.leader) == "127.0.0.1:4647"
    client = start_client()
    node_id = _wait(lambda: NomadClient.client_node_id(f"http://127.0.0.1:{client_http}", timeout=2))
    assert (tmp_path / "client-1" / "client" / "client-id").read_text() == node_id
    assert _wait(lambda: (server.node(node_id) or {}).get("Status") == "ready")
    driver = server.node(node_id)["Drivers"]["ecs"]      # from the plugin's own fingerprint
    assert driver["Healthy"] and driver["HealthDescription"] == "Healthy"
    assert driver["Attributes"]["driver.ecs.cluster"] == ecs_demo.cluster
    assert log_path.read_text().count("launched plugin") == 3
    (plugin_pid,) = _plugin_pids(client.pid)

    server.register_job(server.parse_job(ecs_demo.job_hcl()))
    alloc = _wait(lambda: next((a for a in server.job_allocations("nomad-ecs-demo")
                                if a["ClientStatus"] == "running" and task_arn(a, "http-server")), None))
    arn = task_arn(alloc, "http-server")
    ecs = boto3.client("ecs", region_name=ecs_demo.region, endpoint_url=ecs_demo.endpoint)
    task = ecs.describe_tasks(cluster=ecs_demo.cluster, tasks=[arn], include=["TAGS"])["tasks"][0]
    assert task["lastStatus"] == "RUNNING" and task["startedBy"] == "nomad-" + alloc["ID"][:30]
    state = json.loads((tmp_path / "client-1" / "client" / "fake-state.json").read_text())
    assert state["allocs"][alloc["ID"]]["tasks"]["http-server"]["handle"]   # the saved handle

    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    assert _wait(lambda: server.node(node_id)["Status"] == "down", timeout=10)
    assert psutil.pid_exists(plugin_pid)                   # the plugin outlives a killed agent
    # restarted with the same data_dir: same node, reattached to the same plugin, the task recovered
    client = start_client()
    assert _wait(lambda: server.node(node_id)["Status"] == "ready")
    assert [n["ID"] for n in server.nodes()] == [node_id]
    assert _wait(lambda: "reattached to plugin pid" in log_path.read_text())
    assert log_path.read_text().count("launched plugin") == 5     # the loader's two, then the reattach
    now = _wait(lambda: next(a for a in server.job_allocations("nomad-ecs-demo") if a["ID"] == alloc["ID"]))
    assert task_arn(now, "http-server") == arn
    assert ecs.describe_tasks(cluster=ecs_demo.cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING"

    client.send_signal(signal.SIGTERM)
    assert client.wait(15) == 0
    _wait(lambda: not psutil.pid_exists(plugin_pid) or psutil.Process(plugin_pid).status() == psutil.STATUS_ZOMBIE)
    assert not (tmp_path / "client-1" / "client" / "fake-plugin-reattach.json").exists()
    assert ecs.describe_tasks(cluster=ecs_demo.cluster, tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING"


@pytest.mark.slow
def test_client_without_the_plugin_registers_an_undetected_driver(tmp_path, procs):
    http, rpc, client_http = free_port(), free_port(), free_port()
    (tmp_path / "server.hcl").write_text(
        f'data_dir = "{tmp_path}/server"\nports {{\n  http = {http}\n  rpc = {rpc}\n}}\n'
        f'server {{\n  enabled = true\n}}\n')
    (tmp_path / "client.hcl").write_text(
        f'name = "c1"\ndata_dir = "{tmp_path}/c1"\nplugin_dir = "{tmp_path}/empty"\n'
        f'ports {{\n  http = {client_http}\n}}\n'
        f'client {{\n  enabled = true\n  servers = ["127.0.0.1:{rpc}"]\n}}\n'
        'plugin "nomad-driver-ecs" {\n  config {\n    enabled = true\n    cluster = "c"\n  }\n}\n')
    for name in ("server", "client"):
        procs.append(subprocess.Popen([str(BIN), "agent", f"-config={tmp_path / (name + '.hcl')}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True))
    server = NomadClient(f"http://127.0.0.1:{http}", timeout=5)
    node = _wait(lambda: next(iter(server.nodes()), None))
    driver = server.node(node["ID"])["Drivers"]["ecs"]
    assert not driver["Detected"] and not driver["Healthy"]
    assert driver["HealthDescription"] == f"plugin nomad-driver-ecs not found in {tmp_path}/empty"


def test_bad_config_exits_with_a_message(tmp_path):
    (tmp_path / "bad.hcl").write_text("server { enabled = \n")
    out = subprocess.run([str(BIN), "agent", f"-config={tmp_path / 'bad.hcl'}"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1 and "Error loading configuration" in out.stderr
