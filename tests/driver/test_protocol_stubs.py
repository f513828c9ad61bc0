"""The committed stubs in driver/pb are what scripts/gen_protos.py makes from the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from driver.pb import base_pb2, driver_pb2, go_plugin_pb2, hclspec_pb2

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "driver" / "pb").glob("*_pb2*.py")}
    committed = {p.name: p.read_bytes() for p in (ROOT / "driver" / "pb").glob("*_pb2*.py")}
    assert fresh, "gen_protos.py produced nothing"
    assert sorted(fresh) == sorted(committed), "stub files differ: run python scripts/gen_protos.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run python scripts/gen_protos.py and commit"


def test_wire_names_match_the_contract():
    services = {s.full_name: [m.name for m in s.methods] for mod in (base_pb2, driver_pb2, go_plugin_pb2)
                for s in mod.DESCRIPTOR.services_by_name.values()}
    assert services["hashicorp.nomad.plugins.base.proto.BasePlugin"] == ["PluginInfo", "ConfigSchema", "SetConfig"]
    assert services["plugin.GRPCController"] == ["Shutdown"]
    assert services["plugin.GRPCStdio"] == ["StreamStdio"]
    assert services["plugin.GRPCBroker"] == ["StartStream"]
    assert set(services["hashicorp.nomad.plugins.drivers.proto.Driver"]) >= {
        "TaskConfigSchema", "Capabilities", "Fingerprint", "RecoverTask", "StartTask", "WaitTask", "StopTask",
        "DestroyTask", "InspectTask", "TaskStats", "TaskEvents", "SignalTask", "ExecTask"}
    ndc = base_pb2.NomadDriverConfig.DESCRIPTOR.fields_by_name
    assert (ndc["ClientMaxPort"].number, ndc["ClientMinPort"].number) == (1, 2)
    spec = hclspec_pb2.Spec.DESCRIPTOR.fields_by_name
    assert (spec["Attr"].number, spec["block_value"].number, spec["default"].number) == (3, 4, 9)
    mem = driver_pb2.MemoryUsage.DESCRIPTOR.fields_by_name
    assert (mem["measured_fields"].number, mem["usage"].number, mem["swap"].number) == (6, 7, 8)
    assert driver_pb2.DriverCapabilities.DESCRIPTOR.fields_by_name["remote_tasks"].number == 7
    assert driver_pb2.LinuxResources.DESCRIPTOR.fields_by_name["PercentTicks"].number == 8
