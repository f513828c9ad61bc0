"""The simulated client's task runner against real plugin processes and moto (docs/nomad-notes.md): a task
that ends on its own, the restart policy and its exhaustion, StopTask retries, driver health from the
fingerprint, agent restarts that restore dead allocations (RecoverTask + DestroyTask(force)) or fail to
restore a running one, the returning lost client's kill signal by version, and Nomad 1.10's missing
remote tasks. Each asserts on what the plugin processes were asked (the call log) and on ECS (moto)."""

from __future__ import annotations

import pytest
import requests

from ecsdemo.nomad import task_arn
from tests.fakenomad import FakeNomad, PluginRuntime, Timings
from tests.fakenomad.client import api_handle, decode_handle, encode_handle
from tests.fakenomad.plugin_runtime import UNREADABLE_STATE
from tests.support.fake_nomad import JOB, TASK, api, arn_of, ecs_task, events, healthy_alloc, run_job
from tests.support.faultproxy import FaultProxy

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True


def restarting_job(demo, attempts: int = 1) -> str:
    """The demo job with `attempts` restarts allowed (mode fail, 1 s delay, scaled by Timings)."""
    hcl = demo.job_hcl(restarts=False)
    assert "attempts = 0" in hcl
    return hcl.replace("attempts = 0", f'attempts = {attempts}\n      delay    = "1s"')


def stop_outside_nomad(aws, demo, arn: str, reason: str = "stopped from the console") -> None:
    aws.client("ecs").stop_task(cluster=demo.cluster, task=arn, reason=reason)


def task_state(fake, alloc_id: str) -> dict:
    return api(fake, f"/v1/allocation/{alloc_id}")["TaskStates"][TASK]


def local_arn(fake, node_id: str, alloc_id: str) -> str | None:
    """The ECS task ARN in the task handle the node's client saved locally for the allocation."""
    saved = fake.clients[node_id].db.allocs[alloc_id]["tasks"][TASK]["handle"]
    return task_arn({"TaskStates": {TASK: {"TaskHandle": api_handle(decode_handle(saved))}}}, TASK)


def calls(fake, node_id: str, alloc_id: str) -> list[tuple]:
    """(rpc, task id suffix, detail, error) of the node's plugin calls for one allocation."""
    return [(rpc, tid.rsplit("/", 1)[-1], detail, err)
            for rpc, tid, detail, err in fake.runtime.nodes[node_id].call_log(alloc_id)]


@pytest.mark.slow
def test_task_stopped_outside_nomad_is_noticed_and_restarted(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, restarting_job(ecs_demo))
    a1 = healthy_alloc(fake)
    old_arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    stop_outside_nomad(aws, ecs_demo, old_arn)
    fake.wait_for(lambda c: c.allocs[a1]["TaskStates"][TASK]["Restarts"] == 1
                  and c.allocs[a1]["TaskStates"][TASK]["State"] == "running", message="restarted")
    alloc = api(fake, f"/v1/allocation/{a1}")
    assert events(alloc) == ["Received", "Task Setup", "Started", "Terminated", "Restarting", "Started"]
    term = alloc["TaskStates"][TASK]["Events"][3]
    assert term["Details"]["exit_message"] == "ECS task stopped outside Nomad: stopped from the console"
    assert term["Message"] == term["Details"]["exit_message"] and term["ExitCode"] != 0
    assert term["DisplayMessage"].startswith(f"Exit Code: {term['ExitCode']}, Exit Message: ")
    assert alloc["TaskStates"][TASK]["Events"][4]["RestartReason"] == "Restart within policy"
    new_arn = arn_of(alloc)
    assert new_arn != old_arn and alloc["ClientStatus"] == "running"
    assert ecs_task(aws, ecs_demo, new_arn)["lastStatus"] == "RUNNING"
    assert ecs_task(aws, ecs_demo, old_arn)["lastStatus"] == "STOPPED"
    # WaitTask was open from the start; the restart is a new StartTask under a new task id
    log = calls(fake, alloc["NodeID"], a1)
    rpcs = [c[0] for c in log]
    assert rpcs == ["StartTask", "WaitTask", "DestroyTask", "StartTask", "WaitTask"], log
    assert log[0][1] != log[3][1] and log[2][2] == {"force": True}


@pytest.mark.slow
def test_restart_attempts_used_up_fail_the_allocation(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, restarting_job(ecs_demo, attempts=1))
    a1 = healthy_alloc(fake)
    stop_outside_nomad(aws, ecs_demo, arn_of(api(fake, f"/v1/allocation/{a1}")))
    fake.wait_for(lambda c: c.allocs[a1]["TaskStates"][TASK]["Restarts"] == 1
                  and c.allocs[a1]["TaskStates"][TASK]["State"] == "running", message="restarted once")
    stop_outside_nomad(aws, ecs_demo, arn_of(api(fake, f"/v1/allocation/{a1}")))
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "failed", message="alloc failed")
    alloc = api(fake, f"/v1/allocation/{a1}")
    ts = alloc["TaskStates"][TASK]
    assert ts["State"] == "dead" and ts["Failed"] is True and alloc["ClientDescription"] == "Failed tasks"
    last = ts["Events"][-1]
    assert last["Type"] == "Not Restarting" and last["FailsTask"] is True
    assert last["RestartReason"] == 'Exceeded allowed attempts 1 in interval 30m0s and mode is "fail"'
    assert events(alloc)[-2] == "Terminated"


@pytest.mark.slow
def test_a_job_without_restarts_fails_at_the_first_exit(nomad_cluster, ecs_demo, aws):
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl(restarts=False))          # restart { attempts = 0 }
    a1 = healthy_alloc(fake)
    stop_outside_nomad(aws, ecs_demo, arn_of(api(fake, f"/v1/allocation/{a1}")))
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "failed", message="alloc failed")
    ts = task_state(fake, a1)
    assert [e["Type"] for e in ts["Events"]][-2:] == ["Terminated", "Not Restarting"]
    assert ts["Events"][-1]["RestartReason"] == "Policy allows no restarts" and ts["Restarts"] == 0


@pytest.fixture
def proxied(ecs_demo, tmp_path):
    """A fake Nomad with one node whose plugin reaches moto through a fault proxy."""
    proxy = FaultProxy(ecs_demo.endpoint)
    runtime = PluginRuntime(proxy.url, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
    fake = FakeNomad(timings=Timings.fast(), runtime=runtime).start()
    fake.proxy = proxy
    try:
        yield fake
    finally:
        proxy.fault(None)
        fake.stop()
        runtime.close()
        proxy.close()


@pytest.mark.slow
def test_stop_task_is_retried_and_the_alloc_completes_only_when_the_task_is_dead(proxied, ecs_demo, aws):
    fake = proxied
    (n1,) = fake.add_nodes(["nomad-client-1"])
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    fake.proxy.fault("5xx")
    assert requests.delete(f"{fake.address}/v1/job/{JOB}", timeout=5).status_code == 200
    fake.wait_for(lambda c: any(rpc == "StopTask" and err for rpc, _, _, err in calls(fake, n1, a1)),
                  timeout=30, message="a failed StopTask")
    assert fake.cluster.allocs[a1]["ClientStatus"] == "running"     # not complete while the task lives
    fake.proxy.fault(None)
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete", timeout=30, message="complete")
    stops = [c for c in calls(fake, n1, a1) if c[0] == "StopTask"]
    assert len(stops) >= 2 and stops[0][3] and not stops[-1][3], stops
    # kill_timeout = "1m" capped by the client's max_kill_timeout (30 s); a normal stop, not DETACH
    assert all(c[2] == {"signal": "", "timeout": 30.0} for c in stops)
    assert any("failed to kill task (retry in 0.05s)" in m for m in fake.clients[n1].messages)
    assert events(api(fake, f"/v1/allocation/{a1}"))[-3:] == ["Killing", "Terminated", "Killed"]
    assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "STOPPED"


@pytest.mark.slow
def test_driver_health_follows_the_plugins_fingerprint(proxied, ecs_demo):
    fake = proxied
    (n1,) = fake.add_nodes(["nomad-client-1"])
    drv = api(fake, f"/v1/node/{n1}")["Drivers"]["ecs"]
    assert drv["Healthy"] and drv["Attributes"]["driver.ecs.cluster"] == ecs_demo.cluster
    fake.proxy.fault("5xx")
    fake.wait_for(lambda c: not c.nodes[n1]["Drivers"]["ecs"]["Healthy"], timeout=20, message="unhealthy")
    node = api(fake, f"/v1/node/{n1}")
    assert (node["Drivers"]["ecs"]["Detected"]
            and "DescribeClusters failed" in node["Drivers"]["ecs"]["HealthDescription"])
    assert node["Events"][-1]["Subsystem"] == "Driver"
    assert node["Events"][-1]["Message"] == node["Drivers"]["ecs"]["HealthDescription"]
    fake.proxy.fault(None)
    fake.wait_for(lambda c: c.nodes[n1]["Drivers"]["ecs"]["Healthy"], timeout=20, message="healthy again")


@pytest.mark.slow
def test_restarted_client_restores_a_drained_alloc_recover_then_forced_destroy(nomad_cluster, ecs_demo, aws):
    """task_runner.go Restore/Run: the drained (dead) allocation's saved handle is recovered under its OLD task
    id, then destroyed with force. The plugin must not stop the ECS task the replacement owns."""
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    n1 = fake.cluster.allocs[a1]["NodeID"]
    arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    requests.post(f"{fake.address}/v1/node/{n1}/drain", json={"DrainSpec": {"Deadline": -1}}, timeout=5)
    a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
    fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete" and c.allocs[a2]["ClientStatus"] == "running")
    before = calls(fake, n1, a1)
    task_id = before[0][1]
    assert [c[0] for c in before] == ["StartTask", "WaitTask", "StopTask", "DestroyTask"]
    assert before[2][2]["signal"] == "DETACH"
    fake.kill_node(n1)
    fake.restart_node(n1)
    fake.wait_for(lambda c: len(calls(fake, n1, a1)) >= 6, message="the restore's calls")
    restore = calls(fake, n1, a1)[4:]
    assert [(c[0], c[1]) for c in restore] == [("RecoverTask", task_id), ("DestroyTask", task_id)]
    assert restore[1][2] == {"force": True}
    assert api(fake, f"/v1/allocation/{a1}")["ClientStatus"] == "complete"
    # the ownership rule (driver): the replacement's task keeps running
    assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "RUNNING" and arn_of(api(fake, f"/v1/allocation/{a2}")) == arn


@pytest.mark.slow
@pytest.mark.parametrize("version, signal", [("1.4.7", ""), ("1.6.5", "DETACH")])
def test_returning_lost_client_kill_signal_by_version(version, signal, ecs_demo, aws, tmp_path):
    """A restarted client whose alloc the server marked lost: 1.6+ kills it with DETACH; on 1.1-1.5 the
    client's own "running" update reaches the server first, so the kill is a normal stop."""
    runtime = PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
    fake = FakeNomad(version=version, timings=Timings.fast(), runtime=runtime).start()
    try:
        fake.add_nodes(["nomad-client-1", "nomad-client-2"])
        run_job(fake, ecs_demo.job_hcl())
        a1 = healthy_alloc(fake)
        n1 = fake.cluster.allocs[a1]["NodeID"]
        arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
        fake.kill_node(n1)
        a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
        fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running" and c.allocs[a1]["ClientStatus"] == "lost")
        fake.restart_node(n1)
        fake.wait_for(lambda c: c.allocs[a1]["ClientStatus"] == "complete", message="old alloc complete")
        log = calls(fake, n1, a1)
        task_id = log[0][1]
        rest = [(c[0], c[1]) for c in log[2:]]
        assert rest[:2] == [("RecoverTask", task_id), ("WaitTask", task_id)]    # restored under the old id
        stops = [c for c in log if c[0] == "StopTask"]
        assert len(stops) == 1 and stops[0][2]["signal"] == signal
        # either way (the ownership rule) the replacement's ECS task keeps running
        assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "RUNNING"
    finally:
        fake.stop()
        runtime.close()


@pytest.mark.slow
def test_restore_of_a_running_task_that_cannot_be_recovered_destroys_it_and_starts_another(
        nomad_cluster, ecs_demo, aws):
    """task_runner.go restoreHandle: RecoverTask fails for a running task -> DestroyTask(force), a "Failed
    Restoring Task" event, a wait for the servers, then a StartTask: a second ECS task, the first one leaks."""
    fake = nomad_cluster
    run_job(fake, ecs_demo.job_hcl())
    a1 = healthy_alloc(fake)
    n1 = fake.cluster.allocs[a1]["NodeID"]
    old_arn = arn_of(api(fake, f"/v1/allocation/{a1}"))
    fake.cluster.timings.heartbeat_grace = 60   # back before the node is marked down (the plugin relaunches)
    fake.kill_node(n1)
    fake.runtime.nodes.pop(n1).close()      # the host rebooted: the plugin is gone too
    local = fake.clients[n1].db.allocs[a1]["tasks"][TASK]   # and the saved handle is unreadable to this plugin
    handle = decode_handle(local["handle"])
    handle.driver_state = UNREADABLE_STATE
    local["handle"] = encode_handle(handle)
    fake.restart_node(n1)
    fake.wait_for(lambda c: c.allocs[a1]["TaskStates"][TASK]["State"] == "running"
                  and arn_of(c.allocs[a1]) not in (None, old_arn), message="a new task")
    log = calls(fake, n1, a1)
    assert [c[0] for c in log[:4]] == ["RecoverTask", "DestroyTask", "StartTask", "WaitTask"], log
    assert log[0][3] and log[0][1] == log[1][1] == handle.config.id.rsplit("/", 1)[-1] and log[2][1] != log[0][1]
    assert log[1][2] == {"force": True}
    assert events(api(fake, f"/v1/allocation/{a1}"))[-2:] == ["Failed Restoring Task", "Started"]
    assert ecs_task(aws, ecs_demo, old_arn)["lastStatus"] == "RUNNING"   # leaked, as with Nomad
    assert ecs_task(aws, ecs_demo, arn_of(api(fake, f"/v1/allocation/{a1}")))["lastStatus"] == "RUNNING"


@pytest.mark.slow
def test_nomad_1_10_has_no_remote_tasks_a_drain_stops_the_task(ecs_demo, aws, tmp_path):
    """Since 1.10 (PR #24909) nothing sends DETACH and no handle is recovered: a drain stops the ECS task and
    the replacement starts a new one."""
    runtime = PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
    fake = FakeNomad(version="1.10.0", timings=Timings.fast(), runtime=runtime).start()
    try:
        fake.add_nodes(["nomad-client-1", "nomad-client-2"])
        run_job(fake, ecs_demo.job_hcl())
        a1 = healthy_alloc(fake)
        n1 = fake.cluster.allocs[a1]["NodeID"]
        assert arn_of(api(fake, f"/v1/allocation/{a1}")) is None      # no TaskHandle in the API since 1.10
        arn = local_arn(fake, n1, a1)
        requests.post(f"{fake.address}/v1/node/{n1}/drain", json={"DrainSpec": {"Deadline": -1}}, timeout=5)
        a2 = fake.wait_for(lambda c: c.allocs[a1]["NextAllocation"], message="replacement")
        fake.wait_for(lambda c: c.allocs[a2]["ClientStatus"] == "running"
                      and c.allocs[a1]["ClientStatus"] == "complete")
        assert [c[2]["signal"] for c in calls(fake, n1, a1) if c[0] == "StopTask"] == [""]
        n2 = fake.cluster.allocs[a2]["NodeID"]
        assert "RecoverTask" not in [c[0] for c in calls(fake, n2, a2)]
        assert local_arn(fake, n2, a2) not in (None, arn)
        assert ecs_task(aws, ecs_demo, arn)["lastStatus"] == "STOPPED"
    finally:
        fake.stop()
        runtime.close()
