"""Test helpers: the demo's ECS resources on the moto server, and the demo job's HCL.

`create_demo_ecs(aws)` makes what Terraform would (VPC with DNS hostnames, subnet, security group,
cluster, a FARGATE task definition with container memory, as moto requires) and returns an `EcsDemo`.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def job_hcl(self, task_definition: str | None = None, job_id: str = "nomad-ecs-demo",
                group: str = "ecs-remote-task-demo", task: str = "http-server", count: int = 1) -> str:
        return JOB_TEMPLATE.format(job=job_id, group=group, task=task, count=count,
                                   td=task_definition or self.task_definition, subnet=self.subnet,
                                   sg=self.security_group)


JOB_TEMPLATE = """job "{job}" {{
  datacenters = ["dc1"]

  group "{group}" {{
    count = {count}

    restart {{
      attempts = 0
      mode     = "fail"
    }}

    reschedule {{
      delay = "5s"
    }}

    task "{task}" {{
      driver       = "ecs"
      kill_timeout = "1m"

      config {{
        task {{
          launch_type     = "FARGATE"
          task_definition = "{td}"
          network_configuration {{
            aws_vpc_configuration {{
              assign_public_ip = "ENABLED"
              security_groups  = ["{sg}"]
              subnets          = ["{subnet}"]
            }}
          }}
        }}
      }}
    }}
  }}
}}
"""


def create_demo_ecs(aws, revisions: int = 2) -> EcsDemo:
    ec2 = aws.client("ec2")
    ecs = aws.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/24")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/26")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="demo", Description="demo", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=CLUSTER)
    for _ in range(revisions):
        ecs.register_task_definition(
            family=FAMILY, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
            containerDefinitions=[{"name": FAMILY, "image": "httpd:2.4", "memory": 512, "essential": True}])
    return EcsDemo(endpoint=aws.url, region=aws.region, cluster=CLUSTER, subnet=subnet, security_group=sg,
                   task_definition=f"{FAMILY}:1")
