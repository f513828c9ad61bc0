"""Helpers for the lifecycle tests (imported by test_domain*.py and test_lifecycle*.py; holds no tests).

`make_world(aws)` (and the `world` fixture) creates, in the moto server through boto3, what a demo task
needs: a cluster of its own, a VPC with DNS hostnames, a subnet, a security group and two revisions of
an awsvpc/FARGATE task definition whose containers set memory (moto refuses RunTask otherwise). The
network and task definitions are shared by the tests while the moto server keeps them; each test gets
its own cluster, so counting a cluster's tasks needs no reset of the shared server.
"""

from __future__ import annotations

import os
import select
import time
import uuid
from dataclasses import dataclass

import msgpack
import pytest

CLUSTER = "lifecycle-test"
FAMILY = "lifecycle-demo"


@dataclass
class World:
    aws: object
    cluster: str
    subnet: str
    security_group: str
    family: str

    @property
    def ecs(self):
        return self.aws.client("ecs")

    def task_config(self, revision: int = 1, **task_extra) -> dict:
        """The decoded task config as Nomad's cty encoding shapes it (every schema key present)."""
        task = {
            "task_definition": f"{self.family}:{revision}", "launch_type": "FARGATE",
            "platform_version": None, "propagate_tags": None, "enable_execute_command": None, "tags": None,
            "network_configuration": {"aws_vpc_configuration": {
                "assign_public_ip": "ENABLED", "security_groups": [self.security_group], "subnets": [self.subnet]}},
        }
        task.update(task_extra)
        return {"task": task}

    def task_config_bytes(self, revision: int = 1, **task_extra) -> bytes:
        return msgpack.packb(self.task_config(revision, **task_extra))

    def tasks(self, status: str = "RUNNING") -> list[dict]:
        arns = self.ecs.list_tasks(cluster=self.cluster, desiredStatus=status)["taskArns"]
        if not arns:
            return []
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=arns, include=["TAGS"])["tasks"]

    def all_tasks(self) -> list[dict]:
        return self.tasks("RUNNING") + self.tasks("STOPPED")

    def describe(self, arn: str) -> dict:
        return self.ecs.describe_tasks(cluster=self.cluster, tasks=[arn])["tasks"][0]

    def describe_tags(self, arn: str) -> list[dict]:
        return self.ecs.list_tags_for_resource(resourceArn=arn)["tags"]

    def run_direct(self, count: int = 1) -> list[str]:
        """Start tasks behind Nomad's back (benchmarks, batching tests)."""
        arns = []
        for _ in range(count):
            resp = self.ecs.run_task(cluster=self.cluster, taskDefinition=f"{self.family}:1", launchType="FARGATE",
                                     networkConfiguration={"awsvpcConfiguration": {
                                         "subnets": [self.subnet], "securityGroups": [self.security_group]}})
            arns.append(resp["tasks"][0]["taskArn"])
        return arns


_networks: dict[str, tuple[str, str]] = {}  # moto URL -> (subnet, security group), while moto keeps them


def _network(aws) -> tuple[str, str]:
    """A VPC (DNS hostnames on), subnet, security group and the task definitions, made once per moto state.

    Other tests reset the moto server; the cached IDs are checked and everything is made again then."""
    ec2, ecs = aws.client("ec2"), aws.client("ecs")
    cached = _networks.get(aws.url)
    if cached:
        try:
            ec2.describe_subnets(SubnetIds=[cached[0]])
            ecs.describe_task_definition(taskDefinition=f"{FAMILY}:2")
            return cached
        except Exception:  # wiped by a reset: make it again
            _networks.pop(aws.url, None)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/24")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=f"lifecycle-{uuid.uuid4().hex[:6]}", Description="lifecycle tests",
                                   VpcId=vpc)["GroupId"]
    for text in ("base", "updated"):
        ecs.register_task_definition(
            family=FAMILY, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "web", "image": "httpd:2.4", "memory": 128, "essential": True,
                                   "command": [text]}])
    _networks[aws.url] = (subnet, sg)
    return subnet, sg


def make_world(aws, cluster: str | None = None) -> World:
    """A fresh ECS cluster of its own (so tests need no moto reset) on the shared network."""
    subnet, sg = _network(aws)
    cluster = cluster or f"{CLUSTER}-{uuid.uuid4().hex[:8]}"
    aws.client("ecs").create_cluster(clusterName=cluster)
    return World(aws=aws, cluster=cluster, subnet=subnet, security_group=sg, family=FAMILY)


@pytest.fixture
def world(moto_url, monkeypatch) -> World:
    """A fresh cluster on the session moto server, with dummy credentials and region in the environment
    (the plugin processes inherit them)."""
    from ecsdemo import local
    from tests.conftest import REGION, AwsHelper

    for k, v in local.LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return make_world(AwsHelper(moto_url))


class FifoReader:
    """The read end of a task's stdout FIFO, as Nomad's logmon holds it."""

    def __init__(self, path: str, create: bool = True):
        self.path = path
        if create:
            os.mkfifo(path)
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.buf = b""

    def read(self) -> str:
        while True:
            r, _, _ = select.select([self.fd], [], [], 0)
            if not r:
                break
            chunk = os.read(self.fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf.decode()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.read():
                return self.buf.decode()
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not written to {self.path} within {timeout}s; got:\n{self.read()}")

    def close(self) -> None:
        os.close(self.fd)


# --- driver state in the forms RecoverTask accepts besides its own ----------------------------------

def json_v1_state(arn: str, cluster: str, region: str | None, alloc_id: str = "", task_name: str = "",
                  started_at: str = "2026-11-30T10:00:00.000000Z") -> bytes:
    """Our driver's earlier state: UTF-8 JSON, version 1 (as released before the msgpack state)."""
    import json

    return json.dumps({"v": 1, "cluster": cluster, "region": region, "task_arn": arn, "started_at": started_at,
                       "alloc_id": alloc_id, "task_name": task_name, "container": "web"},
                      separators=(",", ":")).encode()


def go_time_binary(ts) -> bytes:
    """A Go time.Time as MarshalBinary (version 1) writes it: seconds since 0001-01-01, nanoseconds, UTC (-1)."""
    import struct

    secs = int(ts.timestamp()) + 62135596800
    return struct.pack(">Bqih", 1, secs, ts.microsecond * 1000, -1)


def reference_state(arn: str, started_at, task_id: str, alloc_id: str, name: str = "http-server") -> bytes:
    """hashicorp/nomad-driver-ecs's state as Nomad's msgpack handle writes it: classic msgpack (strings as
    raw), field names as keys, the time as MarshalBinary bytes (`TimeNotBuiltin`), no cluster, no region."""
    task_config = {"ID": task_id, "JobName": "nomad-ecs-demo", "TaskGroupName": "ecs-remote-task-demo",
                   "Name": name, "Namespace": "default", "AllocID": alloc_id, "Env": {}, "Resources": None,
                   "StdoutPath": f"/alloc/logs/.{name}.stdout.fifo"}
    return msgpack.packb({"TaskConfig": task_config, "ContainerName": "web", "ARN": arn,
                          "StartedAt": go_time_binary(started_at)}, use_bin_type=False)
