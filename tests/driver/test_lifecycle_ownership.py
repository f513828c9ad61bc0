"""The ownership rule, through real plugin processes against moto, in the call sequences Nomad's client sends
(docs/nomad-notes.md, "Agent restart"): an allocation that handed its ECS task over never stops it.

Each test checks what the moto server holds (the task's status and its `nomad:owner` tag), and each check
here fails against a plugin whose stale restore or returning client stops the task.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import grpc
import pytest

from driver.handle import FORMER_OWNERS_TAG, OWNER_TAG, owner_digest
from driver.pb import driver_pb2
from driver.state import DriverState
from tests.support import faultproxy
from tests.support.aws import AwsHelper
from tests.support.plugin_calls import (
    ALLOC_A,
    ALLOC_B,
    TASK,
    FifoReader,
    arn_of,
    body,
    inspect,
    json_v1_state,
    launch,
    recover,
    reference_state,
    stop,
    task_id,
    wait_req,
)

ALLOC_C = "cccccccc-1111-2222-3333-444444444444"


def tags_of(world, arn: str, region_client=None) -> dict:
    ecs = region_client or world.ecs
    return {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn)["tags"]}


def destroy(host, tid, force=True):
    host.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=tid, force=force), timeout=20)


def assert_still_running_for(world, arn, waiter, seconds=0.8):
    """Several poll cycles (200 ms) later the ECS task still runs and the owner's WaitTask is still open."""
    time.sleep(seconds)
    assert world.describe(arn)["lastStatus"] == "RUNNING", "a non-owner stopped the ECS task"
    assert not waiter.done(), f"the owner's WaitTask returned: {waiter.result()}"


@pytest.mark.slow
def test_stale_restore_after_a_drain_leaves_the_replacements_task_alone(world, config, plugin_host):
    # A: StartTask, then the drain's StopTask(DETACH), WaitTask, DestroyTask(force) (task_runner.go handleKill).
    a = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = a.start_task(id1, ALLOC_A, TASK, body(world)).handle
    arn = arn_of(handle)
    started_tags = tags_of(world, arn)
    waiter_a = a.driver.WaitTask.future(wait_req(id1))
    stop(a, id1, signal="DETACH")
    assert waiter_a.result(timeout=10).result.exit_code == 0
    destroy(a, id1)
    a.shutdown()  # the client's agent stops (its plugin goes with it)

    # B: the replacement recovers the propagated handle under its own task id (remotetask_hook.go).
    b = launch(plugin_host, config)
    id2 = recover(b, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)
    waiter_b = b.driver.WaitTask.future(wait_req(id2))
    handed_over_tags = tags_of(world, arn)

    # A': A's client restarts and restores its dead allocation: RecoverTask(old id, old handle), then
    # DestroyTask(old id, force) (task_runner.go Restore, Run -> clearDriverHandle).
    a2 = launch(plugin_host, config)
    assert recover(a2, handle) == id1
    bystander = inspect(a2, id1).driver.attributes
    destroy(a2, id1)
    assert_still_running_for(world, arn, waiter_b)
    assert inspect(b, id2).driver.attributes["last_status"] == "RUNNING"
    assert started_tags[OWNER_TAG] == id1
    assert handed_over_tags[OWNER_TAG] == id2 and handed_over_tags[FORMER_OWNERS_TAG] == owner_digest(id1)
    assert bystander["owner"] == "false" and bystander["owned_by"] == id2
    assert tags_of(world, arn)[OWNER_TAG] == id2 and inspect(b, id2).driver.attributes["owner"] == "true"

    # The owner's own normal stop (job stop) still stops it.
    stop(b, id2, signal="SIGINT")
    assert waiter_b.result(timeout=10).result.exit_code == 0
    stopped = world.describe(arn)
    assert stopped["lastStatus"] == "STOPPED" and ALLOC_B in stopped["stoppedReason"]
    assert len(world.all_tasks()) == 1


@pytest.mark.slow
def test_lost_node_then_the_returning_client_stops_normally_and_one_process_serves_both(world, config, plugin_host):
    """kill -9 of A's client; B recovers; A's client comes back (Nomad 1.1-1.5: its alloc still "running"
    locally, so RecoverTask + WaitTask, then a *normal* StopTask when the server's stop arrives). One plugin
    process serves both B and A' here."""
    a = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = a.start_task(id1, ALLOC_A, TASK, body(world)).handle
    arn = arn_of(handle)
    a.kill()

    p = launch(plugin_host, config)
    id2 = recover(p, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)
    waiter_b = p.driver.WaitTask.future(wait_req(id2))

    recover(p, handle)  # A' in the same process
    waiter_a = p.driver.WaitTask.future(wait_req(id1))
    time.sleep(0.6)
    assert not waiter_a.done(), "a bystander's WaitTask must not end while the ECS task runs (no false restart)"
    stop(p, id1, signal="SIGINT")  # the returning lost client's normal kill
    res = waiter_a.result(timeout=10)
    assert (res.result.exit_code, res.err) == (0, "")
    detached = inspect(p, id1).driver.attributes["detached"]
    destroy(p, id1)
    assert_still_running_for(world, arn, waiter_b)
    assert detached == "true" and tags_of(world, arn)[OWNER_TAG] == id2

    # A second stale restore of A (the lost-node scenario run twice), then a forced destroy.
    recover(p, handle)
    destroy(p, id1)
    assert_still_running_for(world, arn, waiter_b, seconds=0.4)

    # A second hand-over, B -> C (still the same process: B is still tracked when C recovers, as after an
    # `alloc stop` that lands on the same client), then B's stale restore: neither A nor B may stop it.
    id3 = recover(p, handle, new_id=task_id(ALLOC_C), new_alloc=ALLOC_C)
    waiter_c = p.driver.WaitTask.future(wait_req(id3))
    tags = tags_of(world, arn)
    assert tags[OWNER_TAG] == id3 and set(tags[FORMER_OWNERS_TAG].split()) == {owner_digest(id1), owner_digest(id2)}
    stop(p, id2, signal="SIGINT")  # B's normal stop after the hand-over: detaches, does not stop
    assert waiter_b.result(timeout=10).result.exit_code == 0
    destroy(p, id2)
    recover(p, handle, new_id=id2, new_alloc=ALLOC_B)  # B's client restarts and restores its dead alloc
    assert inspect(p, id2).driver.attributes["owner"] == "false"
    destroy(p, id2)
    assert_still_running_for(world, arn, waiter_c)
    stop(p, id3)
    assert waiter_c.result(timeout=10).result.exit_code == 0
    assert world.describe(arn)["lastStatus"] == "STOPPED"


@pytest.mark.slow
def test_reattached_agent_restores_a_task_its_plugin_still_tracks(world, config, plugin_host):
    """A lost node whose agent died but whose plugin lived on (Nomad reattaches to it): the plugin still
    tracks id1 as its owner when B takes the task over elsewhere; the restored agent's RecoverTask(id1)
    and forced DestroyTask(id1) must not stop B's task."""
    a = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = a.start_task(id1, ALLOC_A, TASK, body(world)).handle
    arn = arn_of(handle)
    b = launch(plugin_host, config)
    id2 = recover(b, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)
    waiter_b = b.driver.WaitTask.future(wait_req(id2))

    recover(a, handle)  # the same process, the same id: already tracked
    attrs = inspect(a, id1).driver.attributes
    destroy(a, id1)
    assert_still_running_for(world, arn, waiter_b)
    assert (attrs["owner"], attrs["owned_by"]) == ("false", id2)


@pytest.mark.slow
def test_owner_restart_keeps_ownership_and_its_stop_still_stops(world, config, plugin_host):
    """The owner's own agent restart (RecoverTask with its own id) stays the owner."""
    a = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = a.start_task(id1, ALLOC_A, TASK, body(world)).handle
    a.kill()
    a2 = launch(plugin_host, config)
    recover(a2, handle)
    assert inspect(a2, id1).driver.attributes["owner"] == "true"
    assert FORMER_OWNERS_TAG not in tags_of(world, arn_of(handle))
    stop(a2, id1)
    assert world.describe(arn_of(handle))["lastStatus"] == "STOPPED"


@pytest.mark.slow
def test_unreadable_tags_never_stop_and_a_hand_over_is_recorded_once_ecs_answers(world, config, plugin_host):
    """ECS unreachable: a stale restore's stop fails (Nomad retries) and its forced destroy leaves the task
    running; a hand-over recovered during the outage claims the task once ECS answers again."""
    a = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = a.start_task(id1, ALLOC_A, TASK, body(world)).handle
    arn = arn_of(handle)
    id2 = recover(a, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)  # hand-over, same process
    waiter_b = a.driver.WaitTask.future(wait_req(id2))

    with faultproxy.FaultProxy(world.aws.url) as proxy:
        p = launch(plugin_host, dict(config, endpoint=proxy.url))
        proxy.fault("refuse")
        recover(p, handle)  # A' while ECS is unreachable: accepted, ownership unknown
        assert inspect(p, id1).driver.attributes["owner"] == "unknown"
        with pytest.raises(grpc.RpcError) as err:
            stop(p, id1, timeout_s=2)
        assert "was not stopped" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            destroy(p, id1)
        assert "left running" in err.value.details()
        with pytest.raises(grpc.RpcError):
            inspect(p, id1)  # forgotten

        id3 = recover(p, handle, new_id=task_id(ALLOC_C), new_alloc=ALLOC_C)  # a hand-over during the outage
        assert inspect(p, id3).driver.attributes["owner"] == "unknown"
        assert tags_of(world, arn)[OWNER_TAG] == id2
        proxy.fault(None)
        deadline = time.monotonic() + 15
        while tags_of(world, arn)[OWNER_TAG] != id3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tags_of(world, arn)[OWNER_TAG] == id3
        assert inspect(p, id3).driver.attributes["owner"] == "true"
        assert world.describe(arn)["lastStatus"] == "RUNNING"
        stop(a, id2)  # B lost the task to C meanwhile: its normal stop detaches
        assert waiter_b.result(timeout=10).result.exit_code == 0
        assert world.describe(arn)["lastStatus"] == "RUNNING"
        stop(p, id3)
        assert world.describe(arn)["lastStatus"] == "STOPPED"


def test_failed_recovery_then_forced_destroy_touches_nothing(world, config, plugin_host):
    """RecoverTask fails (a corrupt handle) -> Nomad's forced DestroyTask of that id stops nothing."""
    a = launch(plugin_host, config)
    handle = a.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world)).handle
    bad = driver_pb2.TaskHandle(version=1, config=driver_pb2.TaskConfig(id=task_id(ALLOC_B), alloc_id=ALLOC_B),
                                driver_state=handle.driver_state[:-7])
    with pytest.raises(grpc.RpcError) as err:
        a.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=bad), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    destroy(a, task_id(ALLOC_B))
    assert world.describe(arn_of(handle))["lastStatus"] == "RUNNING"
    assert tags_of(world, arn_of(handle))[OWNER_TAG] == task_id(ALLOC_A)


def _region_world(world, region, count):
    """A cluster with `count` running tasks in another region of the same moto server."""
    other = AwsHelper(world.aws.url, region=region)
    ecs, ec2 = other.client("ecs"), other.client("ec2")
    ecs.create_cluster(clusterName=world.cluster)
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/24")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"g-{time.monotonic_ns()}", Description="d", VpcId=vpc)["GroupId"]
    ecs.register_task_definition(family="west", networkMode="awsvpc", requiresCompatibilities=["FARGATE"],
                                 cpu="256", memory="512", containerDefinitions=[
                                     {"name": "web", "image": "httpd:2.4", "memory": 128, "essential": True}])
    arns = [ecs.run_task(cluster=world.cluster, taskDefinition="west", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}})["tasks"][0]["taskArn"]
        for _ in range(count)]
    return ecs, arns


@pytest.mark.slow
def test_recover_uses_the_region_in_driver_state(world, config, plugin_host):
    ecs_west, (arn_v1, arn_v2) = _region_world(world, "us-west-2", 2)
    states = [json_v1_state(arn_v1, world.cluster, "us-west-2"),
              DriverState(cluster=world.cluster, region="us-west-2", task_arn=arn_v2,
                          started_at=datetime.now(timezone.utc)).encode()]
    host = launch(plugin_host, config)  # configured for us-east-1
    running = []
    for n, (state, arn) in enumerate(zip(states, (arn_v1, arn_v2)), start=1):
        handle = driver_pb2.TaskHandle(version=1, config=driver_pb2.TaskConfig(id=task_id(ALLOC_A, n)),
                                       driver_state=state)
        tid = recover(host, handle, new_id=task_id(ALLOC_B, n), new_alloc=ALLOC_B)
        running.append((tid, arn, host.driver.WaitTask.future(wait_req(tid))))
    time.sleep(1.0)  # more polls than the monitor's MISSING confirmations
    for tid, arn, waiter in running:
        assert not waiter.done(), f"WaitTask returned: {waiter.result()}"
        ins = inspect(host, tid)
        assert ins.driver.attributes["last_status"] == "RUNNING" and ins.driver.attributes["region"] == "us-west-2"
        assert tags_of(world, arn, ecs_west)[OWNER_TAG] == tid  # claimed in its own region
        stop(host, tid)
        assert waiter.result(timeout=10).result.exit_code == 0
        desc = ecs_west.describe_tasks(cluster=world.cluster, tasks=[arn])["tasks"][0]
        assert desc["lastStatus"] == "STOPPED" and desc["stoppedReason"].startswith("Stopped by Nomad")


@pytest.mark.slow
def test_all_three_driver_state_forms_are_recovered_and_adopted(world, config, plugin_host):
    """Our msgpack state, our earlier JSON state and the Go reference driver's state (a client switching
    drivers): each recovers under a new task id, adopts the ECS task (owner tag) and its stop stops it."""
    host = launch(plugin_host, config)
    started = host.start_task(task_id(ALLOC_A, 1), ALLOC_A, TASK, body(world)).handle
    json_arn, ref_arn = world.run_direct(2)
    when = datetime(2026, 11, 30, 9, 30, 15, 250000, tzinfo=timezone.utc)
    forms = {
        "msgpack-v2": (started.driver_state, arn_of(started)),
        "json-v1": (json_v1_state(json_arn, world.cluster, None, ALLOC_A, TASK), json_arn),
        "reference": (reference_state(ref_arn, when, task_id(ALLOC_A, 3), ALLOC_A), ref_arn),
    }
    waiters = {}
    for n, (form, (state, arn)) in enumerate(forms.items(), start=1):
        handle = driver_pb2.TaskHandle(version=1, config=driver_pb2.TaskConfig(id=task_id(ALLOC_A, n)),
                                       driver_state=state)
        tid = recover(host, handle, new_id=task_id(ALLOC_B, n), new_alloc=ALLOC_B)
        ins = inspect(host, tid)
        assert ins.driver.attributes["arn"] == arn and ins.driver.attributes["cluster"] == world.cluster, form
        waiters[form] = (tid, arn, host.driver.WaitTask.future(wait_req(tid)))
    assert inspect(host, task_id(ALLOC_B, 3)).task.started_at.ToDatetime(timezone.utc) == when
    time.sleep(0.8)
    for form, (tid, arn, waiter) in waiters.items():
        assert not waiter.done(), (form, waiter.result())
        assert inspect(host, tid).driver.attributes["last_status"] == "RUNNING", form
        assert tags_of(world, arn)[OWNER_TAG] == tid, form
        stop(host, tid)
        assert waiter.result(timeout=10).result.exit_code == 0, form
        assert world.describe(arn)["lastStatus"] == "STOPPED", form
    assert len(world.tasks("RUNNING")) == 0 and len(world.all_tasks()) == 3  # no second task started


@pytest.mark.slow
def test_recover_with_a_stdout_fifo_nobody_reads_does_not_block(world, config, plugin_host, tmp_path):
    """A restored dead task has no logmon: its stdout FIFO exists with no reader. RecoverTask must answer,
    and output reaches the FIFO once a reader opens it."""
    host = launch(plugin_host, config)
    id1 = task_id(ALLOC_A)
    handle = host.start_task(id1, ALLOC_A, TASK, body(world)).handle
    stop(host, id1, signal="DETACH")
    destroy(host, id1)
    path = str(tmp_path / "restored.stdout.fifo")
    os.mkfifo(path)  # no reader
    t0 = time.monotonic()
    recover(host, handle, stdout_path=path)  # 10 s deadline: a blocking open would time out
    assert time.monotonic() - t0 < 5
    waiter = host.driver.WaitTask.future(wait_req(id1))
    time.sleep(0.5)
    assert not waiter.done() and inspect(host, id1).driver.attributes["last_status"] == "RUNNING"
    reader = FifoReader(path, create=False)  # logmon arrives late: the plugin opens the FIFO lazily
    try:
        reader.wait_for(f"client is remotely monitoring ECS task: {arn_of(handle)}")
    finally:
        reader.close()
    stop(host, id1)
    assert waiter.result(timeout=10).result.exit_code == 0
