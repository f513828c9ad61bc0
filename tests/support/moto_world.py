"""ECS worlds on the moto server, made by one builder (`build_ecs`: what Terraform would make).

- `create_demo_ecs(aws)` / the `ecs_demo` fixture: the demo's cluster, network and two task definition
  revisions, as an `EcsDemo`; `module_aws`: the same made once per module. `EcsDemo.job_hcl()` is the
  demo job rendered by ecsdemo.render from the users' template; `without_restarts` derives the one
  variant tests need that the template cannot express (a job that is never restarted in place).
- `make_world(aws)` / the `world` fixture (the driver's tests): a network and two revisions
  (`base`/`updated`) shared while the moto server keeps them, and a fresh cluster for each test, so
  counting a cluster's tasks needs no reset of the shared server.
"""

from __future__ import annotations

import re
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import pytest

from ecsdemo import render
from ecsdemo.config import DemoConfig
from ecsdemo.outputs import Outputs
from tests.support.aws import AwsHelper, use_local_credentials

CLUSTER = "nomad-remote-driver-demo"
FAMILY = "nomad-remote-driver-demo"


@dataclass
class EcsDemo:
    endpoint: str
    region: str
    cluster: str
    subnet: str
    security_group: str
    task_definition: str      # "family:1"

    def outputs(self, task_definition: str | None = None) -> Outputs:
        """What Terraform's outputs would say for these resources (`task_definition` "family:revision")."""
        family, _, revision = (task_definition or self.task_definition).rpartition(":")
        return Outputs(demo_subnet_id=self.subnet, demo_security_group_id=self.security_group,
                       cluster_name=self.cluster, region=self.region, task_definition_family=family,
                       task_definition_revision=int(revision),
                       task_definition_arn=f"arn:aws:ecs:{self.region}:123456789012:task-definition/{family}:{revision}",
                       endpoint=self.endpoint)

    def job_hcl(self, task_definition: str | None = None, restarts: bool = True) -> str:
        """The demo job as users get it: `ecsdemo render`'s job file (templates/demo-ecs.nomad.j2, rendered
        by ecsdemo.render.render_job) for these resources, on `task_definition` (default: revision 1).
        `restarts=False`: the same job with a policy that allows no restarts (`without_restarts`)."""
        with tempfile.TemporaryDirectory(prefix="demo-job-") as tmp:
            cfg = DemoConfig(state_dir=Path(tmp) / ".ecsdemo", render_dir=Path(tmp), local=True, region=self.region,
                             name=self.cluster)
            hcl = render.render_job(cfg, self.outputs(task_definition)).read_text()
        return hcl if restarts else without_restarts(hcl)


# A group's restart block in the rendered job, with the comment lines right above it.
_RESTART_BLOCK = re.compile(r"(?:^(?P<indent> *)#[^\n]*\n)*^(?P=indent)restart \{\n.*?^(?P=indent)\}\n", re.M | re.S)


def without_restarts(hcl: str) -> str:
    """The rendered demo job with a restart policy that allows no restarts (`attempts = 0`, mode "fail"; the
    other fields are Nomad's defaults): the task's first exit fails the allocation at once. ecsdemo's
    template restarts a task in place twice in 10 minutes and has no setting for this; tests of what
    follows a failed allocation (rescheduling, "Not Restarting", a job without restarts) derive it here."""
    def policy(m: re.Match) -> str:
        pad = m["indent"]
        return f'{pad}restart {{\n{pad}  attempts = 0\n{pad}  mode     = "fail"\n{pad}}}\n'
    out, found = _RESTART_BLOCK.subn(policy, hcl)
    if found != 1:
        raise AssertionError(f"expected one restart block in the rendered demo job, found {found}:\n{hcl}")
    return out


def build_ecs(aws, family: str, containers: list[dict], cluster: str | None = None, subnet_cidr: str = "10.0.0.0/24",
              group: str = "demo", group_description: str = "demo") -> tuple[str, str]:
    """The one builder of what Terraform makes, in moto: a VPC (10.0.0.0/24, DNS hostnames on), a subnet
    (`subnet_cidr`), a security group, the cluster when one is named, and one revision of the awsvpc/FARGATE
    task definition `family` per container definition in `containers` (in order; each sets memory, as moto
    requires for RunTask). Returns (subnet ID, security group ID)."""
    ec2 = aws.client("ec2")
    ecs = aws.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/24")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=subnet_cidr)["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName=group, Description=group_description, VpcId=vpc)["GroupId"]
    if cluster:
        ecs.create_cluster(clusterName=cluster)
    for container in containers:
        ecs.register_task_definition(
            family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
            containerDefinitions=[container])
    return subnet, sg


def create_demo_ecs(aws, revisions: int = 2) -> EcsDemo:
    """The demo's resources (cluster CLUSTER, `revisions` revisions of FAMILY) as an `EcsDemo`."""
    container = {"name": FAMILY, "image": "httpd:2.4", "memory": 512, "essential": True}
    subnet, sg = build_ecs(aws, FAMILY, [container] * revisions, cluster=CLUSTER, subnet_cidr="10.0.0.0/26")
    return EcsDemo(endpoint=aws.url, region=aws.region, cluster=CLUSTER, subnet=subnet, security_group=sg,
                   task_definition=f"{FAMILY}:1")


@pytest.fixture
def ecs_demo(request, aws):
    """The demo's ECS resources on the (reset) moto server. In a `MOTO_PER_MODULE` module: the module's
    network and task definitions (`module_aws`) with an ECS cluster of the test's own, so that no test
    sees a task of an earlier one, not even a STOPPED one (moto keeps those)."""
    if getattr(request.module, "MOTO_PER_MODULE", False):
        helper, shared = request.getfixturevalue("module_aws")
        # not CLUSTER plus a suffix: moto's ListTasks matches a cluster's name anywhere in a task's cluster ARN
        cluster = f"test-cluster-{uuid.uuid4().hex[:8]}"
        helper.client("ecs").create_cluster(clusterName=cluster)
        return replace(shared, cluster=cluster)
    return create_demo_ecs(aws)


@pytest.fixture(scope="module")
def module_aws(moto_url):
    """The demo's VPC, subnet, security group, cluster and two task definition revisions, made once for
    this module (creating EC2 resources is the slow part); each test starts with no running task."""
    with pytest.MonkeyPatch.context() as mp:
        use_local_credentials(mp)
        helper = AwsHelper(moto_url)
        helper.reset()
        yield helper, create_demo_ecs(helper)


WORLD_CLUSTER = "lifecycle-test"
WORLD_FAMILY = "lifecycle-demo"


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
    """The world's network and two task definition revisions (`build_ecs`), made once per moto state.

    Other tests reset the moto server; the cached IDs are checked and everything is made again then."""
    ec2, ecs = aws.client("ec2"), aws.client("ecs")
    cached = _networks.get(aws.url)
    if cached:
        try:
            ec2.describe_subnets(SubnetIds=[cached[0]])
            ecs.describe_task_definition(taskDefinition=f"{WORLD_FAMILY}:2")
            return cached
        except Exception:  # wiped by a reset: make it again
            _networks.pop(aws.url, None)
    containers = [{"name": "web", "image": "httpd:2.4", "memory": 128, "essential": True, "command": [text]}
                  for text in ("base", "updated")]
    subnet, sg = build_ecs(aws, WORLD_FAMILY, containers, group=f"lifecycle-{uuid.uuid4().hex[:6]}",
                           group_description="lifecycle tests")
    _networks[aws.url] = (subnet, sg)
    return subnet, sg


def make_world(aws, cluster: str | None = None) -> World:
    """A fresh ECS cluster of its own (so tests need no moto reset) on the shared network."""
    subnet, sg = _network(aws)
    cluster = cluster or f"{WORLD_CLUSTER}-{uuid.uuid4().hex[:8]}"
    aws.client("ecs").create_cluster(clusterName=cluster)
    return World(aws=aws, cluster=cluster, subnet=subnet, security_group=sg, family=WORLD_FAMILY)


@pytest.fixture
def world(moto_url, monkeypatch) -> World:
    """A fresh cluster on the session moto server, with dummy credentials and region in the environment
    (the plugin processes inherit them)."""
    use_local_credentials(monkeypatch)
    return make_world(AwsHelper(moto_url))
