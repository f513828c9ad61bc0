"""ecsdemo.aws against the real moto server: listing the cluster's tasks, owners, stopping leftovers."""

from __future__ import annotations

import time

import boto3
import pytest
from botocore.config import Config

from ecsdemo import aws as ecs_aws
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import free_port

ALLOC = "5d2a8e4c-1b7f-4f3e-9c61-0a9d5b2e7f10"


def make_cfg(tmp_path, url: str) -> DemoConfig:
    cfg = DemoConfig(state_dir=tmp_path / "state", local=True, render_dir=tmp_path / "nomad")
    cfg.state.ensure().write_json("local.json", {"url": url})
    return cfg


class Cluster:
    """A demo-like cluster on moto: VPC, subnet, security group, task definition."""

    def __init__(self, aws, name: str):
        self.ecs = aws.client("ecs")
        ec2 = aws.client("ec2")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/24")["Vpc"]["VpcId"]
        ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
        self.subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
        self.sg = ec2.create_security_group(GroupName="demo", Description="demo", VpcId=vpc)["GroupId"]
        self.name = name
        self.ecs.create_cluster(clusterName=name)
        self.ecs.register_task_definition(
            family=name, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[{"name": "web", "image": "httpd:2.4", "memory": 512}])

    def run(self, started_by: str | None = None, tags: dict | None = None) -> str:
        kwargs = {}
        if started_by:
            kwargs["startedBy"] = started_by
        if tags:
            kwargs["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        resp = self.ecs.run_task(cluster=self.name, taskDefinition=f"{self.name}:1", launchType="FARGATE",
                                 networkConfiguration={"awsvpcConfiguration": {
                                     "subnets": [self.subnet], "securityGroups": [self.sg]}}, **kwargs)
        return resp["tasks"][0]["taskArn"]


@pytest.fixture
def cluster(aws):
    return Cluster(aws, DemoConfig().name)


@pytest.mark.slow
def test_cluster_tasks_lists_running_and_stopped_with_tags(tmp_path, aws, cluster):
    cfg = make_cfg(tmp_path, aws.url)
    tagged = cluster.run(started_by=f"nomad-{ALLOC[:30]}", tags={"nomad:alloc_id": ALLOC})
    other = cluster.run(started_by="someone-else")
    stopped = cluster.run(started_by=f"nomad-{ALLOC[:30]}")
    cluster.ecs.stop_task(cluster=cluster.name, task=stopped, reason="test")

    running = {t["taskArn"]: t for t in ecs_aws.cluster_tasks(cfg, "RUNNING")}
    assert set(running) == {tagged, other}
    assert running[tagged]["tags"] == [{"key": "nomad:alloc_id", "value": ALLOC}]
    assert {t["taskArn"] for t in ecs_aws.cluster_tasks(cfg, "STOPPED")} == {stopped}
    assert {t["taskArn"] for t in ecs_aws.cluster_tasks(cfg, None)} == {tagged, other, stopped}
    assert ecs_aws.task_revision(running[tagged]) == f"{cluster.name}:1"


@pytest.mark.slow
def test_missing_cluster_has_no_tasks(tmp_path, aws):
    cfg = make_cfg(tmp_path, aws.url)
    assert ecs_aws.cluster_tasks(cfg) == []


def test_task_owner_from_tag_or_started_by():
    assert ecs_aws.task_owner({"tags": [{"key": "nomad:alloc_id", "value": ALLOC}], "startedBy": "x"}) == ALLOC
    assert ecs_aws.task_owner({"startedBy": f"nomad-{ALLOC[:30]}"}) == ALLOC[:30]
    assert ecs_aws.task_owner({"startedBy": "nomad-ecs-driver"}) is None   # the Go driver names no alloc
    assert ecs_aws.task_owner({"startedBy": "ecs-svc/123"}) is None
    assert ecs_aws.task_owner({}) is None
    assert ecs_aws.owned_by({"startedBy": f"nomad-{ALLOC[:30]}"}, ALLOC)
    assert not ecs_aws.owned_by({"startedBy": f"nomad-{ALLOC[:30]}"}, "0" + ALLOC[1:])
    assert ecs_aws.is_driver_task({"startedBy": "nomad-ecs-driver"})
    assert not ecs_aws.is_driver_task({"startedBy": "ecs-svc/123"})


@pytest.mark.slow
def test_stop_driver_tasks_stops_only_driver_tasks_and_waits(tmp_path, aws, cluster):
    cfg = make_cfg(tmp_path, aws.url)
    ours = [cluster.run(started_by=f"nomad-{ALLOC[:30]}"),
            cluster.run(tags={"nomad:alloc_id": ALLOC}),
            cluster.run(started_by="nomad-ecs-driver")]
    foreign = cluster.run(started_by="manual")

    stopped = ecs_aws.stop_driver_tasks(cfg, "ecsdemo teardown", wait=10, interval=0.1)

    assert sorted(stopped) == sorted(ours)
    desc = {t["taskArn"]: t for t in cluster.ecs.describe_tasks(cluster=cluster.name, tasks=ours + [foreign])["tasks"]}
    assert all(desc[a]["lastStatus"] == "STOPPED" and desc[a]["stoppedReason"] == "ecsdemo teardown" for a in ours)
    assert desc[foreign]["lastStatus"] == "RUNNING"
    assert ecs_aws.stop_driver_tasks(cfg, "again") == []   # idempotent


def test_local_mode_without_endpoint_is_a_clear_error(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / "state", local=True, render_dir=tmp_path / "nomad")
    with pytest.raises(EcsdemoError, match="local AWS endpoint is not running"):
        ecs_aws.cluster_tasks(cfg)


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    cfg = make_cfg(tmp_path, f"http://127.0.0.1:{free_port()}")
    client = boto3.client("ecs", region_name=cfg.region, endpoint_url=ecs_aws.endpoint_url(cfg),
                          aws_access_key_id="testing", aws_secret_access_key="testing",
                          config=Config(retries={"max_attempts": 1}))
    with pytest.raises(EcsdemoError, match="listing ECS tasks"):
        ecs_aws.cluster_tasks(cfg, client=client)


@pytest.mark.slow
def test_waiting_for_tasks_to_run_or_stop_names_what_it_saw(tmp_path, aws, cluster):
    """boto3's tasks_running/tasks_stopped waiters, with ecsdemo's own messages."""
    cfg = make_cfg(tmp_path, aws.url)
    running = cluster.run(started_by="manual")
    ecs_aws.wait_running(cfg, running, timeout=5, interval=0.1)
    stopped = cluster.run(started_by="manual")
    cluster.ecs.stop_task(cluster=cluster.name, task=stopped, reason="stopped by the test")
    with pytest.raises(EcsdemoError, match=r"the ECS task \S+ is STOPPED \(stopped by the test\)$"):
        ecs_aws.wait_running(cfg, stopped, timeout=5, interval=0.1)
    missing = running.rsplit("/", 1)[0] + "/0123456789abcdef0123456789abcdef"
    with pytest.raises(EcsdemoError, match=r"the ECS task \S+ is MISSING \(not found in the cluster\)$"):
        ecs_aws.wait_running(cfg, missing, timeout=0.3, interval=0.1)

    started = time.monotonic()
    ecs_aws.wait_stopped(cfg, [stopped, missing], timeout=5, interval=0.1)   # stopped, and gone: nothing to wait for
    assert time.monotonic() - started < 2
    with pytest.raises(EcsdemoError) as err:
        ecs_aws.wait_stopped(cfg, [running, stopped], timeout=0.3, interval=0.1)
    assert err.value.message == f"1 ECS task(s) did not stop within 0s: {running}"
    assert err.value.hint == "check them in the ECS console and stop them by hand"

    cfg.name = "no-such-cluster"                                             # no cluster: no tasks left
    ecs_aws.wait_stopped(cfg, [running], timeout=5, interval=0.1)
    with pytest.raises(EcsdemoError, match="describing ECS tasks: ClusterNotFoundException"):
        ecs_aws.wait_running(cfg, running, timeout=5, interval=0.1)
