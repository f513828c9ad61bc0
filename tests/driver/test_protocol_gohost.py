"""A real go-plugin host (HashiCorp go-plugin from Debian, built from tests/driver/gohost) drives the plugin.

Skipped where `go` or the go-plugin sources are missing (`apt-get install golang-go
golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from driver.pb import base_pb2
from tests.driver.host import PLUGIN_EXE, cty_msgpack

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


def test_go_plugin_host_handshakes_pings_calls_and_kills(gohost):
    base = "/hashicorp.nomad.plugins.base.proto.BasePlugin/"
    schema_bytes = base_pb2.ConfigSchemaRequest().SerializeToString()
    # The config is encoded against the schema the plugin declares, as Nomad does.
    from driver.schema import CONFIG, to_proto

    config = cty_msgpack(to_proto(CONFIG), {"enabled": False, "log_level": "debug"})
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
