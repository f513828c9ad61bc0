"""`ecsdemo up --local` / `run` / `status` / `teardown` for real: the real terraform binary and provider
mirror against ecsdemo's own local endpoint, the real renderer and plugin install, and agent processes
started by ecsdemo. Only Nomad is a stand-in (tests/fakenomad/bin/nomad: a fake of its HTTP API that
runs the job's task on the endpoint). One test, because Terraform is slow."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import boto3
import psutil
import pytest
from typer.testing import CliRunner

from ecsdemo import agents, infra, lifecycle, local
from ecsdemo.cli import app
from ecsdemo.progress import RecordingReporter
from tests.ecsdemo.test_lifecycle_support import make_config

FAKE_NOMAD = Path(__file__).resolve().parents[1] / "fakenomad" / "bin" / "nomad"


class SnapshotReporter(RecordingReporter):
    """Records progress, and photographs the local endpoint's AWS resources when a given step starts."""

    def __init__(self, url: str, cfg, at: tuple[str, ...]):
        super().__init__()
        self.url, self.cfg, self.at = url, cfg, at
        self.snapshots: dict[str, dict] = {}

    @contextlib.contextmanager
    def step(self, title: str):
        if title in self.at:
            self.snapshots[title] = snapshot(self.url, self.cfg)
        with super().step(title):
            yield


def snapshot(url: str, cfg) -> dict:
    kw = dict(region_name=cfg.region, endpoint_url=url, **{k.lower(): v for k, v in local.LOCAL_CREDENTIALS.items()})
    ecs, ec2 = boto3.client("ecs", **kw), boto3.client("ec2", **kw)
    arns = ecs.list_clusters()["clusterArns"]
    described = ecs.describe_clusters(clusters=arns)["clusters"] if arns else []
    clusters = [c["clusterArn"] for c in described if c["status"] == "ACTIVE"]   # deleted ones linger INACTIVE
    tasks = []
    for c in arns:
        arns = ecs.list_tasks(cluster=c)["taskArns"] + ecs.list_tasks(cluster=c, desiredStatus="STOPPED")["taskArns"]
        tasks += ecs.describe_tasks(cluster=c, tasks=arns)["tasks"] if arns else []
    return {"clusters": clusters, "tasks": {t["taskArn"]: t["lastStatus"] for t in tasks},
            "live_tasks": [t["taskArn"] for t in tasks if t["lastStatus"] != "STOPPED"],
            "demo_vpcs": [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"] if v["CidrBlock"] == cfg.vpc_cidr],
            "task_definitions": ecs.list_task_definitions(familyPrefix=cfg.name, status="ACTIVE")["taskDefinitionArns"]}


@pytest.mark.terraform
@pytest.mark.slow
def test_up_run_status_teardown_for_real(tmp_path, tf_mirror, monkeypatch):
    if not FAKE_NOMAD.is_file():
        pytest.skip("the stand-in nomad executable (tests/fakenomad/bin/nomad) is missing")
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(FAKE_NOMAD))
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cfg = make_config(tmp_path, server_port=local.free_port(), tf_plugin_dir=tf_mirror)
    cfg.save()     # free ports and the mirror; `up` loads it and applies --local
    sd = str(cfg.state_dir)
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["up", "--local", "--state-dir", sd])
        assert up.exit_code == 0, (up.output, repr(up.exception))
        out = " ".join(up.output.split())
        assert "The demo is up" in out and f"Nomad UI: http://127.0.0.1:{cfg.server_http_port}/ui" in out
        assert "nomad-client-1" in out and "nomad-client-2" in out and "ecsdemo run" in out
        recs = agents.load(cfg)
        assert set(recs) == {"nomad-server", "nomad-client-1", "nomad-client-2"}
        assert all(agents.status(r) == "running" for r in recs.values())
        assert (cfg.plugin_dir / "nomad-driver-ecs").is_file()
        url = local.local_endpoint_status(cfg.state)["url"]
        outputs = infra.outputs(cfg)
        assert outputs.cluster_name == cfg.name and outputs.endpoint == url

        ran = runner.invoke(app, ["run", "--state-dir", sd])
        assert ran.exit_code == 0, (ran.output, repr(ran.exception))
        status = json.loads(runner.invoke(app, ["status", "--json", "--state-dir", sd]).output)
        (alloc,) = status["allocations"]
        (task,) = status["ecs_tasks"]
        assert task["arn"] == alloc["task_arn"] and task["last_status"] == "RUNNING" and not status["orphans"]
        assert task["task_definition"] == outputs.task_definition_ref

        again = runner.invoke(app, ["up", "--state-dir", sd])    # re-run: reuses everything
        assert again.exit_code == 0, (again.output, repr(again.exception))
        assert {n: r.pid for n, r in agents.load(cfg).items()} == {n: r.pid for n, r in recs.items()}
        assert "already running" in again.output

        reporter = SnapshotReporter(url, cfg, at=("Destroying the infrastructure", "Stopping the local AWS endpoint"))
        endpoint_pid = local.local_endpoint_status(cfg.state)["pid"]
        result = lifecycle.teardown(lifecycle.load_config(sd), reporter)

        assert result.job_stopped and alloc["task_arn"] in result.ecs_tasks_stopped
        before_destroy = reporter.snapshots["Destroying the infrastructure"]
        assert before_destroy["tasks"] and set(before_destroy["tasks"].values()) == {"STOPPED"}
        after_destroy = reporter.snapshots["Stopping the local AWS endpoint"]
        assert before_destroy["clusters"] and before_destroy["demo_vpcs"] and before_destroy["task_definitions"]
        assert not before_destroy["live_tasks"]
        assert (after_destroy["clusters"], after_destroy["live_tasks"], after_destroy["demo_vpcs"],
                after_destroy["task_definitions"]) == ([], [], [], [])
        assert result.infra_destroyed and result.endpoint_stopped
        assert set(result.agents.values()) == {"stopped"}
        assert not psutil.pid_exists(endpoint_pid) or psutil.Process(endpoint_pid).status() == psutil.STATUS_ZOMBIE
        assert not (cfg.state_dir / "nomad").exists()            # agent data dirs
        for doc in ("agents.json", "local.json", "infra.json", "config.json"):
            assert not cfg.state.path(doc).exists(), doc

        twice = runner.invoke(app, ["teardown", "--state-dir", sd])   # idempotent
        assert twice.exit_code == 0, (twice.output, repr(twice.exception))
    finally:
        with contextlib.suppress(Exception):
            agents.stop_all(cfg, grace=2)
        with contextlib.suppress(Exception):
            local.stop_local_endpoint(cfg.state)
