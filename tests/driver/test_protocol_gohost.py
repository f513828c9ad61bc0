"""A real go-plugin host (HashiCorp go-plugin from Debian, built from tests/driver/gohost) drives the plugin:
one call list through one process, and (interactive mode) Nomad's stale-restore sequence across several
plugin processes against the moto server.

Skipped where `go` or the go-plugin sources are missing (`apt-get install golang-go
golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from driver.declaration import CONFIG, TASK_CONFIG
from driver.handle import OWNER_TAG
from driver.pb import base_pb2, driver_pb2
from driver.servicer import hclspec_proto
from ecsdemo.cty import cty_msgpack
from tests.support.plugin_host import PLUGIN_EXE

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).resolve().parent / "gohost"


@pytest.fixture(scope="module")
def gohost(tmp_path_factory) -> Path:
    if shutil.which("go") is None:
        pytest.skip("no `go` on PATH (apt-get install golang-go)")
    if not (GOPATH / "src/github.com/hashicorp/go-plugin/client.go").exists():
        pytest.skip(f"go-plugin sources not under {GOPATH} (apt-get install golang-github-hashicorp-go-plugin-dev)")
    out = tmp_path_factory.mktemp("gohost") / "gohost"
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH))
    res = subprocess.run(["go", "build", "-o", str(out), "."], cwd=SOURCE, env=env, capture_output=True, text=True,
                         timeout=300)
    if res.returncode != 0:
        pytest.skip(f"the go-plugin host does not build here: {res.stderr.strip()[-500:]}")
    return out


def run_gohost(gohost: Path, calls: list[tuple[str, bytes]]) -> tuple[list[dict], list[dict]]:
    args = [f"{method}:{payload.hex()}" for method, payload in calls]
    res = subprocess.run([str(gohost), str(PLUGIN_EXE), *args], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout + res.stderr
    results = [json.loads(line) for line in res.stdout.splitlines()]
    host_log = [json.loads(line) for line in res.stderr.splitlines() if line.startswith("{")]
    return results, host_log


@pytest.mark.slow
def test_go_plugin_host_handshakes_pings_calls_and_kills(gohost):
    base = "/hashicorp.nomad.plugins.base.proto.BasePlugin/"
    schema_bytes = base_pb2.ConfigSchemaRequest().SerializeToString()
    # The config is encoded against the schema the plugin declares, as Nomad does.
    config = cty_msgpack(hclspec_proto(CONFIG), {"enabled": False, "log_level": "debug"})
    set_config = base_pb2.SetConfigRequest(msgpack_config=config, plugin_api_version="v0.1.0").SerializeToString()
    results, host_log = run_gohost(gohost, [
        (base + "PluginInfo", base_pb2.PluginInfoRequest().SerializeToString()),
        (base + "ConfigSchema", schema_bytes),
        (base + "SetConfig", set_config),
    ])
    steps = {r["step"] for r in results}
    assert steps == {"ping", "call", "kill"}
    assert results[0] == {"step": "ping", "error": ""}  # health service: plugin SERVING
    calls = [r for r in results if r["step"] == "call"]
    assert all("error" not in c for c in calls), calls
    info = base_pb2.PluginInfoResponse.FromString(bytes.fromhex(calls[0]["response"]))
    assert (info.type, info.name, list(info.plugin_api_versions)) == (base_pb2.DRIVER, "ecs", ["v0.1.0"])
    schema = base_pb2.ConfigSchemaResponse.FromString(bytes.fromhex(calls[1]["response"]))
    assert "fingerprint_interval" in schema.spec.object.attributes
    kill = results[-1]
    assert kill["exited"] is True and kill["seconds"] < 2.0  # exited on Shutdown, no SIGKILL needed
    # go-plugin re-logged our stderr JSON lines at their own level (a non-JSON line would come out as debug)
    configured = [e for e in host_log if e.get("@message") == "plugin configured"]
    assert configured and configured[0]["@level"] == "info"
    assert not any("plugin failed to exit gracefully" in e.get("@message", "") for e in host_log)


class GoHost:
    """`gohost -i`: HashiCorp's go-plugin host driving several plugin instances, one JSON command at a time."""

    def __init__(self, binary: Path, env: dict | None = None):
        self.proc = subprocess.Popen([str(binary), "-i", str(PLUGIN_EXE)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self._ids = itertools.count(1)
        self._answers: dict[tuple[int, str], dict] = {}
        self._cond = threading.Condition()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self._cond:
                self._answers[(msg["id"], msg["step"])] = msg
                self._cond.notify_all()

    def _send(self, **cmd) -> int:
        cmd["id"] = next(self._ids)
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return cmd["id"]

    def answer(self, cid: int, step: str, timeout: float = 30.0) -> dict:
        with self._cond:
            if not self._cond.wait_for(lambda: (cid, step) in self._answers, timeout):
                raise AssertionError(f"gohost gave no {step!r} answer to command {cid} within {timeout}s; "
                                     f"stderr tail: {self.stderr[-5:]}")
            return self._answers[(cid, step)]

    def done(self, cid: int) -> bool:
        with self._cond:
            return (cid, "done") in self._answers

    def launch(self, inst: str) -> None:
        ans = self.answer(self._send(op="launch", inst=inst), "launch")
        assert "error" not in ans, ans

    def call(self, inst: str, method: str, request, response_type=None, ok: bool = True):
        ans = self.answer(self._send(op="call", inst=inst, method=method,
                                     request=request.SerializeToString().hex()), "call")
        if ok:
            assert "error" not in ans, ans
        return response_type.FromString(bytes.fromhex(ans["response"])) if response_type and "error" not in ans \
            else ans

    def start(self, inst: str, method: str, request, timeout: float = 120.0) -> int:
        cid = self._send(op="start", inst=inst, method=method, request=request.SerializeToString().hex(),
                         timeout=timeout)
        self.answer(cid, "started")
        return cid

    def kill(self, inst: str) -> dict:
        return self.answer(self._send(op="kill", inst=inst), "kill")

    def crash(self, inst: str) -> None:
        ans = self.answer(self._send(op="crash", inst=inst), "crash")
        assert "error" not in ans, ans

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


DRIVER = "/hashicorp.nomad.plugins.drivers.proto.Driver/"
BASE = "/hashicorp.nomad.plugins.base.proto.BasePlugin/"


def _configure(gh: GoHost, inst: str, config: dict) -> None:
    gh.launch(inst)
    gh.call(inst, BASE + "SetConfig", base_pb2.SetConfigRequest(
        msgpack_config=cty_msgpack(hclspec_proto(CONFIG), config), plugin_api_version="v0.1.0"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["drain", "lost-node"])
def test_go_plugin_host_stale_restore_never_stops_the_replacements_task(gohost, world, config, how):
    """Nomad's sequences through go-plugin, one plugin process per client start:
    drain: A starts and detaches (StopTask DETACH, WaitTask, DestroyTask); B recovers the handle under a
    new task id; A's client restarts and restores its dead allocation: RecoverTask(old id, old handle),
    DestroyTask(old id, force) (task_runner.go Restore, Run).
    lost-node: A's plugin is SIGKILLed; B recovers; A's client returns (Nomad 1.1-1.5: still "running"
    locally): RecoverTask, WaitTask, then a normal StopTask and DestroyTask(force).
    The ECS task must stay RUNNING and B's WaitTask open; B's own normal stop still stops it."""
    body = {"task": {"task_definition": f"{world.family}:1", "launch_type": "FARGATE",
                     "network_configuration": {"aws_vpc_configuration": {
                         "subnets": [world.subnet], "security_groups": [world.security_group]}}}}
    alloc_a, alloc_b = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    id1, id2 = f"{alloc_a}/http-server/0000000a", f"{alloc_b}/http-server/0000000b"
    gh = GoHost(gohost, env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true"))
    try:
        _configure(gh, "a", config)
        cfg1 = driver_pb2.TaskConfig(id=id1, name="http-server", alloc_id=alloc_a,
                                     msgpack_driver_config=cty_msgpack(hclspec_proto(TASK_CONFIG), body))
        handle = gh.call("a", DRIVER + "StartTask", driver_pb2.StartTaskRequest(task=cfg1),
                         driver_pb2.StartTaskResponse).handle
        (running,) = world.tasks("RUNNING")
        arn = running["taskArn"]
        if how == "drain":
            wait_a = gh.start("a", DRIVER + "WaitTask", driver_pb2.WaitTaskRequest(task_id=id1))
            gh.call("a", DRIVER + "StopTask", driver_pb2.StopTaskRequest(task_id=id1, signal="DETACH"))
            assert "error" not in gh.answer(wait_a, "done")
            gh.call("a", DRIVER + "DestroyTask", driver_pb2.DestroyTaskRequest(task_id=id1, force=True))
            gh.kill("a")
        else:
            gh.crash("a")

        # B: the replacement recovers the propagated handle under its new task id (remotetask_hook.go).
        _configure(gh, "b", config)
        cfg2 = driver_pb2.TaskConfig(id=id2, name="http-server", alloc_id=alloc_b)
        gh.call("b", DRIVER + "RecoverTask", driver_pb2.RecoverTaskRequest(handle=driver_pb2.TaskHandle(
            version=handle.version, config=cfg2, driver_state=handle.driver_state)))
        ins = gh.call("b", DRIVER + "InspectTask", driver_pb2.InspectTaskRequest(task_id=id2),
                      driver_pb2.InspectTaskResponse)
        assert ins.driver.attributes["arn"] == arn and ins.task.state == driver_pb2.RUNNING
        wait_b = gh.start("b", DRIVER + "WaitTask", driver_pb2.WaitTaskRequest(task_id=id2))

        # A': A's client restarts and restores its allocation with the handle it saved.
        _configure(gh, "a2", config)
        stale = driver_pb2.TaskHandle(version=handle.version, config=driver_pb2.TaskConfig(
            id=id1, name="http-server", alloc_id=alloc_a), driver_state=handle.driver_state)
        gh.call("a2", DRIVER + "RecoverTask", driver_pb2.RecoverTaskRequest(handle=stale), ok=False)
        if how == "lost-node":
            wait_a2 = gh.start("a2", DRIVER + "WaitTask", driver_pb2.WaitTaskRequest(task_id=id1))
            time.sleep(0.6)
            assert not gh.done(wait_a2), "the restored WaitTask ended while the ECS task runs (a false restart)"
            gh.call("a2", DRIVER + "StopTask", driver_pb2.StopTaskRequest(task_id=id1, signal="SIGINT"), ok=False)
        gh.call("a2", DRIVER + "DestroyTask", driver_pb2.DestroyTaskRequest(task_id=id1, force=True), ok=False)
        time.sleep(1.0)  # several of B's poll cycles
        assert world.describe(arn)["lastStatus"] == "RUNNING", "the stale restore stopped the replacement's task"
        assert not gh.done(wait_b), f"B's WaitTask returned: {gh.answer(wait_b, 'done')}"
        ins = gh.call("b", DRIVER + "InspectTask", driver_pb2.InspectTaskRequest(task_id=id2),
                      driver_pb2.InspectTaskResponse)
        assert ins.task.state == driver_pb2.RUNNING and ins.driver.attributes["last_status"] == "RUNNING"
        tags = {t["key"]: t["value"] for t in world.tasks("RUNNING")[0]["tags"]}
        assert tags[OWNER_TAG] == id2

        # The owner's own normal stop (job stop) still stops the ECS task.
        gh.call("b", DRIVER + "StopTask", driver_pb2.StopTaskRequest(task_id=id2, signal="SIGINT"))
        done = gh.answer(wait_b, "done")
        assert "error" not in done, done
        assert world.describe(arn)["lastStatus"] == "STOPPED"
        assert len(world.all_tasks()) == 1
    finally:
        gh.close()
