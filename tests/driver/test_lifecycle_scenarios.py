"""Protocol-level scenarios: the plugin launched as Nomad launches it, driven over gRPC, against moto.

Each test asserts on what the moto server holds afterwards (ECS is the source of truth), not only on
what the plugin answers.
"""

from __future__ import annotations

import time

import msgpack
import pytest
from google.protobuf.duration_pb2 import Duration

from driver.pb import driver_pb2
from tests.support.plugin_calls import (
    ALLOC_A,
    ALLOC_B,
    TASK,
    Events,
    FifoReader,
    arn_of,
    body,
    inspect,
    launch,
    recover,
    stop,
    task_id,
    wait_req,
)


@pytest.mark.slow
def test_normal_life_start_monitor_inspect_stop(world, config, plugin_host, tmp_path):
    host = launch(plugin_host, config)
    events = Events(host)
    fifo = FifoReader(str(tmp_path / "http-server.stdout"))
    tid = task_id(ALLOC_A)
    resp = host.start_task(tid, ALLOC_A, TASK, body(world), stdout_path=fifo.path, job_name="nomad-ecs-demo",
                           task_group_name="ecs-remote-task-demo")
    handle = resp.handle
    assert handle.version == 1 and handle.config.id == tid
    state = msgpack.unpackb(handle.driver_state)
    assert {"v", "cluster", "region", "ARN", "started_at", "task_id"} <= set(state) and state["v"] == 2
    assert state["task_id"] == tid and state["cluster"] == world.cluster
    assert b"secret" not in handle.driver_state.lower() and b"testing" not in handle.driver_state
    arn = state["ARN"]
    fifo.wait_for(f"client is remotely monitoring ECS task: {arn} with status RUNNING")
    fifo.buf = b""
    fifo.wait_for(f"client is remotely monitoring ECS task: {arn}", timeout=5)  # a heartbeat keeps coming

    ins = inspect(host, tid)
    assert ins.task.id == tid and ins.task.state == driver_pb2.RUNNING
    assert ins.task.HasField("started_at") and ins.task.HasField("completed_at") and ins.task.HasField("result")
    assert ins.driver.attributes["arn"] == arn and ins.driver.attributes["last_status"] == "RUNNING"
    assert ins.driver.attributes["cluster"] == world.cluster
    assert ins.driver.attributes["task_definition"].endswith(f"{world.family}:1")

    stats = host.driver.TaskStats(driver_pb2.TaskStatsRequest(task_id=tid, collection_interval=Duration(nanos=10**8)))
    samples = [next(stats) for _ in range(2)]
    stats.cancel()
    assert all(s.stats.HasField("agg_resource_usage") and s.stats.agg_resource_usage.HasField("cpu")
               and s.stats.HasField("timestamp") for s in samples)

    waiter = host.driver.WaitTask.future(wait_req(tid))
    stop(host, tid, signal="SIGINT")  # job stop: the task's kill_signal
    res = waiter.result(timeout=10)
    assert (res.result.exit_code, res.err) == (0, "")
    host.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=tid, force=True), timeout=10)

    t = world.describe(arn)
    assert t["lastStatus"] == "STOPPED"
    assert t["stoppedReason"].startswith("Stopped by Nomad") and ALLOC_A in t["stoppedReason"]
    assert len(world.all_tasks()) == 1
    tags = {x["key"]: x["value"] for x in world.tasks("STOPPED")[0]["tags"]}
    assert tags["nomad:alloc_id"] == ALLOC_A and tags["nomad:job"] == "nomad-ecs-demo"
    assert "RUNNING -> STOPPED" in fifo.read()
    events.wait_for(lambda m: m.startswith("ECS task stopped: Stopped by Nomad"))
    msgs = events.messages(tid)
    assert msgs[0] == "Started ECS task" and "Stop requested: stopping ECS task" in msgs
    events.close()
    fifo.close()


@pytest.mark.slow
def test_drain_detach_on_a_recover_on_b_keeps_the_one_ecs_task(world, config, plugin_host):
    a = launch(plugin_host, config)
    tid_a = task_id(ALLOC_A)
    handle = a.start_task(tid_a, ALLOC_A, TASK, body(world)).handle
    arn = arn_of(handle)
    waiter = a.driver.WaitTask.future(wait_req(tid_a))
    stop(a, tid_a, signal="DETACH")
    res = waiter.result(timeout=10)
    assert (res.result.exit_code, res.err) == (0, "")
    a.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=tid_a, force=True), timeout=10)

    b = launch(plugin_host, config)
    events = Events(b)
    tid_b = recover(b, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)
    ins = inspect(b, tid_b)
    assert ins.task.state == driver_pb2.RUNNING and ins.driver.attributes["arn"] == arn
    events.wait_for(lambda m: m == "Recovered ECS task")
    time.sleep(0.6)  # a few poll cycles on B
    assert inspect(b, tid_b).driver.attributes["last_status"] == "RUNNING"

    tasks = world.all_tasks()
    assert [t["taskArn"] for t in tasks] == [arn]  # exactly one ECS task, the same one
    assert tasks[0]["lastStatus"] == "RUNNING" and not tasks[0].get("stoppedReason")
    events.close()


@pytest.mark.slow
def test_lost_node_kill_a_recover_on_b_runs_no_new_task(world, config, plugin_host):
    a = launch(plugin_host, config)
    handle = a.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world)).handle
    a.kill()  # kill -9: no StopTask, no Shutdown
    assert not a.alive()

    b = launch(plugin_host, config)
    tid_b = recover(b, handle, new_id=task_id(ALLOC_B), new_alloc=ALLOC_B)
    assert inspect(b, tid_b).driver.attributes["arn"] == arn_of(handle)
    time.sleep(0.6)
    tasks = world.all_tasks()
    assert [t["taskArn"] for t in tasks] == [arn_of(handle)] and tasks[0]["lastStatus"] == "RUNNING"


@pytest.mark.slow
def test_agent_restart_recover_same_id_resumes_monitoring(world, config, plugin_host, tmp_path):
    a = launch(plugin_host, config)
    tid = task_id(ALLOC_A)
    handle = a.start_task(tid, ALLOC_A, TASK, body(world)).handle
    a.shutdown()  # a clean agent shutdown kills the plugin: the ECS task must survive
    assert world.describe(arn_of(handle))["lastStatus"] == "RUNNING"

    b = launch(plugin_host, config)
    fifo = FifoReader(str(tmp_path / "restart.stdout"))
    assert recover(b, handle, stdout_path=fifo.path) == tid
    recover(b, handle, stdout_path=fifo.path)  # the same id twice: a no-op success
    fifo.wait_for(f"client is remotely monitoring ECS task: {arn_of(handle)} with status RUNNING")
    waiter = b.driver.WaitTask.future(wait_req(tid))
    time.sleep(0.5)
    assert not waiter.done()
    world.ecs.stop_task(cluster=world.cluster, task=arn_of(handle), reason="stopped after the restart")
    res = waiter.result(timeout=10)
    assert res.result.exit_code == 1 and "stopped after the restart" in res.err
    assert len(world.all_tasks()) == 1


def test_update_stops_old_revision_and_starts_new(world, config, plugin_host):
    host = launch(plugin_host, config)
    old = host.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world, 1)).handle
    stop(host, old.config.id)
    host.driver.WaitTask(wait_req(old.config.id), timeout=10)
    host.driver.DestroyTask(driver_pb2.DestroyTaskRequest(task_id=old.config.id, force=True), timeout=10)
    new = host.start_task(task_id(ALLOC_B), ALLOC_B, TASK, body(world, 2)).handle

    old_t, new_t = world.describe(arn_of(old)), world.describe(arn_of(new))
    assert old_t["lastStatus"] == "STOPPED" and old_t["stoppedReason"].startswith("Stopped by Nomad")
    assert new_t["lastStatus"] == "RUNNING" and new_t["taskDefinitionArn"].endswith(f"{world.family}:2")
    assert inspect(host, new.config.id).driver.attributes["task_definition"].endswith(":2")
    assert len(world.all_tasks()) == 2


@pytest.mark.slow
def test_task_stopped_outside_nomad_ends_wait_with_ecs_reason(world, config, plugin_host):
    host = launch(plugin_host, config)
    events = Events(host)
    tid = task_id(ALLOC_A)
    handle = host.start_task(tid, ALLOC_A, TASK, body(world)).handle
    waiters = [host.driver.WaitTask.future(wait_req(tid)) for _ in range(2)]
    world.ecs.stop_task(cluster=world.cluster, task=arn_of(handle), reason="Task stopped by the console user")
    for w in waiters:
        res = w.result(timeout=10)
        assert res.result.exit_code == 1 and "Task stopped by the console user" in res.err
    late = host.driver.WaitTask(wait_req(tid), timeout=5)  # returns at once once finished
    assert "console user" in late.err
    events.wait_for(lambda m: "Task stopped by the console user" in m)
    ins = inspect(host, tid)
    assert ins.task.state == driver_pb2.EXITED and ins.task.result.exit_code == 1
    assert ins.task.completed_at.seconds > 0
    stop(host, tid)  # StopTask of an already-stopped task succeeds
    assert world.describe(arn_of(handle))["stoppedReason"] == "Task stopped by the console user"
    events.close()
