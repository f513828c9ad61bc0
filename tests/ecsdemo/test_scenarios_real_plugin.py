"""The whole demo (`all`: drain, undrain, lost-node, update, stop) with the REAL plugin under the fake Nomad.

The scenario runner drives the fake Nomad HTTP API exactly as in test_scenario_flows.py (the same `Demo`
helpers, imported), but every simulated node's tasks go through its own `nomad-driver-ecs` process
(`tests.fakenomad.plugin_runtime.PluginRuntime`): StartTask, RecoverTask + InspectTask for hand-overs,
StopTask DETACH or a normal StopTask, WaitTask, DestroyTask. The ECS side is the session moto server.
"""

from __future__ import annotations

import pytest

from ecsdemo.config import TASK_NAME
from ecsdemo.nomad import task_arn
from ecsdemo.scenarios import runner
from tests.ecsdemo import test_scenario_flows as flows
from tests.ecsdemo.test_scenario_flows import checks_of, demo_factory, failures, module_aws  # noqa: F401
from tests.fakenomad.plugin_runtime import PluginRuntime

HANDLES = "ECS task ARN unchanged (allocations' task handles)"


@pytest.fixture
def plugin_runtimes(monkeypatch, tmp_path):
    """make_demo builds its fake Nomad with `EcsRuntime(endpoint, cluster, region)`: build a PluginRuntime
    instead; every plugin process is shut down (and killed) at teardown, after the demo is stopped."""
    made: list[PluginRuntime] = []

    def runtime(endpoint, cluster, region, **kw):
        made.append(PluginRuntime(endpoint, cluster, region, workdir=tmp_path / f"plugins{len(made)}", **kw))
        return made[-1]
    monkeypatch.setattr(flows, "EcsRuntime", runtime)
    yield made
    for rt in made:
        rt.close()
    for rt in made:
        assert all(not h.alive() for n in rt.nodes.values() for h in n.launches)


@pytest.fixture
def plugin_demo(plugin_runtimes, demo_factory):  # noqa: F811 - the imported fixture
    demo = demo_factory()
    (runtime,) = plugin_runtimes
    return demo, runtime


def _messages(runtime: PluginRuntime, alloc_id: str) -> list[str]:
    return [e["message"] for e in runtime.events(alloc_id)]


def test_all_scenarios_through_the_real_plugin(plugin_demo):
    demo, runtime = plugin_demo
    first = demo.running_alloc()
    arn = task_arn(first, TASK_NAME)
    assert arn and runtime.events(first["ID"])[0]["message"] == "Started ECS task"
    assert runtime.task_ids[(first["ID"], TASK_NAME)][1].startswith(f"{first['ID']}/{TASK_NAME}/")

    report = runner.run("all", demo.env(timeout=20.0))
    assert report.ok, failures(report)
    assert [r.name for r in report.results] == ["drain", "undrain", "lost-node", "update", "stop"]

    # drain and lost-node handed the same ECS task over, and it never left RUNNING
    drain, lost = checks_of(report, "drain"), checks_of(report, "lost-node")
    assert drain[HANDLES].before == drain[HANDLES].after == arn
    assert lost[HANDLES].after == arn
    assert drain["ECS task never left RUNNING"].after == ["RUNNING"]
    assert lost["ECS task never left RUNNING while the client came back"].after == ["RUNNING"]

    # the plugins' side: two allocations detached from it, two recovered it (each on another node's plugin),
    # and nothing but the update stopped it
    events = [e for e in runtime.events() if e["annotations"].get("arn") == arn]
    detached = [e for e in events if e["message"].startswith("Detached from ECS task")]
    recovered = [e for e in events if e["message"] == "Recovered ECS task"]
    stops = [e for e in events if e["message"] == "Stop requested: stopping ECS task"]
    assert len(detached) == 2 and detached[0]["alloc_id"] == first["ID"], events
    assert len(recovered) == 2 and {e["alloc_id"] for e in recovered}.isdisjoint({first["ID"]}), [
        (e["message"], e["alloc_id"][:8], e["node_id"][:8], e["task_id"][-8:]) for e in runtime.events()]
    assert detached[1]["alloc_id"] == recovered[0]["alloc_id"]          # the drain replacement was lost
    assert recovered[0]["node_id"] != first["NodeID"]                    # drain: recovered on the other node
    assert recovered[1]["node_id"] != recovered[0]["node_id"]            # lost-node: and back
    assert len(stops) == 1 and stops[0]["alloc_id"] == recovered[1]["alloc_id"]
    assert any("detached from ECS task" in line for line in runtime.task_output(first["ID"], TASK_NAME))
    assert any(line.endswith(f"recovered ECS task {arn} (cluster {demo.ecs.cluster}); monitoring resumes")
               for line in runtime.task_output(recovered[0]["alloc_id"], TASK_NAME))
    # the plugins' own logs (hclog JSON on stderr, every line parsed) say the same, with no warning or error
    logs = {n.node_id: n.host.logs() for n in runtime.nodes.values()}
    assert not [(nid, r) for nid, lines in logs.items() for r in lines if r["@level"] not in ("info", "debug", "trace")]
    assert all(any(r["@message"].startswith("Detached from ECS task") for r in lines) for lines in logs.values())
    # three allocations held it, each under its own task id (a replacement's RecoverTask uses a new one)
    assert len({e["task_id"] for e in events}) == 3
    assert all(e["task_id"].startswith(f"{e['alloc_id']}/{TASK_NAME}/") for e in events)

    # moto: the one task ran through both hand-overs and was stopped by the plugin in the update
    ecs = demo.aws.client("ecs")
    old = ecs.describe_tasks(cluster=demo.ecs.cluster, tasks=[arn])["tasks"][0]
    assert old["lastStatus"] == "STOPPED"
    assert old["stoppedReason"] == f"Stopped by Nomad: allocation {recovered[1]['alloc_id']} task {TASK_NAME}"
    update = checks_of(report, "update")
    assert update["old ECS task STOPPED by the driver"].after["reason"] == old["stoppedReason"]
    new_arn = update["new ECS task RUNNING on the new revision"].after["arn"]
    new = ecs.describe_tasks(cluster=demo.ecs.cluster, tasks=[new_arn], include=["TAGS"])["tasks"][0]
    assert new["lastStatus"] == "STOPPED" and new["stoppedReason"].startswith("Stopped by Nomad: allocation ")
    assert {t["key"]: t["value"] for t in new["tags"]}["nomad:job"] == first["JobID"]

    # after stop nothing runs, and no plugin still tracks a task
    assert demo.running_ecs() == []
    assert ecs.list_tasks(cluster=demo.ecs.cluster, desiredStatus="RUNNING")["taskArns"] == []
    assert runtime.task_ids == {}
    assert len(runtime.nodes) == 2 and all(n.host.alive() for n in runtime.nodes.values())
    assert all(n.health and n.health[-1] == "HEALTHY" for n in runtime.nodes.values())
