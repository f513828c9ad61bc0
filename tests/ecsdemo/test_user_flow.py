"""The whole user flow for real, as a user types it: `ecsdemo up --local`, `status`, `up` again, `logs`,
`run`, `run-scenario all --json`, `run` again and `teardown`, every command but the checked teardown a
subprocess of the installed CLI. Real terraform (provider mirror) against ecsdemo's own local endpoint (a
moto server it starts, pauses for the outage and stops), the real renderer and plugin install into the
agents' plugin_dir, agent processes started by ecsdemo. Only `nomad` is a stand-in (tests/fakenomad/bin/nomad):
its client agents launch that plugin and drive every task through it, its SIGTERM restart restores the
node's allocations from its data_dir. The scenarios run with their production adapters and defaults
(the plugin's 5 s poll and 30 s fingerprint, a 60 s outage). One test, because Terraform is slow."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import psutil
import pytest

from ecsdemo import agents, lifecycle, local
from ecsdemo import status as status_view
from ecsdemo.outputs import recorded
from ecsdemo.progress import RecordingReporter
from ecsdemo.resolve import resolve_config
from tests.support.standin_demo import make_config
from tests.support.waiting import wait_for

FAKE_NOMAD = Path(__file__).resolve().parents[1] / "fakenomad" / "bin" / "nomad"
SCRUBBED = ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "NOMAD_ADDR")


def ecsdemo(cfg, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, ECSDEMO_NOMAD_BIN=str(FAKE_NOMAD), COLUMNS="200")
    for var in SCRUBBED:
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args, "--state-dir", str(cfg.state_dir)],
                          capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


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


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def status_json(cfg) -> dict:
    return json.loads(ok(ecsdemo(cfg, "status", "--json")).stdout)


@pytest.mark.terraform
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_up_status_logs_run_all_scenarios_teardown(tmp_path, tf_mirror, monkeypatch):
    if not FAKE_NOMAD.is_file():
        pytest.skip("the stand-in nomad executable (tests/fakenomad/bin/nomad) is missing")
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(FAKE_NOMAD))    # for the teardown run in this process
    for var in SCRUBBED:
        monkeypatch.delenv(var, raising=False)
    cfg = make_config(tmp_path, server_port=local.free_port(), tf_plugin_dir=tf_mirror)
    cfg.save()     # free ports and the mirror; `up` loads it and applies --local
    torn_down = False
    try:
        # up: Terraform applies against the endpoint it starts; agents run with the installed plugin
        up = ok(ecsdemo(cfg, "up", "--local"))
        out = " ".join(up.stdout.split())
        assert "The demo is up" in out and f"Nomad UI: http://127.0.0.1:{cfg.server_http_port}/ui" in out
        assert "nomad-client-1" in out and "nomad-client-2" in out and "ecsdemo run" in out
        recs = agents.load(cfg)
        assert set(recs) == {"nomad-server", "nomad-client-1", "nomad-client-2"}
        assert all(agents.status(r) == "running" for r in recs.values())
        assert (cfg.plugin_dir / "nomad-driver-ecs").is_file()
        endpoint = local.local_endpoint_status(cfg.state)
        outputs = recorded(cfg.state)
        assert outputs.cluster_name == cfg.name and outputs.endpoint == endpoint["url"]

        # run, status, up again (reuses everything), logs
        ok(ecsdemo(cfg, "run"))
        status = status_json(cfg)
        (alloc,) = status["allocations"]
        (task,) = status["ecs_tasks"]
        assert task["arn"] == alloc["task_arn"] and task["last_status"] == "RUNNING" and not status["orphans"]
        assert task["task_definition"] == outputs.task_definition_ref
        again = ok(ecsdemo(cfg, "up"))
        assert {n: r.pid for n, r in agents.load(cfg).items()} == {n: r.pid for n, r in recs.items()}
        assert "already running" in again.stderr + again.stdout
        wait_for(lambda: "with status RUNNING" in status_view.logs(cfg)[1], timeout=30)
        logs = ok(ecsdemo(cfg, "logs"))
        assert f"ECS task: {alloc['task_arn']} with status RUNNING" in logs.stdout

        # every scenario, in the demo's order
        proc = ecsdemo(cfg, "run-scenario", "all", "--json", "--timeout", "120")
        report = json.loads(proc.stdout)
        failed = [(r["scenario"], c["name"], c["detail"])
                  for r in report["results"] for c in r["checks"] if not c["ok"]]
        errors = [(r["scenario"], r["error"]) for r in report["results"] if r["error"]]
        assert proc.returncode == 0 and report["ok"], (failed, errors, proc.stderr[-3000:])
        assert [r["scenario"] for r in report["results"]] == [
            "drain", "undrain", "lost-node", "client-restart", "task-exit", "outage", "update", "stop"]
        assert all(r["status"] == "passed" for r in report["results"])
        checks = {(r["scenario"], c["name"]): c for r in report["results"] for c in r["checks"]}
        exit_ = checks[("task-exit", "task exit reported by Nomad with ECS's reason")]
        assert exit_["after"]["after_s"] <= 5 + 2                      # the plugin's default poll + 2 s
        reasons = checks[("outage", "every client's ecs driver turned unhealthy with a reason")]["after"]
        assert len(reasons) == 2 and all(endpoint["url"] in r for r in reasons.values()), reasons
        # the same endpoint process all along: paused and resumed, never replaced
        after = local.local_endpoint_status(cfg.state)
        assert after["pid"] == endpoint["pid"] and after["healthy"] and not after["paused"]

        # run again (the stop scenario stopped the job), then teardown undoes everything
        ok(ecsdemo(cfg, "run"))
        (alloc,) = [a for a in status_json(cfg)["allocations"] if a["client_status"] == "running"]
        reporter = SnapshotReporter(endpoint["url"], cfg,
                                    at=("Destroying the infrastructure", "Stopping the local AWS endpoint"))
        torn_down = True
        result = lifecycle.teardown(resolve_config(str(cfg.state_dir), required=True), reporter)

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
        pid = endpoint["pid"]
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not (cfg.state_dir / "nomad").exists()            # agent data dirs
        for doc in ("agents.json", "local.json", "infra.json", "config.json"):
            assert not cfg.state.path(doc).exists(), doc

        ok(ecsdemo(cfg, "teardown"))                              # idempotent, through the CLI
    finally:
        if not torn_down:
            ecsdemo(cfg, "teardown")
        with contextlib.suppress(Exception):
            agents.stop_all(cfg, grace=2)
        with contextlib.suppress(Exception):
            local.stop_local_endpoint(cfg.state)
