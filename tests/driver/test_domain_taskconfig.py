"""Task config decoding/validation and the RunTask parameters built from it (no AWS involved)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driver.taskconfig import (
    EcsTaskConfig,
    TaskConfigError,
    decode_task_config,
    run_task_params,
    started_by,
    validate_task_config,
)

NET = {"aws_vpc_configuration": {"subnets": ["subnet-1"], "security_groups": ["sg-1"], "assign_public_ip": None}}


def cfg(**task) -> dict:
    base = {"task_definition": "demo:1", "launch_type": "FARGATE", "platform_version": None, "propagate_tags": None,
            "enable_execute_command": None, "tags": None, "network_configuration": NET}
    base.update(task)
    return {"task": base}


@pytest.mark.parametrize("launch", ["fargate", "FARGATE", "Ec2", "external"])
def test_launch_type_any_case(launch):
    assert validate_task_config(cfg(launch_type=launch)).launch_type == launch.upper()


@pytest.mark.parametrize("task,field,fragment", [
    ({"task_definition": None}, "task.task_definition", "required"),
    ({"task_definition": "  "}, "task.task_definition", "required"),
    ({"task_definition": 5}, "task.task_definition", "must be a string"),
    ({"launch_type": "SPOT"}, "task.launch_type", "FARGATE, EC2, EXTERNAL"),
    ({"network_configuration": {"aws_vpc_configuration": {"subnets": ["s"], "security_groups": ["g"],
                                                          "assign_public_ip": "yes"}}},
     "task.network_configuration.aws_vpc_configuration.assign_public_ip", "ENABLED, DISABLED"),
    ({"network_configuration": None}, "task.network_configuration.aws_vpc_configuration.subnets", "FARGATE"),
    ({"network_configuration": {"aws_vpc_configuration": {"subnets": ["s"], "security_groups": []}}},
     "task.network_configuration.aws_vpc_configuration.security_groups", "required"),
    ({"launch_type": "EC2", "network_configuration": {"aws_vpc_configuration": {"subnets": [], "security_groups":
                                                                                ["sg-1"]}}},
     "task.network_configuration.aws_vpc_configuration.subnets", "awsvpc"),
    ({"tags": {"nomad:job": "x"}}, "task.tags.nomad:job", "reserved"),
    ({"tags": {"team": 3}}, "task.tags.team", "string"),
    ({"propagate_tags": "ALL"}, "task.propagate_tags", "TASK_DEFINITION, SERVICE, NONE"),
    ({"enable_execute_command": "yes"}, "task.enable_execute_command", "true or false"),
    ({"platform_version": "1.4.0", "launch_type": "EC2"}, "task.platform_version", "FARGATE"),
    ({"surprise": 1}, "task.surprise", "unknown key"),
])
def test_errors_name_the_field_and_allowed_values(task, field, fragment):
    with pytest.raises(TaskConfigError) as err:
        validate_task_config(cfg(**task))
    assert err.value.field == field and fragment in str(err.value) and field in str(err.value)


def test_missing_task_block_and_bad_bytes():
    for data, fragment in [(b"", "no driver config"), (b"\xc1", "not valid msgpack"),
                           (msgpack.packb({"task": None}), "required block"), (msgpack.packb([1]), "must be a block")]:
        with pytest.raises(TaskConfigError, match=fragment):
            decode_task_config(data)


def test_ec2_without_network_needs_no_subnets():
    c = validate_task_config(cfg(launch_type="ec2", network_configuration=None))
    assert not c.awsvpc and "networkConfiguration" not in run_task_params(
        c, alloc_id="a", job="j", group="g", task="t", client_token="tok")


def test_run_task_params():
    c = validate_task_config(cfg(tags={"team": "web"}, platform_version="LATEST", propagate_tags="task_definition",
                                 enable_execute_command=False,
                                 network_configuration={"aws_vpc_configuration": {
                                     "subnets": ["subnet-1"], "security_groups": ["sg-1"],
                                     "assign_public_ip": "enabled"}}))
    alloc = "0123456789abcdef0123456789abcdef0123"  # 36 characters
    p = run_task_params(c, alloc_id=alloc, job="j", group="g", task="t", client_token="tok")
    assert p["startedBy"] == "nomad-" + alloc[:30] and len(p["startedBy"]) == 36
    assert {t["key"]: t["value"] for t in p["tags"]} == {"team": "web", "nomad:alloc_id": alloc, "nomad:job": "j",
                                                        "nomad:group": "g", "nomad:task": "t"}
    assert p["count"] == 1 and p["clientToken"] == "tok" and p["taskDefinition"] == "demo:1"
    assert p["launchType"] == "FARGATE" and p["platformVersion"] == "LATEST"
    assert p["propagateTags"] == "TASK_DEFINITION" and p["enableExecuteCommand"] is False
    assert p["networkConfiguration"] == {"awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"],
                                                                 "assignPublicIp": "ENABLED"}}


def test_started_by_is_short_for_any_alloc_id():
    assert started_by("x" * 100) == "nomad-" + "x" * 30 and started_by("") == "nomad-"


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | st.binary(max_size=5)
_any = st.recursive(_scalars,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
_task_keys = st.sampled_from(["task_definition", "launch_type", "platform_version", "propagate_tags",
                              "enable_execute_command", "tags", "network_configuration"])


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.one_of(_any, st.fixed_dictionaries({"task": st.dictionaries(_task_keys, _any, max_size=7)})))
def test_fuzz_only_task_config_errors(value):
    """Whatever the decoded value, validation either gives a config or a TaskConfigError naming a field."""
    try:
        c = validate_task_config(value)
    except TaskConfigError as err:
        assert err.field and str(err).startswith("invalid task config: ")
        return
    assert isinstance(c, EcsTaskConfig) and c.task_definition
    params = run_task_params(c, alloc_id="a", job="j", group="g", task="t", client_token="tok")
    assert params["count"] == 1 and len(params["tags"]) <= 50
