"""The fake's state sequences per scenario (docs/nomad-notes.md, "What each scenario looks like in the API"),
with the simulated clients acting on the moto server's ECS for real."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.fakenomad import FakeNomad, PluginRuntime, Timings
from tests.support.fake_nomad import JOB, TASK, api, arn_of, ecs_task, events, healthy_alloc, run_job

pytestmark = pytest.mark.slow

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True

def test_job_run_sequence(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    out = run_job(fake, ecs_demo.job_hcl())
    assert out["EvalID"] and out["JobModifyIndex"] > 0 and out["NextToken"] == ""
    a1 = healthy_alloc(fake)
    alloc = api(fake, f"/v1/allocation/{a1}")
    assert alloc["ClientStatus"] == "running" and alloc["ClientDescription"] == "Tasks are running"
    assert events(alloc) == ["Received", "Task Setup", "Started"]
    ts = alloc["TaskStates"][TASK]
    assert (ts["State"] == "running" and ts["StartedAt"] and ts["FinishedAt"] is None
            and ts["TaskHandle"]["Version"] == 1)
    assert "PreviousAllocation" not in alloc and "NextAllocation" not in alloc  # omitempty
    assert alloc["DeploymentStatus"]["Healthy"] is True and alloc["Name"] == f"{JOB}.ecs-remote-task-demo[0]"
    task = ecs_task(aws, ecs_demo, arn_of(alloc))
    assert task["lastStatus"] == "RUNNING" and task["startedBy"] == "nomad-" + a1[:30]
    dep = api(fake, f"/v1/job/{JOB}/deployment")
    assert dep["Status"] == "successful" and dep["TaskGroups"]["ecs-remote-task-demo"]["HealthyAllocs"] == 1
    assert api(fake, f"/v1/job/{JOB}")["Status"] == "running"


def test_drain_keeps_the_ecs_task(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    old = api(fake, f"/v1/allocation/{a1}")
    n1 = old["NodeID"]
    r = requests.post(f"{fake.address}/v1/node/{n1}/drain",
                      json={"DrainSpec": {"Deadline": 3600 * 10**9, "IgnoreSystemJobs": False}}, timeout=5)
    assert r.status_code == 200 and int(r.headers["X-Nomad-Index"]) == r.json()["Index"]
    node = api(fake, f"/v1/node/{n1}")
    assert node["DrainStrategy"] is not None and "Drain" not in node and node["SchedulingEligibility"] == "ineligible"
    assert node["LastDrain"]["Status"] == "draining" and node["Events"][-1]["Message"] == "Node drain strategy set"
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete" and c.allocs[a2]["ClientStatus"] == "running")
    old, new = api(fake, f"/v1/allocation/{a1}"), api(fake, f"/v1/allocation/{a2}")
    assert old["DesiredStatus"] == "stop" and old["DesiredDescription"] == "alloc is being migrated"
    assert old["DesiredTransition"]["Migrate"] is True
    assert events(old) == ["Received", "Task Setup", "Started", "Killing", "Terminated", "Killed"]
    assert old["TaskStates"][TASK]["State"] == "dead" and old["TaskStates"][TASK]["TaskHandle"]  # kept
    assert new["PreviousAllocation"] == a1 and new["NodeID"] != n1 and new["Name"] == old["Name"]
    assert events(new) == ["Received", "Task Setup", "Started"]
    assert arn_of(new) == arn_of(old)
    assert ecs_task(aws, ecs_demo, arn_of(new))["lastStatus"] == "RUNNING"  # DETACH left it alone
    fake.wait_for(lambda c: c.nodes[n1]["DrainStrategy"] is None)
    node = api(fake, f"/v1/node/{n1}")
    assert node["DrainStrategy"] is None and node["LastDrain"]["Status"] == "complete"
    assert node["SchedulingEligibility"] == "ineligible"
    assert "Node drain complete" in [e["Message"] for e in node["Events"]]
    # making a draining node eligible is refused; a drained one can be made eligible
    stub = next(s for s in api(fake, f"/v1/job/{JOB}/allocations") if s["ID"] == a1)
    assert stub["NextAllocation"] == a2 and "PreviousAllocation" not in stub
    r = requests.post(f"{fake.address}/v1/node/{n1}/eligibility", json={"Eligibility": "eligible"}, timeout=5)
    assert r.status_code == 200 and api(fake, f"/v1/node/{n1}")["SchedulingEligibility"] == "eligible"


def test_lost_node_then_return(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    n1 = fake.cluster.allocs[a1]["NodeID"]
    arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    fake.kill_node(n1)
    fake.wait_for(lambda c: c.nodes[n1]["Status"] == "down", message="node down")
    node = api(fake, f"/v1/node/{n1}")
    assert node["Events"][-1]["Message"] == "Node heartbeat missed" and node["SchedulingEligibility"] == "eligible"
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
    fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running")
    old, new = api(fake, f"/v1/allocation/{a1}"), api(fake, f"/v1/allocation/{a2}")
    assert (old["DesiredStatus"], old["ClientStatus"]) == ("stop", "lost")
    assert old["DesiredDescription"] == "alloc is lost since its node is down"
    assert old["ClientDescription"] == "Tasks are running" and old["TaskStates"][TASK]["State"] == "running"
    assert new["PreviousAllocation"] == a1 and arn_of(new) == arn
    r = requests.get(f"{fake.address}/v1/client/fs/logs/{a1}", params={"task": TASK, "type": "stdout"}, timeout=5)
    assert (r.status_code, r.text) == (404, "No path to node")
    fake.restart_node(n1)
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete", message="old alloc complete")
    assert events(api(fake, f"/v1/allocation/{a1}"))[-3:] == ["Killing", "Terminated", "Killed"]
    assert api(fake, f"/v1/node/{n1}")["Status"] == "ready"
    assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "RUNNING"  # DETACH on return, not a stop


def test_update_replaces_the_task(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    old_arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    out = run_job(fake, ecs_demo.job_hcl(task_definition="nomad-remote-driver-demo:2"))
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
    fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running" and c.allocs[a1]["ClientStatus"] == "complete")
    old, new = api(fake, f"/v1/allocation/{a1}"), api(fake, f"/v1/allocation/{a2}")
    assert old["DesiredDescription"] == "alloc is being updated due to job update"
    assert new["Job"]["Version"] == 1 and new["PreviousAllocation"] == a1
    assert arn_of(new) != old_arn
    assert ecs_task(aws, ecs_demo, old_arn)["lastStatus"] == "STOPPED"
    assert ecs_task(aws, ecs_demo, old_arn)["stoppedReason"] == f"Stopped by Nomad: allocation {a1} task {TASK}"
    assert ecs_task(aws, ecs_demo, arn_of(new))["taskDefinitionArn"].endswith(":2")
    stubs = {s["ID"]: s for s in api(fake, f"/v1/job/{JOB}/allocations")}
    assert stubs[a2]["JobVersion"] == 1 and stubs[a1]["JobVersion"] == 0
    ev = api(fake, f"/v1/evaluation/{out['EvalID']}")
    assert ev["TriggeredBy"] == "job-register" and ev["Status"] == "complete"
    fake.wait_for(lambda c: c.latest_deployment(JOB)["Status"] == "successful")
    deps = api(fake, f"/v1/job/{JOB}/deployments")
    assert [d["JobVersion"] for d in deps] == [1, 0]


def test_stop_then_purge(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    r = requests.delete(f"{fake.address}/v1/job/{JOB}", timeout=5)
    assert r.status_code == 200 and r.json()["EvalID"]
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete", message="stopped")
    alloc = api(fake, f"/v1/allocation/{a1}")
    assert alloc["DesiredDescription"] == "alloc not needed due to job update"
    job = api(fake, f"/v1/job/{JOB}")
    assert job["Stop"] is True and job["Status"] == "dead" and job["Version"] == 1
    assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "STOPPED"
    assert api(fake, f"/v1/job/{JOB}/deployment")["Status"] in ("cancelled", "successful")
    requests.delete(f"{fake.address}/v1/job/{JOB}", params={"purge": "true"}, timeout=5)
    r = requests.get(f"{fake.address}/v1/job/{JOB}", timeout=5)
    assert (r.status_code, r.text) == (404, "job not found")
    assert [s["ID"] for s in api(fake, f"/v1/job/{JOB}/allocations")] == [a1]


def test_no_healthy_driver_blocks_the_eval_until_a_node_can_take_it(fake_nomad, ecs_demo):
    fake = fake_nomad
    n1 = fake.add_node("nomad-client-1", healthy=False, description="no credentials")
    fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
    out = run_job(fake, ecs_demo.job_hcl())
    fake.wait_for(lambda c: c.evals[out["EvalID"]]["Status"] == "complete")
    ev = api(fake, f"/v1/evaluation/{out['EvalID']}")
    failed = ev["FailedTGAllocs"]["ecs-remote-task-demo"]
    assert failed["ConstraintFiltered"] == {"missing drivers": 1} and failed["NodesEvaluated"] == 1
    assert api(fake, f"/v1/evaluation/{ev['BlockedEval']}")["Status"] == "blocked"
    assert api(fake, f"/v1/job/{JOB}")["Status"] == "pending" and api(fake, f"/v1/job/{JOB}/allocations") == []
    fake.set_driver_health(n1, True)
    healthy_alloc(fake)


def test_failed_handover_recovery_starts_a_new_task_on_drain(fake_nomad, ecs_demo, tmp_path, request):
    fake = fake_nomad
    bad = PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, workdir=tmp_path / "bad", recover_starts_new=True)
    request.addfinalizer(bad.close)
    n1 = fake.add_node("nomad-client-1")
    fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    n2 = fake.add_node("nomad-client-2", runtime=bad)
    fake.wait_for(lambda c: c.nodes[n2]["Status"] == "ready")
    requests.post(f"{fake.address}/v1/node/{n1}/drain", json={"DrainSpec": {"Deadline": -1}}, timeout=5)
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"])
    fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running")
    new, old = api(fake, f"/v1/allocation/{a2}"), api(fake, f"/v1/allocation/{a1}")
    assert arn_of(new) and arn_of(new) != arn_of(old)
    # the plugin refused the handle (RecoverTask failed), so node 2's client started a second ECS task
    rpcs = [(rpc, err) for rpc, _, _, err in bad.nodes[n2].call_log(a2)]
    assert rpcs[0][0] == "RecoverTask" and rpcs[0][1] and ("StartTask", "") in rpcs


def test_node_bound_to_a_process_goes_down_when_it_dies():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with FakeNomad(timings=Timings.fast()) as fake:
            n1 = fake.add_node("nomad-client-1", pid=proc.pid)
            port = fake.client_address(n1)
            fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
            proc.kill()
            proc.wait()
            fake.wait_for(lambda c: c.nodes[n1]["Status"] == "down", timeout=5, message="node down")
            try:
                requests.get(port + "/v1/agent/self", timeout=2)
                refused = False
            except requests.ConnectionError:
                refused = True
            assert refused
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
