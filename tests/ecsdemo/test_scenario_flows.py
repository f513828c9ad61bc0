"""Every scenario against the recording fake Nomad API (scripted through the state sequences real Nomad
goes through, docs/nomad-notes.md "Scheduler behaviour") with the ECS side on the real moto server, plus each failure
path: no replacement in time, a replacement with a different ARN, a second task, a node that never goes down.

Only Nomad's HTTP API is faked: every simulated node drives its tasks through its own real
`nomad-driver-ecs` process (`PluginRuntime`). ECS calls are real boto3 calls to moto, and the lost-node scenario kills a
real process through `ecsdemo.agents` (SIGKILL of the recorded pid): the fake's client is bound to that pid
and stops heartbeating when it dies. The only seams replaced are restarting an agent (there is no nomad
binary here) and Terraform's apply in the update scenario (a new revision registered with boto3; the job is
still rendered by `ecsdemo.render` and parsed by the fake's /v1/jobs/parse).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from ecsdemo import agents as agents_mod
from ecsdemo.config import JOB_ID, TASK_NAME
from ecsdemo.nomad import task_arn
from ecsdemo.progress import RecordingReporter
from ecsdemo.scenarios import runner
from tests.support.moto_world import FAMILY
from tests.support.scenario_demo import FAST, Demo, checks_of, failures, make_demo, stop_demo

pytestmark = pytest.mark.slow


@pytest.fixture
def demo_factory(module_aws, tmp_path):
    aws, ecs = module_aws
    client = aws.client("ecs")
    for arn in client.list_tasks(cluster=ecs.cluster, desiredStatus="RUNNING")["taskArns"]:
        client.stop_task(cluster=ecs.cluster, task=arn, reason="test cleanup")
    made: list[Demo] = []

    def make(**kw) -> Demo:
        d = make_demo(aws, ecs, tmp_path / f"d{len(made)}", **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        stop_demo(d)


@pytest.fixture
def demo(demo_factory) -> Demo:
    return demo_factory()


# --- drain ---------------------------------------------------------------------------------------
def test_drain_keeps_the_same_ecs_task_and_undrains(demo):
    before = demo.running_alloc()
    arn = task_arn(before, TASK_NAME)
    reporter = RecordingReporter()
    report = runner.run("drain", demo.env(reporter))
    assert report.ok and report.exit_code == 0, failures(report)
    c = checks_of(report, "drain")
    assert c["ECS task ARN unchanged (allocations' task handles)"].before == arn
    assert c["ECS task ARN unchanged (allocations' task handles)"].after == arn
    assert c["ECS task ARN unchanged (ECS)"].after == arn
    assert c["ECS task never left RUNNING"].after == ["RUNNING"]
    assert c["replacement allocation running on another node"].before["node_id"] == before["NodeID"]
    assert c["replacement allocation running on another node"].after["node_id"] != before["NodeID"]
    assert c["old allocation migrated, not killed"].ok
    assert c["node eligible again"].after["eligibility"] == "eligible"
    assert demo.running_ecs() == [arn]
    # the steps were shown as they happened, in order
    steps = reporter.texts("done")
    assert steps[0].startswith("Drain nomad-client-") and steps[1].startswith("Wait for the replacement")
    assert steps[2].startswith("Disable the drain")
    # Nomad saw a drain with a deadline, then a disable that marks the node eligible
    drains = demo.fake.requests_to("POST", f"/v1/node/{before['NodeID']}/drain")
    assert drains[0].body["DrainSpec"]["Deadline"] == int(FAST["timeout"] * 1e9)
    assert drains[1].body["DrainSpec"] is None and drains[1].body["MarkEligible"] is True
    # the waits used blocking queries
    assert any("index" in r.query and r.query.get("index") != ["0"]
               for r in demo.fake.requests_to("GET", f"/v1/job/{JOB_ID}/allocations"))


def test_drain_keep_drained_leaves_the_node_ineligible(demo):
    node_id = demo.running_alloc()["NodeID"]
    report = runner.run("drain", demo.env(keep_drained=True))
    assert report.ok, failures(report)
    assert "node eligible again" not in checks_of(report, "drain")
    assert demo.nomad().node(node_id)["SchedulingEligibility"] == "ineligible"


def test_drain_without_a_replacement_in_time_names_what_nomad_did_not_do(demo_factory):
    # the allocation never becomes healthy, so Nomad's drainer does not migrate it before the drain
    # deadline (doc 6(b) step 2)
    demo = demo_factory(min_healthy_time=1000)
    report = runner.run("drain", demo.env(timeout=1.5, drain_deadline=600))
    assert not report.ok and report.exit_code == 1
    res = report.results[0]
    assert res.error.startswith("no replacement allocation for ")
    assert "within 1.5s" in res.error and "draining" in res.error and "run/running" in res.error


def test_drain_replacement_with_a_new_task_fails_the_checks(demo_factory):
    # recovery fails, so the replacement starts a NEW ECS task (what Nomad does when RecoverTask fails)
    demo = demo_factory(runtime_kw={"recover_starts_new": True})
    arn = task_arn(demo.running_alloc(), TASK_NAME)
    report = runner.run("drain", demo.env())
    assert not report.ok and report.exit_code == 1
    c = checks_of(report, "drain")
    handles = c["ECS task ARN unchanged (allocations' task handles)"]
    assert not handles.ok and handles.before == arn and handles.after not in (arn, None)
    assert c["ECS task ARN unchanged (ECS)"].ok is False
    # the old task was detached, not stopped: now two tasks of the job run
    assert not c["exactly one ECS task of the job RUNNING"].ok
    assert "2 ECS tasks" in c["exactly one ECS task of the job RUNNING"].detail


def test_drain_detects_a_second_task_of_the_job(demo):
    client = demo.aws.client("ecs")
    client.run_task(cluster=demo.ecs.cluster, taskDefinition=demo.ecs.task_definition, launchType="FARGATE",
                    tags=[{"key": "nomad:job", "value": JOB_ID}],
                    networkConfiguration={"awsvpcConfiguration": {"subnets": [demo.ecs.subnet],
                                                                  "securityGroups": [demo.ecs.security_group]}})
    report = runner.run("drain", demo.env())
    c = checks_of(report, "drain")
    assert c["ECS task ARN unchanged (allocations' task handles)"].ok
    one_running = c["exactly one ECS task of the job RUNNING"]
    assert not one_running.ok and len(one_running.after) == 2
    assert report.exit_code == 1


def test_drain_needs_another_eligible_client(demo):
    other = [n for n in demo.node_ids if n != demo.running_alloc()["NodeID"]][0]
    demo.fake.set_driver_health(other, healthy=False, description="no AWS credentials")
    demo.fake.wait_for(lambda c: not c.nodes[other]["Drivers"]["ecs"]["Healthy"])
    report = runner.run("drain", demo.env())
    assert report.exit_code == 3
    assert "no other client can take the allocation" in report.results[0].error
    assert not demo.fake.requests_to("POST", r"/v1/node/.*/drain")   # nothing was changed


# --- lost node -----------------------------------------------------------------------------------
def test_lost_node_keeps_the_task_and_the_restarted_client_detaches(demo):
    before = demo.running_alloc()
    arn = task_arn(before, TASK_NAME)
    name = demo.names[demo.node_ids.index(before["NodeID"])]
    victim = demo.procs[name]
    env = demo.env()
    report = runner.run("lost-node", env)
    assert report.ok, failures(report)
    assert victim.poll() is not None or not psutil.pid_exists(victim.pid)   # the recorded agent was killed
    assert env.agents.started == [name]
    c = checks_of(report, "lost-node")
    assert c["node marked down"].before["status"] == "ready" and c["node marked down"].after["status"] == "down"
    assert c["old allocation lost"].after["client"] == "lost"
    assert c["ECS task ARN unchanged (allocations' task handles)"].after == arn
    assert c["client rejoined"].after["status"] == "ready"
    assert c["lost allocation finished by the client"].ok
    assert c["ECS task never left RUNNING while the client came back"].after == ["RUNNING"]
    assert demo.running_ecs() == [arn]


def test_lost_node_no_restart_and_reenables_a_drained_client(demo):
    first = demo.running_alloc()["NodeID"]
    assert runner.run("drain", demo.env(keep_drained=True)).ok
    reporter = RecordingReporter()
    env = demo.env(reporter, restart=False)
    report = runner.run("lost-node", env)
    assert report.ok, failures(report)
    assert any(t.startswith("Re-enable scheduling on") and first[:8] in t for t in reporter.texts("done"))
    assert env.agents.started == []
    assert "client rejoined" not in checks_of(report, "lost-node")


def test_lost_node_when_the_node_never_goes_down(demo_factory):
    demo = demo_factory(heartbeat_grace=1000)
    report = runner.run("lost-node", demo.env(timeout=1.0))
    assert report.exit_code == 1
    err = report.results[0].error
    assert err.startswith("node nomad-client-") and "was not marked down within 1s" in err and "is ready" in err
    assert "heartbeat" in report.results[0].hint


def test_lost_node_only_kills_agents_ecsdemo_started(demo):
    agents_mod.forget(demo.cfg, demo.names[demo.node_ids.index(demo.running_alloc()["NodeID"])])
    report = runner.run("lost-node", demo.env())
    assert report.exit_code == 3 and "is not run by a client agent ecsdemo started" in report.results[0].error
    assert all(p.poll() is None for p in demo.procs.values())
    assert not demo.fake.requests_to("POST", r"/v1/node/.*")   # nothing was changed


# --- update --------------------------------------------------------------------------------------
def test_update_runs_the_new_revision_and_revert_goes_back(demo):
    old_arn = task_arn(demo.running_alloc(), TASK_NAME)
    env = demo.env()
    report = runner.run("update", env)
    assert report.ok, failures(report)
    c = checks_of(report, "update")
    assert c["job re-rendered with the new revision"].before == f"{FAMILY}:1"
    assert c["job re-rendered with the new revision"].after == f"{FAMILY}:2"
    new = c["new ECS task RUNNING on the new revision"].after
    assert new["arn"] != old_arn and new["task_definition"].endswith(f"{FAMILY}:2")
    assert c["old ECS task STOPPED by the driver"].after["reason"].startswith("Stopped by Nomad")
    assert demo.running_ecs() == [new["arn"]]
    assert (demo.cfg.render_dir / "demo-ecs.nomad").read_text().count(f'"{FAMILY}:2"') == 1

    back = runner.run("update", demo.env(revert=True))
    assert back.ok, failures(back)
    assert checks_of(back, "update")["job re-rendered with the new revision"].after == f"{FAMILY}:1"
    assert env.infra.applied == ["updated"]


def test_update_to_the_revision_already_running_is_refused(demo):
    report = runner.run("update", demo.env(revert=True))
    assert report.exit_code == 3
    assert f"already runs task definition {FAMILY}:1" in report.results[0].error


# --- stop ----------------------------------------------------------------------------------------
def test_stop_stops_the_ecs_task_with_the_drivers_reason(demo):
    alloc = demo.running_alloc()
    report = runner.run("stop", demo.env())
    assert report.ok, failures(report)
    c = checks_of(report, "stop")
    assert alloc["ID"] in c["old ECS task STOPPED by the driver"].after["reason"]
    assert c["no ECS task of the job left running"].after == []
    assert demo.running_ecs() == []
    # run again on a stopped job: a clear precondition failure
    again = runner.run("stop", demo.env())
    assert again.exit_code == 3 and "is stopped" in again.results[0].error


def test_preconditions_nomad_version_and_job(demo_factory):
    old = demo_factory(version="1.10.0", run_job=False)
    report = runner.run("drain", old.env())
    assert report.exit_code == 3 and "Nomad 1.10.0 has no remote task handles" in report.results[0].error


# --- all -----------------------------------------------------------------------------------------
# (a passing `all`, whose outage step pauses a local endpoint of its own: test_scenario_new.py)
def test_all_skips_the_rest_after_a_failure(demo_factory):
    demo = demo_factory(runtime_kw={"recover_starts_new": True})
    report = runner.run("all", demo.env())
    assert [r.status for r in report.results] == ["failed"] + ["skipped"] * 7
    assert [r.name for r in report.results] == list(runner.ALL_ORDER)
    assert report.exit_code == 1 and all(r.skipped == "drain failed" for r in report.results[1:])


# --- the command line, wired to production adapters ------------------------------------------------
def _cli(demo: Demo, *args: str) -> subprocess.CompletedProcess:
    demo.cfg.save()
    env = dict(os.environ, COLUMNS="200")
    env.pop("NOMAD_ADDR", None)
    return subprocess.run([sys.executable, "-m", "ecsdemo", "run-scenario", *args, "--state-dir",
                           str(demo.cfg.state_dir)], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


def test_cli_drain_prints_the_checklist(demo):
    arn = task_arn(demo.running_alloc(), TASK_NAME)
    proc = _cli(demo, "drain", "--timeout", "20")
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "drain: passed" in proc.stdout and "all checks passed" in proc.stdout
    assert arn in proc.stdout and "ECS task never left RUNNING" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_cli_json_report_and_exit_code(demo_factory):
    demo = demo_factory(runtime_kw={"recover_starts_new": True})
    original = task_arn(demo.running_alloc(), TASK_NAME)
    proc = _cli(demo, "drain", "--json", "--timeout", "20")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 1
    failed = {c["name"] for c in doc["results"][0]["checks"] if not c["ok"]}
    assert "ECS task ARN unchanged (allocations' task handles)" in failed
    assert "exactly one ECS task of the job RUNNING" in failed
    assert "run-scenario drain failed" in proc.stderr
    # stopping the job stops the replacement's task, but the original one was detached and leaked: stop says so
    stop = _cli(demo, "stop", "--json", "--timeout", "20")
    assert stop.returncode == 1
    checks = {c["name"]: c for c in json.loads(stop.stdout)["results"][0]["checks"]}
    assert checks["old ECS task STOPPED by the driver"]["ok"]
    assert checks["no ECS task of the job left running"]["after"] == [original]


def test_cli_when_nomad_is_not_running(demo):
    demo.fake.stop()
    proc = _cli(demo, "stop", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["results"][0]["error"].startswith(f"cannot reach Nomad at http://127.0.0.1:{demo.cfg.server_http_port}")


# --- what the plugins saw ------------------------------------------------------------------------------
def test_drain_lost_node_update_stop_as_the_plugins_saw_them(demo):
    """The hand-overs and stops from the plugin processes' side: their task events, call logs and hclog."""
    runtime = demo.fake.runtime
    first = demo.running_alloc()
    arn = task_arn(first, TASK_NAME)
    assert arn and runtime.events(first["ID"])[0]["message"] == "Started ECS task"
    for name in ("drain", "lost-node", "update", "stop"):   # drain also undrains
        report = runner.run(name, demo.env(timeout=20.0))
        assert report.ok, failures(report)

    events = [e for e in runtime.events() if e["annotations"].get("arn") == arn]
    detached = [e for e in events if e["message"].startswith("Detached from ECS task")]
    recovered = [e for e in events if e["message"].startswith("Recovered ECS task")]
    stops = [e for e in events if e["message"].startswith("Stop requested")]
    trace = [(e["message"], e["alloc_id"][:8], e["node_id"][:8], e["task_id"][-8:]) for e in runtime.events()]
    assert len(detached) == 2 and detached[0]["alloc_id"] == first["ID"], trace
    assert len(recovered) == 2 and {e["alloc_id"] for e in recovered}.isdisjoint({first["ID"]}), trace
    assert detached[1]["alloc_id"] == recovered[0]["alloc_id"]          # the drain replacement was lost
    assert recovered[0]["node_id"] != first["NodeID"]                    # drain: recovered on the other node
    assert recovered[1]["node_id"] != recovered[0]["node_id"]            # lost-node: and back
    assert len(stops) == 1 and stops[0]["alloc_id"] == recovered[1]["alloc_id"], trace
    # a replacement's RecoverTask uses a new task id, then InspectTask (remotetask_hook.go), never StartTask
    calls = [(rpc, tid) for _, rpc, tid, _, _ in runtime.call_log(recovered[0]["alloc_id"])]
    assert [rpc for rpc, _ in calls[:3]] == ["RecoverTask", "InspectTask", "WaitTask"], calls
    assert "StartTask" not in [rpc for rpc, _ in calls]
    assert len({e["task_id"] for e in events}) == 3
    assert all(e["task_id"].startswith(f"{e['alloc_id']}/{TASK_NAME}/") for e in events)
    # the task's stdout (what `nomad alloc logs` serves) is the plugin's own output
    assert any("detached from ECS task" in line for line in runtime.task_output(first["ID"], TASK_NAME))
    # the plugins' own logs (hclog JSON on stderr, every line parsed) show no warning or error
    logs = {n.node_id: n.host.logs() for n in runtime.nodes.values()}
    assert not [(nid, r) for nid, lines in logs.items() for r in lines if r["@level"] not in ("info", "debug", "trace")]

    ecs = demo.aws.client("ecs")
    old = ecs.describe_tasks(cluster=demo.ecs.cluster, tasks=[arn])["tasks"][0]
    assert old["lastStatus"] == "STOPPED"
    assert old["stoppedReason"] == f"Stopped by Nomad: allocation {recovered[1]['alloc_id']} task {TASK_NAME}"
    assert demo.running_ecs() == []
    assert len(runtime.nodes) == 2 and all(n.host.alive() for n in runtime.nodes.values())
    assert all(n.health and n.health[-1] == "HEALTHY" for n in runtime.nodes.values())
