"""client-restart, task-exit, outage and the new `all` order, through the fake Nomad's simulated clients,
each driving its tasks through a REAL plugin process, on moto, with the demo job rendered from ecsdemo's own
template (its restart policy is what task-exit shows).

The fake client follows Nomad's (docs/nomad-notes.md, "How the client drives a task"): WaitTask open for a
task's life, the restart policy, an agent restart restoring every allocation in its state (dead ones:
RecoverTask, then DestroyTask(force)), the node's ecs driver health from the plugin's fingerprint. Each
failure path feeds the scenario what a broken driver would do (a stop by a stale restore, a job without
restarts, an outage too short for the fingerprint) and shows the check that catches it.

The outage tests pause a moto server of their own, never the session's shared one.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from ecsdemo import agents as agents_mod
from ecsdemo import local
from ecsdemo.config import TASK_NAME
from ecsdemo.nomad import NomadClient, task_arn
from ecsdemo.progress import RecordingReporter
from ecsdemo.scenarios import runner
from ecsdemo.scenarios.env import Options, ScenarioEnv
from ecsdemo.scenarios.task_exit import REASON
from tests.support import scenario_demo
from tests.support.aws import AwsHelper
from tests.support.moto_world import create_demo_ecs
from tests.support.scenario_demo import checks_of, failures

POLL = 0.1          # the plugin's poll_interval in these tests (PluginRuntime's "100ms")
FAST = dict(scenario_demo.FAST, timeout=20.0, settle=1.5, driver_poll_interval=POLL)


class Agents(scenario_demo.StandInAgents):
    """ecsdemo's agent adapter over stand-in agent processes: kill and restart signal the recorded process
    (SIGKILL / SIGTERM) through `ecsdemo.agents`; only starting one and asking its node ID go to the fake.
    `also_on_restart` runs right after the restart: a failure path's stand-in for a misbehaving plugin."""

    also_on_restart = None

    def node_id(self, name: str) -> str | None:
        node_id = self.demo.node_ids[self.demo.names.index(name)]
        try:
            return NomadClient.client_node_id(self.demo.fake.client_address(node_id), timeout=2)
        except Exception:  # noqa: BLE001 - not answering yet
            return None

    def restart(self, name: str) -> str:
        outcome = super().restart(name)
        if self.also_on_restart:
            self.also_on_restart()
        return outcome


def make_env(demo, reporter=None, **opts) -> ScenarioEnv:
    return ScenarioEnv(cfg=demo.cfg, nomad=NomadClient(demo.fake.address, timeout=5),
                       reporter=reporter or RecordingReporter(), options=Options(**{**FAST, **opts}),
                       agents=Agents(demo.cfg, demo), infra=scenario_demo.BoundInfra(demo.cfg, demo.ecs, demo.aws))


def _factory(aws, ecs, tmp_path, request):
    made = []

    def make(**kw):
        demo = scenario_demo.make_demo(aws, ecs, tmp_path / f"d{len(made)}", **kw)
        made.append(demo)
        return demo
    request.addfinalizer(lambda: [scenario_demo.stop_demo(d) for d in made])
    return make


def _no_running_tasks(aws, ecs) -> None:
    client = aws.client("ecs")
    for arn in client.list_tasks(cluster=ecs.cluster, desiredStatus="RUNNING")["taskArns"]:
        client.stop_task(cluster=ecs.cluster, task=arn, reason="test cleanup")


@pytest.fixture
def demo_factory(module_aws, tmp_path, request):
    aws, ecs = module_aws
    _no_running_tasks(aws, ecs)
    return _factory(aws, ecs, tmp_path, request)


# --- client-restart -------------------------------------------------------------------------------
@pytest.mark.slow
def test_client_restart_after_a_drain_leaves_the_task_alone(demo_factory):
    demo = demo_factory()
    first = demo.running_alloc()
    arn = task_arn(first, TASK_NAME)
    assert runner.run("drain", make_env(demo)).ok
    env = make_env(demo)
    report = runner.run("client-restart", env)
    assert report.ok, failures(report)
    name = demo.names[demo.node_ids.index(first["NodeID"])]
    assert env.agents.started == [name]           # the drained client, which holds the handed-over alloc
    c = checks_of(report, "client-restart")
    assert c["client back with the same node ID"].after["reported_id"] == first["NodeID"]
    assert c["ECS task ARN unchanged (running allocation's task handle)"].after == arn
    assert c["ECS task never left RUNNING while the client restarted"].after == ["RUNNING"]
    assert c["allocation still running (client restart)"].ok
    assert demo.running_ecs() == [arn]
    # what made it a test: the restarted client restored the drained allocation (its OLD task id), dead,
    # so it destroyed it with force (task_runner.go Restore/Run)
    calls = [(rpc, tid, detail) for _, rpc, tid, detail, _ in demo.fake.runtime.call_log(first["ID"])]
    restored = [i for i, (rpc, _, _) in enumerate(calls) if rpc == "RecoverTask"]
    assert restored, calls
    after = [(rpc, detail) for rpc, _, detail in calls[restored[-1]:]]
    assert any(rpc == "DestroyTask" and detail.get("force") for rpc, detail in after), after


@pytest.mark.slow
def test_client_restart_catches_a_stopped_task(demo_factory):
    """What today's plugin does on the stale restore's DestroyTask(force): it stops the replacement's task."""
    demo = demo_factory()
    arn = task_arn(demo.running_alloc(), TASK_NAME)
    assert runner.run("drain", make_env(demo)).ok
    env = make_env(demo)
    ecs = demo.aws.client("ecs")
    env.agents.also_on_restart = lambda: ecs.stop_task(cluster=demo.ecs.cluster, task=arn,
                                                       reason="Stopped by Nomad: allocation (stale restore)")
    report = runner.run("client-restart", env)
    assert not report.ok and report.exit_code == 1
    c = checks_of(report, "client-restart")
    never = c["ECS task never left RUNNING while the client restarted"]
    assert not never.ok and "STOPPED" in never.after
    assert not c["allocation still running (client restart)"].ok or not c["exactly one ECS task of the job RUNNING"].ok
    assert c["client back with the same node ID"].ok


@pytest.mark.slow
def test_client_restart_needs_a_handed_over_allocation(demo_factory):
    demo = demo_factory()
    report = runner.run("client-restart", make_env(demo))
    assert report.exit_code == 3
    res = report.results[0]
    assert "has handed ECS task" in res.error and "run-scenario drain" in res.hint
    assert all(p.poll() is None for p in demo.procs.values())   # no agent was touched


@pytest.mark.slow
def test_client_restart_only_restarts_agents_ecsdemo_started(demo_factory):
    demo = demo_factory()
    drained = demo.running_alloc()["NodeID"]
    assert runner.run("drain", make_env(demo)).ok
    agents_mod.forget(demo.cfg, demo.names[demo.node_ids.index(drained)])
    env = make_env(demo)
    report = runner.run("client-restart", env)
    assert report.exit_code == 3 and "with no running agent that ecsdemo started" in report.results[0].error
    assert env.agents.started == [] and all(p.poll() is None for p in demo.procs.values())


# --- task-exit ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_task_exit_is_reported_and_the_restart_policy_starts_a_new_task(demo_factory):
    demo = demo_factory()
    before = demo.running_alloc()
    arn = task_arn(before, TASK_NAME)
    report = runner.run("task-exit", make_env(demo))
    assert report.ok, failures(report)
    c = checks_of(report, "task-exit")
    exit_ = c["task exit reported by Nomad with ECS's reason"]
    assert REASON in exit_.after["event"] and exit_.after["after_s"] <= POLL + 2
    assert c["task restarted by the group's restart policy"].after == {"alloc": before["ID"], "restarts": 1}
    new = c["new ECS task RUNNING on the same job version"].after
    assert new["arn"] != arn and new["status"] == "RUNNING"
    assert c["old ECS task STOPPED"].after == {"status": "STOPPED", "reason": REASON}
    assert demo.running_ecs() == [new["arn"]]


@pytest.mark.slow
def test_task_exit_without_restarts_is_a_failed_check(demo_factory):
    """A group whose restart policy allows no restarts (the demo job without restarts: attempts = 0): the
    allocation fails and is rescheduled. A new task runs, but not by the restart policy."""
    demo = demo_factory(restarts=False)
    report = runner.run("task-exit", make_env(demo))
    assert report.exit_code == 1
    c = checks_of(report, "task-exit")
    assert c["task exit reported by Nomad with ECS's reason"].ok
    restarted = c["task restarted by the group's restart policy"]
    assert not restarted.ok and "rescheduled" in restarted.detail
    assert c["new ECS task RUNNING on the same job version"].ok


# --- outage ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def outage_moto(tmp_path_factory):
    """A moto server for this module's outage tests only, with the demo's ECS resources."""
    log = tmp_path_factory.mktemp("outage-moto") / "moto.log"
    proc = local.start_moto(log)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in local.LOCAL_CREDENTIALS.items():
            mp.setenv(k, v)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        helper = AwsHelper(proc.url)
        yield proc, log, helper, create_demo_ecs(helper)
    proc.stop()


@pytest.fixture
def outage_demo(outage_moto, tmp_path, request):
    proc, log, aws, ecs = outage_moto
    _no_running_tasks(aws, ecs)
    demo = _factory(aws, ecs, tmp_path, request)(version=getattr(request, "param", "1.6.5"))
    local.record_endpoint(demo.cfg.state, proc, log)   # THE local endpoint of this demo, as `up --local` records it
    return demo, proc


@pytest.mark.slow
def test_outage_too_short_for_the_fingerprint_fails_and_says_why(outage_demo):
    demo, proc = outage_demo
    report = runner.run("outage", make_env(demo, outage_for=1.0))
    assert report.exit_code == 1
    turned = checks_of(report, "outage")["every client's ecs driver turned unhealthy with a reason"]
    assert not turned.ok and "stayed healthy" in turned.detail and "raise --for" in turned.detail
    assert checks_of(report, "outage")["allocation still running (through the outage)"].ok
    assert local.is_healthy(proc.url)


@pytest.mark.slow
def test_outage_needs_an_endpoint_ecsdemo_started(demo_factory):
    demo = demo_factory()            # its local.json names the session's moto server by URL only
    report = runner.run("outage", make_env(demo, outage_for=1.0))
    assert report.exit_code == 3 and report.results[0].status == "not-run"
    assert "local.json" in report.results[0].error
    assert local.is_healthy(demo.aws.url)


@pytest.mark.slow
def test_outage_with_aws_is_skipped_as_not_applicable(demo_factory):
    demo = demo_factory()
    env = make_env(demo)
    env.cfg = dataclasses.replace(demo.cfg, local=False)
    report = runner.run("outage", env)
    assert report.ok and report.exit_code == 0
    res = report.results[0]
    assert res.status == "skipped" and "with --aws" in res.skipped and not res.checks


# --- all ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("keep_drained, version", [(False, "1.4.3"), (True, "1.6.5")])
def test_all_with_aws_skips_the_outage_and_passes(demo_factory, keep_drained, version):
    """The demo in AWS mode (its ECS side is still moto here: only the mode changes): every scenario but the
    outage runs, and the skipped outage does not fail the report; nor does undrain skipped for --keep-drained.
    On 1.1-1.5 the lost-node client, back, stops its old allocation normally instead of detaching; the ECS
    task is the replacement's by then, so nothing may stop it either way."""
    demo = demo_factory(version=version)
    first = demo.running_alloc()
    env = make_env(demo, keep_drained=keep_drained)
    env.cfg = dataclasses.replace(demo.cfg, local=False)
    report = runner.run("all", env)
    assert report.ok and report.exit_code == 0, failures(report)
    skipped = {"outage"} | ({"undrain"} if keep_drained else set())
    assert [(r.name, r.status) for r in report.results] == [
        (n, "skipped" if n in skipped else "passed") for n in runner.ALL_ORDER]
    assert "with --aws" in report.results[runner.ALL_ORDER.index("outage")].skipped
    # client-restart followed lost-node: it restarted the client that lost its allocation
    lost = checks_of(report, "lost-node")["old allocation lost"].after
    restarted = checks_of(report, "client-restart")["client back with the same node ID"].after
    assert restarted["reported_id"] == lost["node_id"] and first["ID"] != lost["id"]
    assert demo.running_ecs() == []


@pytest.mark.slow
def test_all_in_the_new_order_through_the_real_plugin(outage_demo):
    """Local mode on 1.6+, with the outage: each client's driver turns unhealthy with the plugin's reason and
    the task keeps running through it (the 1.1-1.5 path is the AWS-mode test above: the outage does not
    depend on the version)."""
    demo, proc = outage_demo
    first = demo.running_alloc()
    report = runner.run("all", make_env(demo, outage_for=8.0))
    assert report.ok, failures(report)
    assert [r.name for r in report.results] == list(runner.ALL_ORDER) == [
        "drain", "undrain", "lost-node", "client-restart", "task-exit", "outage", "update", "stop"]
    doc = report.to_json()
    assert doc["ok"] and doc["exit_code"] == 0 and all(r["status"] == "passed" for r in doc["results"])
    # client-restart followed lost-node: it restarted the client that lost its allocation
    lost = checks_of(report, "lost-node")["old allocation lost"].after
    restarted = checks_of(report, "client-restart")["client back with the same node ID"].after
    assert restarted["reported_id"] == lost["node_id"]
    assert first["ID"] != lost["id"]
    c = checks_of(report, "outage")
    reasons = c["every client's ecs driver turned unhealthy with a reason"].after
    assert set(reasons) == {f"{n} ({i[:8]})" for n, i in zip(demo.names, demo.node_ids)}
    assert all("no answer" in r or "endpoint" in r for r in reasons.values()), reasons
    assert c["allocation still running (through the outage)"].ok
    assert c["every client's ecs driver healthy again"].ok
    assert c["the same ECS task RUNNING"].ok
    assert demo.running_ecs() == [] and local.is_healthy(proc.url)


@pytest.mark.slow
def test_outage_interrupted_with_ctrl_c_resumes_the_endpoint(outage_demo):
    """`ecsdemo run-scenario outage` as a user runs it, interrupted mid-outage: the endpoint answers again."""
    demo, proc = outage_demo
    demo.cfg.save()
    env = dict(os.environ, COLUMNS="200")
    env.pop("NOMAD_ADDR", None)
    cli = subprocess.Popen([sys.executable, "-m", "ecsdemo", "run-scenario", "outage", "--for", "60", "--state-dir",
                            str(demo.cfg.state_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not local.local_endpoint_status(demo.cfg.state)["paused"]:
            assert cli.poll() is None and time.monotonic() < deadline, cli.communicate()
            time.sleep(0.05)
        cli.send_signal(signal.SIGINT)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, out + err
    assert "Traceback" not in err
    assert local.is_healthy(proc.url) and not local.local_endpoint_status(demo.cfg.state)["paused"]
