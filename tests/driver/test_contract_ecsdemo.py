"""The seams between ecsdemo and its plugin, end to end with real parts: the Nomad files `ecsdemo render`
writes are accepted by the real plugin process (plugin config through the agent-start sequence, the job's
task config through StartTask), and what the plugin leaves behind (driver state, ECS tags, stop reason) is
what ecsdemo's status and scenario checks read, also across a hand-over."""

from __future__ import annotations

import base64
import uuid

import hcl2
import pytest
from google.protobuf.duration_pb2 import Duration

from driver.handle import OWNER_TAG
from driver.pb import driver_pb2
from ecsdemo import aws as demo_aws
from ecsdemo import render
from ecsdemo.config import GROUP_NAME, JOB_ID, PLUGIN_NAME, TASK_NAME, DemoConfig
from ecsdemo.nomad import decode_driver_state, task_arn
from ecsdemo.outputs import Outputs
from ecsdemo.scenarios import checks

pytestmark = pytest.mark.slow

OPTS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def _load(path):
    with open(path) as fh:
        return hcl2.load(fh, serialization_options=OPTS)


def test_rendered_files_drive_the_real_plugin_and_ecsdemo_reads_what_it_leaves(tmp_path, world, moto_url,
                                                                                 plugin_host):
    cfg = DemoConfig(state_dir=tmp_path / "state", render_dir=tmp_path / "nomad", local=True, clients=1)
    outputs = Outputs(demo_subnet_id=world.subnet, demo_security_group_id=world.security_group,
                      cluster_name=world.cluster, region="us-east-1", task_definition_family=world.family,
                      task_definition_revision=1,
                      task_definition_arn=f"arn:aws:ecs:us-east-1:123456789012:task-definition/{world.family}:1",
                      endpoint=moto_url)
    render.render_all(cfg, outputs, moto_url)

    # The client config's plugin block, as the agent would hand it to the plugin (three launches).
    client = _load(render.client_config_path(cfg, 1))
    plugin_config = client["plugin"][0][PLUGIN_NAME]["config"][0]
    plugin_config = dict(plugin_config, poll_interval="200ms", fingerprint_interval="200ms")
    started = plugin_host.agent_start(plugin_config)
    host = started.host

    # The job's task config, through StartTask, runs the demo's task definition on the rendered network.
    job = _load(render.job_path(cfg))
    task = job["job"][0][JOB_ID]["group"][0][GROUP_NAME]["task"][0][TASK_NAME]
    alloc_id = str(uuid.uuid4())
    resp = host.start_task(f"{alloc_id}/{TASK_NAME}/0badc0de", alloc_id, TASK_NAME, task["config"][0],
                           job_name=JOB_ID, task_group_name=GROUP_NAME)
    (running,) = world.tasks("RUNNING")
    assert running["taskDefinitionArn"].endswith(f"{world.family}:1")

    # ecsdemo reads the ARN from the handle exactly as Nomad's API shows it (base64 DriverState).
    shown = {"TaskStates": {TASK_NAME: {"TaskHandle": {
        "Version": resp.handle.version, "DriverState": base64.b64encode(resp.handle.driver_state).decode()}}}}
    assert task_arn(shown, TASK_NAME) == running["taskArn"]
    state = decode_driver_state(shown["TaskStates"][TASK_NAME]["TaskHandle"]["DriverState"])
    assert (state["cluster"], state["region"]) == (world.cluster, "us-east-1")
    assert demo_aws.task_owner(running) == alloc_id

    # A hand-over (drain): the replacement recovers the same handle; the server copies the same bytes to it,
    # so ecsdemo finds the one ARN under the new allocation; the ECS task's owner tag names the new task id.
    new_alloc = str(uuid.uuid4())
    new_id = f"{new_alloc}/{TASK_NAME}/0c0ffee0"
    host.driver.RecoverTask(driver_pb2.RecoverTaskRequest(handle=driver_pb2.TaskHandle(
        version=resp.handle.version, driver_state=resp.handle.driver_state,
        config=driver_pb2.TaskConfig(id=new_id, name=TASK_NAME, alloc_id=new_alloc))), timeout=30)
    (running,) = world.tasks("RUNNING")
    assert {t["key"]: t["value"] for t in running["tags"]}[OWNER_TAG] == new_id
    assert task_arn(shown, TASK_NAME) == running["taskArn"]

    # The old allocation's normal stop (a returning lost client) leaves it running ...
    old_id = f"{alloc_id}/{TASK_NAME}/0badc0de"
    host.driver.StopTask(driver_pb2.StopTaskRequest(task_id=old_id, timeout=Duration(seconds=10), signal=""),
                         timeout=30)
    assert world.describe(running["taskArn"])["lastStatus"] == "RUNNING"
    # ... and the owner's stop gives the reason the scenario checks look for, naming the new allocation.
    host.driver.StopTask(driver_pb2.StopTaskRequest(task_id=new_id, timeout=Duration(seconds=10), signal=""),
                         timeout=30)
    stopped = world.describe(running["taskArn"])
    verdict = checks.check_stopped_by_nomad(stopped, running["taskArn"], new_alloc)
    assert verdict.ok and "names allocation" in verdict.detail, verdict.detail
