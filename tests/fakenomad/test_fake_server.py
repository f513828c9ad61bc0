"""The fake's SERVER side against Nomad's scheduler, drainer and state store (sources cited in scheduler.py),
observed through its HTTP API with ecsdemo's NomadClient. The client is scripted (scripted_client.py): the
test reports what a Nomad client would, so each server decision is checked on its own."""

from __future__ import annotations

import time

import pytest
import requests

from ecsdemo.nomad import NomadClient, node_draining, task_arn
from tests.fakenomad import FakeNomad, Timings
from tests.fakenomad.scripted_client import (
    TASK,
    add_node,
    heartbeat_again,
    report_dead,
    report_failed,
    report_running,
    stop_heartbeats,
)
from tests.fakenomad.wire import NS

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True

JOB = "demo"
GROUP = "g"
JOB_ID = "nomad-ecs-demo"  # the demo job (tests/support/moto_world.py EcsDemo.job_hcl)

JOB_HCL = """job "demo" {{
  datacenters = ["dc1"]
  {job_meta}
  group "g" {{
    restart {{
      attempts = 0
      mode     = "fail"
    }}
    reschedule {{
      {reschedule}
    }}
    task "http-server" {{
      driver       = "ecs"
      kill_timeout = "{kill_timeout}"
      config {{
        task {{
          launch_type     = "FARGATE"
          task_definition = "{td}"
        }}
      }}
    }}
  }}
}}
"""


def evaluations(fake, job_id: str) -> list[dict]:
    """The job's evaluations as Nomad's `GET /v1/job/<id>/evaluations` answers (ecsdemo itself never reads them)."""
    return requests.get(f"{fake.address}/v1/job/{job_id}/evaluations", timeout=5).json()


def job_hcl(meta: dict | None = None, kill_timeout: str = "1m", td: str = "demo:1",
            reschedule: str = 'delay = "5s"') -> str:
    job_meta = "meta {\n" + "".join(f'    {k} = "{v}"\n' for k, v in (meta or {}).items()) + "  }" if meta else ""
    return JOB_HCL.format(job_meta=job_meta, kill_timeout=kill_timeout, td=td, reschedule=reschedule)


@pytest.fixture
def server(request):
    """A started fake with no client agents (nodes come from scripted_client) and its NomadClient."""
    version = getattr(request, "param", "1.6.5")
    with FakeNomad(version=version, timings=Timings.fast(min_healthy_time=0.2)) as fake:
        yield fake, NomadClient(fake.address, timeout=5)


def register(client: NomadClient, hcl: str) -> dict:
    return client.register_job(client.parse_job(hcl))


def wait_alloc(fake, pred, message: str, timeout: float = 10.0) -> str:
    return fake.wait_for(lambda c: next((a["ID"] for a in c.job_allocs(JOB) if pred(a)), None),
                         timeout=timeout, message=message)


def running_healthy(fake, client, arn: str, exclude: tuple = ()) -> str:
    """Wait for the job's next placement, report it running, wait until the server counts it healthy."""
    aid = wait_alloc(fake, lambda a: a["ID"] not in exclude and a["DesiredStatus"] == "run"
                     and a["ClientStatus"] == "pending", "a placement")
    report_running(fake, aid, arn)
    fake.wait_for(lambda c: (c.allocs[aid].get("DeploymentStatus") or {}).get("Healthy"), message="healthy")
    return aid


def live(client) -> list[dict]:
    return [a for a in client.job_allocations(JOB) if a["DesiredStatus"] == "run"]


# --- node JSON --------------------------------------------------------------------------------------

def test_full_node_has_drain_strategy_and_no_drain_key_stubs_have_drain():
    with FakeNomad(timings=Timings.fast(min_healthy_time=30)) as fake:  # the drain waits for a healthy alloc
        client = NomadClient(fake.address, timeout=5)
        n1 = add_node(fake, "nomad-client-1")
        register(client, job_hcl())
        report_running(fake, wait_alloc(fake, lambda a: True, "placement"), "arn:task/1")
        check_drain_shapes(client, n1)


def check_drain_shapes(client, n1):
    node = client.node(n1)
    assert "Drain" not in node and node["DrainStrategy"] is None and not node_draining(node)
    client.drain(n1, 3600)
    node = client.node(n1)
    assert "Drain" not in node and node_draining(node)
    strategy = node["DrainStrategy"]
    assert strategy["Deadline"] == 3600 * NS and strategy["IgnoreSystemJobs"] is False
    assert strategy["ForceDeadline"] and strategy["StartedAt"] and "_force_at" not in strategy
    stub = next(s for s in client.nodes() if s["ID"] == n1)
    assert stub["Drain"] is True and "DrainStrategy" not in stub


# --- updates ----------------------------------------------------------------------------------------

def test_meta_change_is_destructive_and_kill_timeout_change_is_in_place(server):
    fake, client = server
    add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    # kill_timeout is not in tasksUpdated: in place, same allocation, now at version 1, in a new deployment
    register(client, job_hcl(kill_timeout="2m"))
    fake.wait_for(lambda c: c.allocs[a1]["Job"]["Version"] == 1, message="in-place update")
    assert [a["ID"] for a in live(client)] == [a1]
    full = client.allocation(a1)
    assert full["Job"]["TaskGroups"][0]["Tasks"][0]["KillTimeout"] == 120 * NS and "NextAllocation" not in full
    assert client.job_deployment(JOB)["JobVersion"] == 1
    fake.wait_for(lambda c: c.latest_deployment(JOB)["Status"] == "successful", message="deployment 1 done")
    # job meta alone: CombinedTaskMeta changed -> destructive: a new allocation, no task handle
    register(client, job_hcl(meta={"run": "2"}, kill_timeout="2m"))
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "replacement")
    old, new = client.allocation(a1), client.allocation(a2)
    assert (old["DesiredStatus"], old["DesiredDescription"]) == ("stop", "alloc is being updated due to job update")
    assert old["NextAllocation"] == a2 and new["PreviousAllocation"] == a1
    assert new["Job"]["Version"] == 2 and new["Job"]["Meta"] == {"run": "2"}
    assert "TaskStates" not in new  # a job update hands no TaskHandle over: the client starts a new task


def test_destructive_update_with_no_node_is_undone_until_one_can_take_it(server):
    fake, client = server
    n1 = add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    client.set_eligibility(n1, False)
    out = register(client, job_hcl(td="demo:2"))
    fake.wait_for(lambda c: c.evals[out["EvalID"]]["Status"] == "complete", message="eval done")
    ev = client.evaluation(out["EvalID"])
    assert ev["FailedTGAllocs"][GROUP]["NodesEvaluated"] == 0 and ev["BlockedEval"]
    old = client.allocation(a1)  # PopUpdate: the planned stop was taken back, the old task keeps running
    assert old["DesiredStatus"] == "run" and "DesiredDescription" not in old and "NextAllocation" not in old
    assert [a["ID"] for a in live(client)] == [a1]
    client.set_eligibility(n1, True)
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "replacement once the node is eligible")
    assert client.allocation(a2)["PreviousAllocation"] == a1
    assert client.allocation(a1)["DesiredDescription"] == "alloc is being updated due to job update"


# --- drain ------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("server", ["1.1.0", "1.6.5"], indirect=True)
def test_drain_with_no_other_node_stops_the_alloc_and_places_a_fresh_one_later(server):
    fake, client = server
    n1 = add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    client.drain(n1, 3600)
    fake.wait_for(lambda c: c.allocs[a1]["DesiredStatus"] == "stop", message="migrate stop")
    old = client.allocation(a1)
    # scheduler/reconcile.go computeMigrations stops it although nothing can be placed (not undone)
    assert old["DesiredDescription"] == "alloc is being migrated" and old["DesiredTransition"]["Migrate"] is True
    assert old["AllocStates"][-1]["Field"] == 0 and old["AllocStates"][-1]["Value"] == ""
    evals = evaluations(fake, JOB)
    drain_eval = next(e for e in evals if e["TriggeredBy"] == "node-drain")
    fake.wait_for(lambda c: c.evals[drain_eval["ID"]]["Status"] == "complete")
    assert client.evaluation(drain_eval["ID"])["BlockedEval"] and live(client) == []
    if fake.cluster.vt >= (1, 5, 4):  # drain done only when the client finished the alloc (#14348)
        time.sleep(0.3)
        assert node_draining(client.node(n1))
        report_dead(fake, a1)
    fake.wait_for(lambda c: c.nodes[n1]["DrainStrategy"] is None, message="drain complete")
    assert client.node(n1)["LastDrain"]["Status"] == "complete"
    n2 = add_node(fake, "nomad-client-2")
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "placement on the new node")
    new = client.allocation(a2)
    # a fresh placement from the blocked eval: no chain and no TaskHandle, so a new remote task (nomad#10592)
    assert new["NodeID"] == n2 and "PreviousAllocation" not in new and "TaskStates" not in new
    assert "NextAllocation" not in client.allocation(a1)


def test_drain_with_another_node_hands_the_task_handle_over(server):
    fake, client = server
    n1 = add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    add_node(fake, "nomad-client-2")
    client.drain(n1, 3600)
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "replacement")
    new = client.allocation(a2)
    assert new["PreviousAllocation"] == a1 and task_arn(new, TASK) == "arn:task/1"
    assert new["TaskStates"][TASK]["State"] == "pending" and new["TaskStates"][TASK]["Events"] is None


# --- rescheduling -----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("server", ["1.6.5", "1.9.7"], indirect=True)
def test_failed_alloc_is_rescheduled_with_exponential_delay_on_another_node(server):
    fake, client = server
    nodes = {add_node(fake, "nomad-client-1"), add_node(fake, "nomad-client-2")}
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    fake.wait_for(lambda c: c.latest_deployment(JOB)["Status"] == "successful")
    failed_at = time.time_ns()
    report_failed(fake, a1)
    fake.wait_for(lambda c: c.allocs[a1]["FollowupEvalID"], message="follow-up eval")
    followup = client.evaluation(client.allocation(a1)["FollowupEvalID"])
    assert followup["TriggeredBy"] == "alloc-failure" and followup["WaitUntil"]
    assert followup["StatusDescription"] == "created for delayed rescheduling"
    assert any(e["TriggeredBy"] == "alloc-failure" and "WaitUntil" not in e for e in evaluations(fake, JOB))
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "rescheduled replacement")
    old, new = client.allocation(a1), client.allocation(a2)
    assert new["CreateTime"] - failed_at >= 0.45 * NS  # waited the 5 s delay (scaled by 0.1)
    assert (old["DesiredStatus"], old["ClientStatus"]) == ("stop", "failed")
    assert old["DesiredDescription"] == "alloc was rescheduled because it failed" and old["NextAllocation"] == a2
    assert new["PreviousAllocation"] == a1 and new["NodeID"] == (nodes - {old["NodeID"]}).pop()
    assert "TaskStates" not in new  # a failed alloc hands no TaskHandle over: a new remote task
    event, = new["RescheduleTracker"]["Events"]
    assert (event["PrevAllocID"], event["PrevNodeID"], event["Delay"]) == (a1, old["NodeID"], 5 * NS)
    assert isinstance(event["RescheduleTime"], int) and event["RescheduleTime"] >= failed_at
    if fake.cluster.vt >= (1, 9, 0):
        assert new["RescheduleTracker"]["LastReschedule"] == "ok"
        assert old["RescheduleTracker"] == {"Events": None, "LastReschedule": "ok"}
    else:
        assert "LastReschedule" not in new["RescheduleTracker"] and "RescheduleTracker" not in old
    # the second failure doubles the delay (exponential) and keeps the history
    report_running(fake, a2, "arn:task/2")
    report_failed(fake, a2)
    a3 = wait_alloc(fake, lambda a: a["ID"] not in (a1, a2), "second replacement")
    events = client.allocation(a3)["RescheduleTracker"]["Events"]
    assert [e["PrevAllocID"] for e in events] == [a1, a2] and [e["Delay"] for e in events] == [5 * NS, 10 * NS]
    stub = next(s for s in client.job_allocations(JOB) if s["ID"] == a3)
    assert [e["Delay"] for e in stub["RescheduleTracker"]["Events"]] == [5 * NS, 10 * NS]


@pytest.mark.slow
def test_reschedule_attempts_run_out(server):
    fake, client = server
    add_node(fake, "nomad-client-1")
    add_node(fake, "nomad-client-2")
    register(client, job_hcl(reschedule='attempts = 1\n      interval = "1h"\n      delay = "2s"\n'
                                        '      unlimited = false'))
    a1 = running_healthy(fake, client, "arn:task/1")
    fake.wait_for(lambda c: c.latest_deployment(JOB)["Status"] == "successful")
    report_failed(fake, a1)
    a2 = running_healthy(fake, client, "arn:task/2", exclude=(a1,))
    assert client.allocation(a2)["RescheduleTracker"]["Events"][0]["Delay"] == 2 * NS
    report_failed(fake, a2)
    time.sleep(1.0)  # five times the scaled delay: a replacement would exist by now
    assert [a["ID"] for a in client.job_allocations(JOB)] == [a1, a2]
    last = client.allocation(a2)
    assert (last["DesiredStatus"], last["ClientStatus"]) == ("run", "failed") and "FollowupEvalID" not in last
    fake.wait_for(lambda c: c.jobs[JOB]["Status"] == "dead", message="job dead")


def test_failure_before_healthy_in_a_deployment_is_rescheduled_after_the_watcher_allows_it():
    with FakeNomad(timings=Timings.fast(min_healthy_time=30)) as fake:
        client = NomadClient(fake.address, timeout=5)
        add_node(fake, "nomad-client-1")
        add_node(fake, "nomad-client-2")
        register(client, job_hcl())
        a1 = wait_alloc(fake, lambda a: a["ClientStatus"] == "pending", "placement")
        report_running(fake, a1, "arn:task/1")
        report_failed(fake, a1)
        a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "replacement")
        old = client.allocation(a1)
        assert old["DeploymentStatus"]["Healthy"] is False and old["DesiredTransition"]["Reschedule"] is True
        dep = client.job_deployment(JOB)
        assert dep["Status"] == "running" and dep["TaskGroups"][GROUP]["UnhealthyAllocs"] == 1
        assert client.allocation(a2)["DeploymentID"] == dep["ID"]


# --- lost node and agent restart --------------------------------------------------------------------

@pytest.mark.slow
def test_returning_lost_node_keeps_its_alloc_lost_and_accepts_a_1_5_running_update():
    with FakeNomad(version="1.5.6", timings=Timings.fast(min_healthy_time=0.2)) as fake:
        client = NomadClient(fake.address, timeout=5)
        n1 = add_node(fake, "nomad-client-1")
        register(client, job_hcl())
        a1 = running_healthy(fake, client, "arn:task/1")
        n2 = add_node(fake, "nomad-client-2")
        stop_heartbeats(fake, n1)
        a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "replacement of the lost alloc")
        new = client.allocation(a2)
        assert new["NodeID"] == n2 and new["PreviousAllocation"] == a1 and task_arn(new, TASK) == "arn:task/1"
        heartbeat_again(fake, n1)
        fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
        time.sleep(0.3)  # several scheduler ticks
        mine = {a["ID"]: a for a in client.node_allocations(n1)}  # what the restarted client learns
        old = mine[a1]
        assert (old["DesiredStatus"], old["ClientStatus"]) == ("stop", "lost")
        assert old["DesiredDescription"] == "alloc is lost since its node is down"
        assert old["TaskStates"][TASK]["State"] == "running" and task_arn(old, TASK) == "arn:task/1"
        assert old["AllocStates"][-1]["Value"] == "lost"
        # Nomad 1.1-1.5: the restarted client's own "running" update lands first; the server takes it as
        # sent (client-authoritative), so the alloc is no longer `lost` and nothing says migrate: the
        # client's kill is then a normal stop, not a DETACH.
        report_running(fake, a1, "arn:task/1")
        old = client.allocation(a1)
        assert (old["DesiredStatus"], old["ClientStatus"]) == ("stop", "running")
        assert "DesiredTransition" not in old  # Migrate never set for a lost alloc
        time.sleep(0.3)
        assert [a["ID"] for a in live(client)] == [a2]  # and the scheduler places nothing new


@pytest.mark.slow
@pytest.mark.parametrize("server", ["1.6.5", "1.9.7"], indirect=True)
def test_reschedule_with_no_node_stops_the_alloc_and_1_9_retries_it_later(server):
    fake, client = server
    n1 = add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    fake.wait_for(lambda c: c.latest_deployment(JOB)["Status"] == "successful")
    client.set_eligibility(n1, False)
    report_failed(fake, a1)
    fake.wait_for(lambda c: c.allocs[a1]["DesiredStatus"] == "stop", message="reschedule attempted")
    old = client.allocation(a1)
    assert old["DesiredDescription"] == "alloc was rescheduled because it failed" and "NextAllocation" not in old
    blocked = [e for e in evaluations(fake, JOB) if e["Status"] == "blocked"]
    assert len(blocked) == 1 and blocked[0]["TriggeredBy"] == "queued-allocs"
    if fake.cluster.vt >= (1, 9, 0):
        assert old["RescheduleTracker"]["LastReschedule"] == "no placement"
    client.set_eligibility(n1, True)
    a2 = wait_alloc(fake, lambda a: a["ID"] != a1, "placement once the node is eligible")
    new = client.allocation(a2)
    if fake.cluster.vt >= (1, 9, 0):  # the failed reschedule is retried: a chained replacement
        assert new["PreviousAllocation"] == a1 and new["RescheduleTracker"]["Events"][0]["PrevAllocID"] == a1
        assert client.allocation(a1)["RescheduleTracker"]["LastReschedule"] == "ok"
    else:  # before 1.9 the name is simply placed again: no chain, no tracker
        assert "PreviousAllocation" not in new and "RescheduleTracker" not in new
    assert "TaskStates" not in new


@pytest.mark.slow
def test_ecs_task_ending_on_its_own_is_rescheduled_through_the_real_client_and_plugin(nomad_cluster, ecs_demo, aws):
    """The whole chain: the plugin's WaitTask returns, the client's restart policy (attempts 0, mode fail)
    fails the alloc, the server reschedules it after the group's 5 s delay (scaled) to the other node, where a
    new ECS task starts (no handle handed over)."""
    fake = nomad_cluster
    client = NomadClient(fake.address, timeout=5)
    client.register_job(client.parse_job(ecs_demo.job_hcl(restarts=False)))
    a1 = fake.wait_for(lambda c: next((a["ID"] for a in c.allocs.values()
                                       if (a.get("DeploymentStatus") or {}).get("Healthy")), None),
                       timeout=30, message="a healthy alloc")
    arn = task_arn(client.allocation(a1), TASK)
    ecs = aws.client("ecs")
    ecs.stop_task(cluster=ecs_demo.cluster, task=arn, reason="stopped from the console")
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], timeout=30, message="rescheduled")
    fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running", timeout=30, message="replacement running")
    old, new = client.allocation(a1), client.allocation(a2)
    assert (old["ClientStatus"], old["DesiredDescription"]) == ("failed", "alloc was rescheduled because it failed")
    assert [e["Type"] for e in old["TaskStates"][TASK]["Events"]][-2:] == ["Terminated", "Not Restarting"]
    assert new["NodeID"] != old["NodeID"] and new["RescheduleTracker"]["Events"][0]["PrevAllocID"] == a1
    new_arn = task_arn(new, TASK)
    assert new_arn and new_arn != arn
    tasks = {t["taskArn"]: t for t in ecs.describe_tasks(cluster=ecs_demo.cluster, tasks=[arn, new_arn])["tasks"]}
    assert tasks[arn]["lastStatus"] == "STOPPED" and tasks[new_arn]["lastStatus"] == "RUNNING"


@pytest.mark.slow
def test_drain_of_the_only_node_detaches_and_a_later_node_starts_a_second_ecs_task(fake_nomad, ecs_demo, aws):
    """Nomad's nasty case (nomad#10592) through the real client and plugin: the migrate stop is applied with
    nowhere to go, the client DETACHes (the ECS task keeps running, owned by no allocation), and the
    replacement placed when a node appears carries no handle, so it starts a second ECS task."""
    fake = fake_nomad
    client = NomadClient(fake.address, timeout=5)
    n1 = fake.add_node("nomad-client-1")
    fake.wait_for(lambda c: c.nodes[n1]["Status"] == "ready", timeout=30)
    client.register_job(client.parse_job(ecs_demo.job_hcl()))
    a1 = fake.wait_for(lambda c: next((a["ID"] for a in c.allocs.values()
                                       if (a.get("DeploymentStatus") or {}).get("Healthy")), None),
                       timeout=30, message="a healthy alloc")
    arn = task_arn(client.allocation(a1), TASK)
    client.drain(n1, 3600)
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete", timeout=30, message="detached")
    assert live(client) == [] and client.allocation(a1)["DesiredDescription"] == "alloc is being migrated"
    n2 = fake.add_node("nomad-client-2")
    a2 = fake.wait_for(lambda c: next((a["ID"] for a in c.job_allocs(JOB_ID) if a["ID"] != a1
                                       and a["ClientStatus"] == "running"), None), timeout=30, message="placed")
    new = client.allocation(a2)
    assert new["NodeID"] == n2 and "PreviousAllocation" not in new
    new_arn = task_arn(new, TASK)
    assert new_arn and new_arn != arn
    tasks = aws.client("ecs").describe_tasks(cluster=ecs_demo.cluster, tasks=[arn, new_arn])["tasks"]
    assert {t["taskArn"]: t["lastStatus"] for t in tasks} == {arn: "RUNNING", new_arn: "RUNNING"}  # one orphaned


def test_node_dying_while_its_alloc_is_being_drained_makes_the_alloc_lost(server):
    fake, client = server
    n1 = add_node(fake, "nomad-client-1")
    register(client, job_hcl())
    a1 = running_healthy(fake, client, "arn:task/1")
    add_node(fake, "nomad-client-2")
    client.drain(n1, 3600)
    fake.wait_for(lambda c: c.allocs[a1]["DesiredStatus"] == "stop", message="migrate stop")
    assert client.allocation(a1)["ClientStatus"] == "running"  # the client has not detached yet
    stop_heartbeats(fake, n1)
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "lost", message="lost")
    old = client.allocation(a1)
    assert old["DesiredDescription"] == "alloc is lost since its node is down"
    assert old["DesiredTransition"]["Migrate"] is True and old["AllocStates"][-1]["Value"] == "lost"
    fake.wait_for(lambda c: c.nodes[n1]["DrainStrategy"] is None, message="drain complete")
