"""Bad input over the wire: fuzzed task configs and odd RPC arguments get clear errors; the plugin keeps serving."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driver.pb import base_pb2, driver_pb2
from tests.support.plugin_calls import ALLOC_A, TASK, body, launch, recoverable, task_id

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def assert_serving(host):
    assert host.alive()
    assert host.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=5).name == "ecs"


def _bodies(world):
    text = st.text(max_size=12)
    vpc = st.fixed_dictionaries({}, optional={
        "subnets": st.sampled_from([[], [world.subnet], [""], ["  "]]),
        "security_groups": st.sampled_from([[], [world.security_group], [""]]),
        "assign_public_ip": st.one_of(st.sampled_from(["ENABLED", "disabled", "Enabled", "maybe"]), text),
    })
    good_vpc = {"subnets": [world.subnet], "security_groups": [world.security_group]}
    task = st.fixed_dictionaries({
        # mostly valid definitions, so that valid configs (which must start) are generated too
        "task_definition": st.sampled_from([f"{world.family}:1", f"{world.family}:2", f"{world.family}:1", "",
                                            "bad name", "x" * 2000, "ünï:1", f"{world.family}:1\x00"]),
        "network_configuration": st.one_of(
            st.just({"aws_vpc_configuration": good_vpc}),
            st.fixed_dictionaries({}, optional={"aws_vpc_configuration": vpc})),
        # FARGATE in any case, or junk (EC2/EXTERNAL are accepted too, but moto cannot place them: see
        # test_domain_taskconfig for their validation)
        "launch_type": st.one_of(st.sampled_from(["FARGATE", "fargate", "Fargate"]), st.text(min_size=1, max_size=8)),
    }, optional={
        "tags": st.dictionaries(st.sampled_from(["team", "nomad:job", "aws:x", "", "k" * 200]), text, max_size=3),
        "platform_version": st.sampled_from(["LATEST", "1.4.0", ""]),
        "propagate_tags": st.one_of(st.sampled_from(["TASK_DEFINITION", "none", "service"]), text),
        "enable_execute_command": st.booleans(),
    })
    return st.one_of(st.just({}), st.fixed_dictionaries({"task": task}))


def test_fuzzed_task_configs_get_clear_errors(world, config, plugin_host):
    host = launch(plugin_host, config)
    outcomes = {"started": 0, "rejected": 0}
    counter = iter(range(10**6))

    @FUZZ
    @given(_bodies(world))
    def check(hcl_body):
        tid = task_id(ALLOC_A, next(counter))
        try:
            resp = host.start_task(tid, ALLOC_A, TASK, hcl_body, timeout=30)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, (err.code(), err.details())
            assert err.details().startswith(("invalid task config: ", "ECS RunTask failed")), err.details()
            assert recoverable(err) is not None
            if err.details().startswith("invalid task config"):
                assert recoverable(err) is False
                assert ": " in err.details()[len("invalid task config: "):]  # names the field, then says why
            outcomes["rejected"] += 1
            return
        assert resp.handle.driver_state and resp.handle.version == 1
        outcomes["started"] += 1

    check()
    print("fuzzed StartTask outcomes:", outcomes)
    assert outcomes["rejected"] > 0 and outcomes["started"] > 0
    assert_serving(host)
    # nothing started that the plugin did not report started
    assert len(world.all_tasks()) == outcomes["started"]


def test_garbage_msgpack_driver_config_is_rejected(world, config, plugin_host):
    host = launch(plugin_host, config)
    counter = iter(range(10**6))

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(blob=st.binary(max_size=64))
    def check(blob):
        req = driver_pb2.StartTaskRequest(task=driver_pb2.TaskConfig(
            id=task_id(ALLOC_A, next(counter)), name=TASK, alloc_id=ALLOC_A, msgpack_driver_config=blob))
        with pytest.raises(grpc.RpcError) as err:
            host.driver.StartTask(req, timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details().startswith("invalid task config: ")

    check()
    assert_serving(host)
    assert world.all_tasks() == []


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details()


def test_odd_rpc_arguments(world, config, plugin_host):
    host = plugin_host()
    d = host.driver
    # before SetConfig: a non-recoverable "disabled" error, not a crash
    with pytest.raises(grpc.RpcError) as err:
        host.start_task(task_id(ALLOC_A), ALLOC_A, TASK, body(world))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "disabled" in err.value.details()
    assert recoverable(err.value) is False
    host.set_config(config)

    code, msg = _code(lambda: d.StartTask(driver_pb2.StartTaskRequest(), timeout=5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "id" in msg
    assert _code(lambda: d.WaitTask(driver_pb2.WaitTaskRequest(), timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: d.InspectTask(driver_pb2.InspectTaskRequest(task_id="nope"), timeout=5))[0] \
        == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: next(d.TaskStats(driver_pb2.TaskStatsRequest(task_id="nope"), timeout=5)))[0] \
        == grpc.StatusCode.NOT_FOUND
    d.StopTask(driver_pb2.StopTaskRequest(task_id="nope", timeout=Duration(seconds=-5), signal="SIGKILL"), timeout=5)
    d.StopTask(driver_pb2.StopTaskRequest(task_id="", signal="DETACH"), timeout=5)
    d.DestroyTask(driver_pb2.DestroyTaskRequest(task_id="nope", force=False), timeout=5)

    code, msg = _code(lambda: d.RecoverTask(driver_pb2.RecoverTaskRequest(), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "task id" in msg
    bad = driver_pb2.TaskHandle(version=1, config=driver_pb2.TaskConfig(id="x/y/1"), driver_state=b"\xff\x00junk")
    code, msg = _code(lambda: d.RecoverTask(driver_pb2.RecoverTaskRequest(handle=bad), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "driver state" in msg
    empty = driver_pb2.TaskHandle(version=1, config=driver_pb2.TaskConfig(id="x/y/2"))
    code, msg = _code(lambda: d.RecoverTask(driver_pb2.RecoverTaskRequest(handle=empty), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no driver state" in msg

    for call in (lambda: d.SignalTask(driver_pb2.SignalTaskRequest(task_id="x", signal="SIGHUP"), timeout=5),
                 lambda: d.ExecTask(driver_pb2.ExecTaskRequest(task_id="x", command=["sh"]), timeout=5),
                 lambda: next(d.ExecTaskStreaming(iter([driver_pb2.ExecTaskStreamingRequest()]), timeout=5))):
        code, msg = _code(call)
        assert code == grpc.StatusCode.UNIMPLEMENTED and "does not support" in msg

    # a zero timeout still stops the task (Nomad's default kill timeout applies)
    tid = task_id(ALLOC_A, 7)
    host.start_task(tid, ALLOC_A, TASK, body(world))
    d.StopTask(driver_pb2.StopTaskRequest(task_id=tid), timeout=15)
    assert d.WaitTask(driver_pb2.WaitTaskRequest(task_id=tid), timeout=5).result.exit_code == 0
    assert world.tasks("STOPPED")[0]["stoppedReason"].startswith("Stopped by Nomad")
    assert_serving(host)
