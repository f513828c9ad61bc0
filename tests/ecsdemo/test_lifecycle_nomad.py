"""The lifecycle workflows (start the cluster, run, teardown) against the recording fake Nomad, stand-in
agent processes and the moto server: assertions on what happened and on the requests made."""

from __future__ import annotations

import dataclasses
import re
import signal
import subprocess

import psutil
import pytest

from ecsdemo import agents, lifecycle, render
from ecsdemo.errors import EcsdemoError
from tests.support.standin_demo import fast_timing


# --- start_cluster (the Nomad part of `up`) --------------------------------------------------------
def test_start_cluster_starts_agents_and_waits_for_ready_nodes(nomad_demo):
    demo = nomad_demo
    demo.bridge_agents()
    result = lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())

    assert [n["name"] for n in result.nodes] == ["nomad-client-1", "nomad-client-2"]
    assert all(n["status"] == "ready" and n["ecs_driver"] == "healthy" and n["eligibility"] == "eligible"
               for n in result.nodes)
    assert result.ui_url == f"http://127.0.0.1:{demo.fake.port}/ui"
    recs = agents.load(demo.cfg)
    assert set(recs) == {"nomad-server", "nomad-client-1", "nomad-client-2"}
    assert all(agents.status(r) == "running" for r in recs.values())
    # what was asked of Nomad: the leader on the server, each client agent's own node ID, then the nodes
    assert demo.fake.requests_to("GET", "/v1/status/leader")
    assert len(demo.fake.requests_to("GET", "/v1/agent/self")) >= 2
    assert demo.fake.requests_to("GET", "/v1/nodes")
    assert demo.reporter.texts("done") == ["Starting the Nomad server", "Starting 2 Nomad client(s)",
                                           "Waiting for every client to be ready with a healthy ecs driver"]


def test_start_cluster_again_reuses_what_is_up(nomad_demo):
    demo = nomad_demo
    demo.bridge_agents()
    lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())
    pids = {n: r.pid for n, r in agents.load(demo.cfg).items()}
    again = lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())
    assert {n: r.pid for n, r in agents.load(demo.cfg).items()} == pids
    assert len(again.nodes) == 2
    assert sum("already running" in t for t in demo.reporter.texts("info")) == 3


@pytest.mark.slow
def test_unhealthy_driver_is_reported_with_nomads_description(nomad_demo):
    demo = nomad_demo
    demo.bridge_agents(healthy=False, description="AWS returned 0 ECS clusters, expected 1")
    timing = fast_timing()
    timing.ready = 1.5
    with pytest.raises(EcsdemoError) as err:
        lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, timing)
    assert "ecs driver: AWS returned 0 ECS clusters, expected 1" in err.value.message
    assert "teardown" in err.value.hint
    assert set(agents.load(demo.cfg)) == {"nomad-server", "nomad-client-1", "nomad-client-2"}  # recorded for teardown


@pytest.mark.slow
def test_no_leader_times_out_with_the_reason(nomad_demo):
    demo = nomad_demo
    demo.fake.set_leader(False)
    timing = fast_timing()
    timing.ready = 1.0
    with pytest.raises(EcsdemoError, match="waiting for the Nomad server to elect a leader: no cluster leader yet"):
        lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, timing)
    assert "nomad-server" in agents.load(demo.cfg)


def test_agent_that_dies_at_start_fails_fast_with_its_log(nomad_demo, monkeypatch):
    demo = nomad_demo
    monkeypatch.setenv("STANDIN_EXIT_AT_START", "1")
    with pytest.raises(EcsdemoError) as err:
        lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())
    assert re.match(r"the Nomad agent nomad-(server|client-1) exited", err.value.message)
    assert "failing at start with code 1" in err.value.message


# --- run -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_run_parses_registers_and_waits_for_the_running_ecs_task_and_reruns(demo):
    demo.add_nodes()
    result = lifecycle.run(demo.cfg, demo.reporter, fast_timing())

    assert result.node in ("nomad-client-1", "nomad-client-2")
    assert result.task_arn.startswith(f"arn:aws:ecs:us-east-1:123456789012:task/{demo.ecs_demo.cluster}/")
    assert demo.task_status(result.task_arn) == "RUNNING"
    parse = demo.fake.requests_to("POST", "/v1/jobs/parse")
    register = [r for r in demo.fake.requests if r.path == "/v1/jobs" and r.method in ("POST", "PUT")]
    assert len(parse) == 1 and len(register) == 1
    assert parse[0].body["Canonicalize"] is True and 'job "nomad-ecs-demo"' in parse[0].body["JobHCL"]
    assert register[0].body["Job"]["ID"] == "nomad-ecs-demo"
    assert demo.fake.requests.index(parse[0]) < demo.fake.requests.index(register[0])
    blocking = [r for r in demo.fake.requests_to("GET", "/v1/job/nomad-ecs-demo/allocations") if "index" in r.query]
    assert blocking and all(r.query["wait"].endswith("s") for r in blocking)

    again = lifecycle.run(demo.cfg, demo.reporter, fast_timing())   # re-run: the same allocation and task
    assert (again.alloc_id, again.task_arn) == (result.alloc_id, result.task_arn)


@pytest.mark.slow
def test_run_without_a_healthy_driver_says_why_nomad_could_not_place_it(demo):
    demo.add_nodes(healthy=False)
    with pytest.raises(EcsdemoError) as err:
        lifecycle.run(demo.cfg, demo.reporter, fast_timing())
    assert "Nomad could not place the job: missing drivers on 2 node(s) (2 node(s) evaluated)" in err.value.message
    assert "ecs driver" in err.value.hint


@pytest.mark.slow
def test_run_shows_nomads_own_error_text(demo):
    demo.add_nodes()
    demo.fake.fail_next("POST", "/v1/jobs", 500, "1 error occurred:\n\t* Task group has no tasks\n")
    with pytest.raises(EcsdemoError, match="Nomad answered 500 to /v1/jobs: 1 error occurred"):
        lifecycle.run(demo.cfg, demo.reporter, fast_timing())
    assert len([r for r in demo.fake.requests if r.path == "/v1/jobs"]) == 1


@pytest.mark.slow
def test_run_when_the_task_fails_to_start_reports_the_driver_error(demo):
    # a job whose task definition ECS does not know: the plugin's RunTask fails (unrecoverable)
    missing = dataclasses.replace(demo.ecs_demo, task_definition="no-such-family:9")
    render.render_all(demo.cfg, missing.outputs(), missing.endpoint)
    demo.add_nodes()
    with pytest.raises(EcsdemoError, match="the demo task failed to start: .*Unable to describe task definition"):
        lifecycle.run(demo.cfg, demo.reporter, fast_timing())


def test_run_without_a_rendered_job(nomad_demo):
    demo = nomad_demo
    render.job_path(demo.cfg).unlink()
    with pytest.raises(EcsdemoError, match="demo-ecs.nomad is missing"):
        lifecycle.run(demo.cfg, demo.reporter, fast_timing())


def test_run_when_nomad_is_down(nomad_demo):
    demo = nomad_demo
    demo.fake.stop()
    with pytest.raises(EcsdemoError) as err:
        lifecycle.run(demo.cfg, demo.reporter, fast_timing())
    assert "cannot reach Nomad" in err.value.message and "connection refused" in err.value.message


# --- teardown --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_teardown_stops_job_task_and_agents_and_is_idempotent(demo):
    demo.bridge_agents()
    lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())
    ran = lifecycle.run(demo.cfg, demo.reporter, fast_timing())
    pids = [r.pid for r in agents.load(demo.cfg).values()]
    data_dirs = [p for p in (demo.cfg.state_dir / "nomad").iterdir()] if (demo.cfg.state_dir / "nomad").exists() else []

    result = lifecycle.teardown(demo.cfg, demo.reporter, keep_infra=True, timing=fast_timing())

    assert result.job_stopped and ran.task_arn in result.ecs_tasks_stopped
    assert demo.task_status(ran.task_arn) == "STOPPED"
    assert demo.fake.requests_to("DELETE", "/v1/job/nomad-ecs-demo")
    assert set(result.agents.values()) == {"stopped"}
    assert not agents.load(demo.cfg)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert all(not d.exists() for d in data_dirs)
    assert demo.cfg.state.path("config.json").exists()       # --keep-infra keeps the demo's config

    deletes = len(demo.fake.requests_to("DELETE", "/v1/job/nomad-ecs-demo"))
    again = lifecycle.teardown(demo.cfg, demo.reporter, keep_infra=True, timing=fast_timing())
    assert not again.job_stopped and again.agents == {} and not again.problems
    assert len(demo.fake.requests_to("DELETE", "/v1/job/nomad-ecs-demo")) == deletes


@pytest.mark.slow
def test_teardown_after_agents_were_killed_by_hand_stops_the_left_task(demo):
    demo.bridge_agents()
    lifecycle.start_cluster(demo.cfg, demo.reporter, demo.ecs_demo.endpoint, fast_timing())
    ran = lifecycle.run(demo.cfg, demo.reporter, fast_timing())
    for name in list(agents.load(demo.cfg)):
        agents.kill_agent(demo.cfg, name, signal.SIGKILL)   # as `kill -9` by hand: the ECS task keeps running
    assert demo.task_status(ran.task_arn) == "RUNNING"

    result = lifecycle.teardown(demo.cfg, demo.reporter, keep_infra=True, timing=fast_timing())

    assert not result.job_stopped                      # no server to ask
    assert result.ecs_tasks_stopped == [ran.task_arn]  # found in ECS by its driver tags
    assert demo.task_status(ran.task_arn) == "STOPPED"
    assert set(result.agents.values()) == {"not running"}
    assert not agents.load(demo.cfg)


def test_teardown_never_signals_a_reused_pid(nomad_demo):
    demo = nomad_demo
    other = subprocess.Popen(["sleep", "30"])
    try:
        demo.cfg.state.write_json("agents.json", {"nomad-server": {
            "name": "nomad-server", "role": "server", "pid": other.pid, "create_time": 1.0,
            "cmdline": ["nomad", "agent", "-config=x"], "log": "", "http_addr": demo.cfg.server_address,
            "config": "x"}})
        result = lifecycle.teardown(demo.cfg, demo.reporter, keep_infra=True, timing=fast_timing())
        assert result.agents == {"nomad-server": "pid reused"}
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
