"""Real Terraform against a real moto server process (local mode), skipped where terraform or the aws
provider mirror is missing. One test function does the whole sequence, to keep the suite fast."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import boto3
import botocore.exceptions
import pytest

from ecsdemo import infra, local
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import INFRA_FILE, Outputs, recorded
from ecsdemo.progress import RecordingReporter
from ecsdemo.terraform import state_has_resources

pytestmark = [pytest.mark.terraform, pytest.mark.slow, pytest.mark.timeout(600)]


def ecsdemo_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def clients(url: str, region: str):
    kw = dict(region_name=region, endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing")
    return boto3.client("ecs", **kw), boto3.client("ec2", **kw)


def check_resources(cfg: DemoConfig, out: Outputs) -> str:
    """Every resource exists as configured; returns the VPC id."""
    ecs, ec2 = clients(out.endpoint, out.region)
    assert ecs.describe_clusters(clusters=[out.cluster_name])["clusters"][0]["status"] == "ACTIVE"
    assert out.cluster_name == out.task_definition_family == cfg.name

    td = ecs.describe_task_definition(taskDefinition=out.task_definition_arn)["taskDefinition"]
    assert (td["family"], td["revision"]) == (out.task_definition_family, out.task_definition_revision)
    assert td["networkMode"] == "awsvpc" and td["requiresCompatibilities"] == ["FARGATE"]
    expected = infra.load_task_definition(infra.task_definition_path(out.task_definition))
    assert len(td["containerDefinitions"]) == len(expected)
    for registered, wanted in zip(td["containerDefinitions"], expected):
        assert {k: registered.get(k) for k in wanted} == wanted      # the file's containers, as registered

    subnet = ec2.describe_subnets(SubnetIds=[out.demo_subnet_id])["Subnets"][0]
    vpc_id = subnet["VpcId"]
    assert subnet["CidrBlock"] == cfg.vpc_cidr
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == cfg.vpc_cidr
    assert ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])
    igw_id = igws["InternetGateways"][0]["InternetGatewayId"]
    tables = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [out.demo_subnet_id]}])
    routes = tables["RouteTables"][0]["Routes"]
    assert any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("GatewayId") == igw_id for r in routes)

    sg = ec2.describe_security_groups(GroupIds=[out.demo_security_group_id])["SecurityGroups"][0]
    assert sg["VpcId"] == vpc_id
    assert any(p["IpProtocol"] == "tcp" and p["FromPort"] == 80 and p["ToPort"] == 80
               and {"CidrIp": "0.0.0.0/0"} in [{"CidrIp": r["CidrIp"]} for r in p["IpRanges"]]
               for p in sg["IpPermissions"])
    assert any(p["IpProtocol"] == "-1" and any(r["CidrIp"] == "0.0.0.0/0" for r in p["IpRanges"])
               for p in sg["IpPermissionsEgress"])
    return vpc_id


def run_fargate_task(out: Outputs) -> None:
    """The network is usable: a Fargate task runs on the created subnet and security group."""
    ecs, _ = clients(out.endpoint, out.region)
    resp = ecs.run_task(cluster=out.cluster_name, taskDefinition=out.task_definition_ref, launchType="FARGATE",
                        networkConfiguration={"awsvpcConfiguration": {
                            "subnets": [out.demo_subnet_id], "securityGroups": [out.demo_security_group_id],
                            "assignPublicIp": "ENABLED"}})
    assert resp["failures"] == []
    arn = resp["tasks"][0]["taskArn"]
    task = ecs.describe_tasks(cluster=out.cluster_name, tasks=[arn])["tasks"][0]
    assert task["lastStatus"] == "RUNNING"
    assert task["taskDefinitionArn"] == out.task_definition_arn
    ecs.stop_task(cluster=out.cluster_name, task=arn, reason="test done")


class KillEndpointOnFirstResource(RecordingReporter):
    def __init__(self, pid: int):
        super().__init__()
        self.pid = pid
        self.killed = False

    def info(self, text: str) -> None:
        super().info(text)
        if not self.killed and "Creation complete" in text:
            os.killpg(self.pid, signal.SIGKILL)
            self.killed = True


def test_apply_check_run_update_destroy(state, tf_mirror):
    # 1. The local endpoint dies in the middle of the first apply: a clear error, a consistent state dir.
    cfg = DemoConfig(state_dir=state.root, local=True, tf_plugin_dir=tf_mirror)
    local.ensure_local_endpoint(state, RecordingReporter())
    rep = KillEndpointOnFirstResource(state.read_json(local.LOCAL_FILE)["pid"])
    with pytest.raises(EcsdemoError) as err:
        infra.apply(cfg, rep)
    assert rep.killed
    assert "stopped answering while Terraform was applying" in err.value.message
    assert "ecsdemo local start" in err.value.hint
    assert ("failed", "Terraform apply (local endpoint)") in rep.events
    record = state.read_json(INFRA_FILE)
    assert record["mode"] == "local" and record["outputs"] is None and record["last_error"] == err.value.message
    assert recorded(cfg.state) is None
    assert local.local_endpoint_status(state)["running"] is False
    assert not state.path(infra.WORKDIR_NAME, infra.PLAN_FILE).exists()
    assert state_has_resources(state.path(infra.WORKDIR_NAME))          # what was created before the death

    # 2. The documented fix, through the CLI as a user runs it: a new endpoint, everything from scratch,
    #    the outputs as JSON.
    r = ecsdemo_cli("infra", "apply", "--local", "--json", "--state-dir", str(state.root),
                    env={"ECSDEMO_TF_PLUGIN_DIR": str(tf_mirror)})
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert state.path(infra.WORKDIR_NAME, "terraform.tfstate.lost-endpoint").is_file()   # from scratch
    first = Outputs.from_json(json.loads(r.stdout))
    cfg = DemoConfig.load(state)                          # the command saved its settings
    assert cfg.local and cfg.tf_plugin_dir == tf_mirror
    assert recorded(cfg.state) == first
    status = local.local_endpoint_status(state)
    assert status["healthy"] and first.endpoint == status["url"]
    assert (first.region, first.task_definition) == (cfg.region, "base")

    workdir = state.path(infra.WORKDIR_NAME)
    provider = json.loads((workdir / infra.OVERRIDE_FILE).read_text())["provider"]["aws"]
    assert set(provider["endpoints"].values()) == {first.endpoint} and provider["skip_credentials_validation"] is True
    assert not (workdir / infra.LEGACY_OVERRIDE_FILE).exists()
    assert not (workdir / infra.PLAN_FILE).exists()
    log = (state.logs / infra.TF_LOG_NAME).read_text()
    assert "Apply complete! Resources: 9 added" in log and "init" in log

    vpc_id = check_resources(cfg, first)
    run_fargate_task(first)

    r = ecsdemo_cli("infra", "outputs", "--json", "--state-dir", str(state.root))
    assert r.returncode == 0 and json.loads(r.stdout) == first.to_json()

    # 3. The updated task definition: a new revision, the outputs move, the old revision is deregistered.
    rep = RecordingReporter()
    updated = infra.apply(cfg, rep, task_definition="updated")
    assert "already initialised (providers reused)" in rep.texts("info")
    assert updated.task_definition == "updated"
    assert updated.task_definition_revision == first.task_definition_revision + 1
    assert updated.task_definition_arn != first.task_definition_arn
    assert (updated.demo_subnet_id, updated.demo_security_group_id) == (first.demo_subnet_id,
                                                                          first.demo_security_group_id)
    assert recorded(cfg.state) == updated
    ecs, ec2 = clients(first.endpoint, first.region)
    old = ecs.describe_task_definition(taskDefinition=first.task_definition_arn)["taskDefinition"]
    assert old["status"] == "INACTIVE"
    check_resources(cfg, updated)
    run_fargate_task(updated)

    # 4. A plain apply keeps the current task definition: nothing changes.
    rep = RecordingReporter()
    again = infra.apply(cfg, rep)
    assert again == updated
    assert "no changes: the infrastructure matches the configuration" in rep.texts("info")
    assert not any(t.startswith("Terraform apply") for t in rep.texts("step"))

    # 5. The rendered job names the new revision.
    cfg.render_dir = state.root / "rendered"
    cfg.save()
    r = ecsdemo_cli("render", "--state-dir", str(state.root))
    assert r.returncode == 0, r.stderr
    job_text = (state.root / "rendered" / "demo-ecs.nomad").read_text()
    assert f'task_definition = "{updated.task_definition_ref}"' in job_text
    assert f'endpoint = "{updated.endpoint}"' in (state.root / "rendered" / "client-1.hcl").read_text()

    # 6. Destroy: nothing is left. It reuses the installed providers even when no mirror is named now.
    rep = RecordingReporter()
    assert infra.destroy(dataclasses.replace(cfg, tf_plugin_dir=None), rep) is True
    assert (state.logs / infra.TF_LOG_NAME).read_text().count("$ init ") == 1
    assert "Destroy complete! Resources: 9 destroyed." in rep.texts("info")
    assert recorded(cfg.state) is None and not state_has_resources(workdir)
    clusters = ecs.describe_clusters(clusters=[first.cluster_name])["clusters"]
    assert all(c["status"] == "INACTIVE" for c in clusters)
    assert ecs.list_task_definitions(familyPrefix=cfg.name, status="ACTIVE")["taskDefinitionArns"] == []
    for call, kw in ((ec2.describe_vpcs, {"VpcIds": [vpc_id]}),
                     (ec2.describe_subnets, {"SubnetIds": [first.demo_subnet_id]}),
                     (ec2.describe_security_groups, {"GroupIds": [first.demo_security_group_id]})):
        with pytest.raises(botocore.exceptions.ClientError, match="NotFound"):
            call(**kw)
    assert ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"] == []
    assert infra.destroy(cfg, RecordingReporter()) is False        # again: nothing to destroy
