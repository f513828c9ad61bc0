"""The scenario runner's world on the fake Nomad: `make_demo` starts a FakeNomad whose nodes run their
tasks through real plugin processes (`PluginRuntime`) on moto, records a stand-in process per client agent,
and runs the demo job; `Demo.env()` is the `ScenarioEnv` a scenario gets, with only two seams replaced:
`StandInAgents` (restarting an agent restarts the fake's client) and `BoundInfra` (Terraform's apply in the
update scenario registers the revision with boto3). `checks_of` and `failures` read a scenario report.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ecsdemo import agents as agents_mod
from ecsdemo import render
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.nomad import NomadClient, task_arn
from ecsdemo.outputs import Outputs
from ecsdemo.progress import RecordingReporter
from ecsdemo.scenarios.env import Agents, Options, ScenarioEnv
from tests.fakenomad import FakeNomad, PluginRuntime, Timings
from tests.support.moto_world import FAMILY
from tests.support.waiting import wait_for

FAST = dict(timeout=8.0, sample_interval=0.05, poll_interval=0.05, block_wait=1.0)


class StandInAgents(Agents):
    """The production agent adapter; only `start` is replaced (no nomad binary): it restarts the fake's
    client for that node, bound to a fresh stand-in process recorded like a real agent."""

    def __init__(self, cfg, demo):
        super().__init__(cfg)
        self.demo = demo
        self.started: list[str] = []

    def start(self, name: str) -> None:
        self.started.append(name)
        node_id = self.demo.node_ids[self.demo.names.index(name)]
        self.demo.record_agent(name)
        self.demo.fake.restart_node(node_id)


class BoundInfra:
    """Terraform's seam for the update scenario: 'apply' registers the revision with boto3 (as Terraform
    would) and returns Outputs; the job is rendered by the real `ecsdemo.render`."""

    def __init__(self, cfg, ecs, aws):
        self.cfg, self.ecs, self.aws = cfg, ecs, aws
        self.applied: list[str] = []

    def apply(self, variant: str) -> Outputs:
        self.applied.append(variant)
        client = self.aws.client("ecs")
        revs = client.list_task_definitions(familyPrefix=FAMILY)["taskDefinitionArns"]
        want = revs[-1] if variant == "updated" else revs[0]
        td = client.describe_task_definition(taskDefinition=want)["taskDefinition"]
        return Outputs(demo_subnet_id=self.ecs.subnet, demo_security_group_id=self.ecs.security_group,
                       cluster_name=self.ecs.cluster, region=self.ecs.region, task_definition_family=td["family"],
                       task_definition_revision=td["revision"], task_definition_arn=td["taskDefinitionArn"],
                       endpoint=self.ecs.endpoint, task_definition=variant)

    def render_job(self, outputs: Outputs) -> Path:
        return render.render_job(self.cfg, outputs)


@dataclasses.dataclass
class Demo:
    fake: FakeNomad
    cfg: DemoConfig
    ecs: object
    aws: object
    names: list
    node_ids: list
    procs: dict

    def record_agent(self, name: str) -> int:
        """Start a stand-in process for agent `name` and record it in agents.json as `up` would."""
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        ps = psutil.Process(proc.pid)
        deadline = time.monotonic() + 5
        while not ps.cmdline() and time.monotonic() < deadline:  # /proc/<pid>/cmdline is empty right after exec
            time.sleep(0.01)
        agents_mod._record(self.cfg, agents_mod.AgentRecord(
            name=name, role="client", pid=proc.pid, create_time=ps.create_time(), cmdline=ps.cmdline(),
            log=str(self.cfg.state.logs / f"{name}.log"), http_addr="", config=""))
        self.procs[name] = proc
        return proc.pid

    def env(self, reporter=None, **opts) -> ScenarioEnv:
        return ScenarioEnv(cfg=self.cfg, nomad=NomadClient(self.fake.address, timeout=5),
                           reporter=reporter or RecordingReporter(), options=Options(**{**FAST, **opts}),
                           agents=StandInAgents(self.cfg, self), infra=BoundInfra(self.cfg, self.ecs, self.aws))

    def nomad(self) -> NomadClient:
        return NomadClient(self.fake.address, timeout=5)

    def running_alloc(self) -> dict:
        return next(a for a in self.nomad().job_allocations(JOB_ID)
                    if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running")

    def running_ecs(self) -> list[str]:
        client = self.aws.client("ecs")
        arns = client.list_tasks(cluster=self.ecs.cluster, desiredStatus="RUNNING")["taskArns"]
        if not arns:
            return []
        tasks = client.describe_tasks(cluster=self.ecs.cluster, tasks=arns)["tasks"]
        return [t["taskArn"] for t in tasks if t["lastStatus"] == "RUNNING"]


def make_demo(aws, ecs, tmp_path, version="1.6.5", runtime_kw=None, run_job=True, restarts=True, **timings) -> Demo:
    runtime = PluginRuntime(ecs.endpoint, ecs.cluster, ecs.region, workdir=tmp_path / "plugins", **(runtime_kw or {}))
    fake = FakeNomad(version=version, timings=Timings.fast(**timings), runtime=runtime).start()
    cfg = DemoConfig(state_dir=tmp_path / ".ecsdemo", local=True, region=ecs.region, name=ecs.cluster,
                     render_dir=tmp_path / "nomad", server_http_port=fake.port)
    cfg.state.ensure()
    cfg.state.write_json("local.json", {"url": aws.url})
    demo = Demo(fake=fake, cfg=cfg, ecs=ecs, aws=aws, names=cfg.client_names(), node_ids=[], procs={})
    demo.node_ids = fake.add_nodes({name: {"pid": demo.record_agent(name)} for name in demo.names})
    api = demo.nomad()
    api.register_job(api.parse_job(ecs.job_hcl(restarts=restarts)))
    if run_job:
        wait_for(lambda: any(a["ClientStatus"] == "running" and task_arn(a, TASK_NAME)
                             for a in api.job_allocations(JOB_ID)), timeout=10, what="the demo job to run on the fake")
    return demo


def stop_demo(demo: Demo) -> None:
    demo.fake.stop()
    demo.fake.runtime.close()   # every plugin process (one per node)
    for proc in demo.procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def checks_of(report, scenario: str) -> dict:
    res = next(r for r in report.results if r.name == scenario)
    return {c.name: c for c in res.checks}


def failures(report) -> list:
    return [(s, c.name, c.detail) for s, c in report.failed_checks()] + \
        [(r.name, r.error) for r in report.results if r.error]
