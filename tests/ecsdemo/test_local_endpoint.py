"""THE local endpoint of a state directory: start/reuse/stop/status with real moto server processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import boto3
import psutil
import pytest

from ecsdemo import local, procs
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import RecordingReporter


def _wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.reap(pid)
        if not psutil.pid_exists(pid) or procs.is_zombie(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_start_reuse_status_stop(state):
    rep = RecordingReporter()
    url = local.ensure_local_endpoint(state, rep)
    rec = state.read_json(local.LOCAL_FILE)
    assert rec["url"] == url == f"http://127.0.0.1:{rec['port']}"
    assert rec["log"] == str(state.logs / local.LOG_NAME)
    assert ("step", "Starting the local AWS endpoint (moto server)") in rep.events

    status = local.local_endpoint_status(state)
    assert status["running"] and status["healthy"] and status["pid"] == rec["pid"]

    # Configured like real ECS: a task stays RUNNING however often it is described.
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    ecs.create_cluster(clusterName="c")
    ecs.register_task_definition(family="f", containerDefinitions=[{"name": "x", "image": "i", "memory": 64}])
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/24")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="g", Description="d", VpcId=vpc)["GroupId"]
    arn = ecs.run_task(cluster="c", taskDefinition="f", launchType="FARGATE", networkConfiguration={
        "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}})["tasks"][0]["taskArn"]
    for _ in range(6):
        assert ecs.describe_tasks(cluster="c", tasks=[arn])["tasks"][0]["lastStatus"] == "RUNNING"

    # Starting twice reuses the running one.
    again = RecordingReporter()
    assert local.ensure_local_endpoint(state, again) == url
    assert state.read_json(local.LOCAL_FILE)["pid"] == rec["pid"]
    assert not again.texts("step") and "already running" in again.texts("info")[0]

    assert local.stop_local_endpoint(state) is True
    assert _wait_dead(rec["pid"])
    assert not local.is_healthy(url)
    assert state.read_json(local.LOCAL_FILE) is None
    assert local.local_endpoint_status(state) is None
    assert local.stop_local_endpoint(state) is False          # stopping again is fine


@pytest.mark.slow
def test_dead_endpoint_is_reported_and_replaced(state):
    url = local.ensure_local_endpoint(state, RecordingReporter())
    old = state.read_json(local.LOCAL_FILE)
    os.killpg(old["pid"], signal.SIGKILL)
    assert _wait_dead(old["pid"])
    status = local.local_endpoint_status(state)
    assert status["running"] is False and status["healthy"] is False and status["url"] == url

    new_url = local.ensure_local_endpoint(state, RecordingReporter())
    new = state.read_json(local.LOCAL_FILE)
    assert new["pid"] != old["pid"]
    assert local.is_healthy(new_url)
    assert local.local_endpoint_status(state)["healthy"]


def test_stop_of_a_dead_endpoint_is_fine(state):
    local.ensure_local_endpoint(state, RecordingReporter())
    pid = state.read_json(local.LOCAL_FILE)["pid"]
    os.killpg(pid, signal.SIGKILL)
    assert _wait_dead(pid)
    assert local.stop_local_endpoint(state) is False
    assert state.read_json(local.LOCAL_FILE) is None


def test_a_reused_pid_is_never_signalled(state):
    """A record whose pid now belongs to another program: not ours, so status says not running and stop
    leaves that program alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    moto_argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "1"]
    started = psutil.Process(other.pid).create_time()
    try:
        for identity in ({"create_time": started - 3600, "cmdline": moto_argv},       # another start time
                         {"create_time": started, "cmdline": moto_argv},              # another program
                         {}):                                                          # no identity recorded
            state.write_json(local.LOCAL_FILE, {"pid": other.pid, "port": 1, "url": "http://127.0.0.1:1",
                                                "log": "x", "started_at": "then", **identity})
            status = local.local_endpoint_status(state)
            assert status["running"] is False and status["healthy"] is False
            assert local.stop_local_endpoint(state) is False
            assert other.poll() is None                          # still alive
    finally:
        other.kill()
        other.wait()


def test_corrupt_record_is_a_clear_error(state):
    state.path(local.LOCAL_FILE).write_text('{"pid": "twelve"}')
    with pytest.raises(EcsdemoError, match="local.json is corrupt"):
        local.local_endpoint_status(state)
    state.path(local.LOCAL_FILE).write_text("{not json")
    with pytest.raises(EcsdemoError, match="local.json is corrupt"):
        local.stop_local_endpoint(state)
    state.remove(local.LOCAL_FILE)
