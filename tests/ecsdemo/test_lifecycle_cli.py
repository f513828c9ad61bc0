"""`ecsdemo run|status|logs|teardown|up` through Typer's runner (and the real entry point for error
output), on the fake Nomad + moto; bad input gives clear messages, no traceback, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from typer.testing import CliRunner

from ecsdemo import agents, lifecycle
from ecsdemo import status as status_view
from ecsdemo.cli import app
from ecsdemo.config import DemoConfig
from tests.support.standin_demo import fast_timing
from tests.support.waiting import wait_for

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def ecsdemo(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real console entry point, as a user runs it (stderr with Rich's line wrapping undone)."""
    res = subprocess.run([sys.executable, "-m", "ecsdemo", *args], capture_output=True, text=True,
                         timeout=timeout, env={**os.environ, **(env or {})})
    res.stderr = " ".join(res.stderr.split())
    return res


@pytest.mark.slow
def test_run_status_logs_teardown_through_the_cli(demo):
    demo.add_nodes()
    sd = str(demo.cfg.state_dir)

    ran = cli("run", "--state-dir", sd)
    assert ran.exit_code == 0, ran.output
    alloc = status_view.resolve_alloc(demo.cfg, None)
    assert f"allocation {alloc}" in ran.output and "ECS task   arn:aws:ecs:" in ran.output

    st = cli("status", "--json", "--state-dir", sd)
    assert st.exit_code == 0, st.output
    data = json.loads(st.output)
    assert [n["name"] for n in data["nodes"]] == ["nomad-client-1", "nomad-client-2"]
    (a,) = data["allocations"]
    assert a["id"] == alloc and a["client_status"] == "running" and a["task_arn"].startswith("arn:aws:ecs:")
    (t,) = data["ecs_tasks"]
    assert t["arn"] == a["task_arn"] and t["owner"] == alloc and t["orphan"] is False
    assert t["task_definition"] == demo.ecs_demo.task_definition
    assert data["orphans"] == [] and data["nomad_error"] is None and data["ecs_error"] is None

    # an ECS task no live allocation owns is flagged
    network = {"awsvpcConfiguration": {"subnets": [demo.ecs_demo.subnet],
                                       "securityGroups": [demo.ecs_demo.security_group]}}
    orphan = demo.ecs.run_task(
        cluster=demo.ecs_demo.cluster, taskDefinition=demo.ecs_demo.task_definition, launchType="FARGATE",
        startedBy="nomad-0000aaaa-0000-0000-0000-0000aa", networkConfiguration=network)["tasks"][0]["taskArn"]
    table = cli("status", "--state-dir", sd)
    assert table.exit_code == 0 and "ORPHAN" in table.output and "1 orphan ECS task(s)" in table.output
    assert json.loads(cli("status", "--json", "--state-dir", sd).output)["orphans"] == [orphan]

    wait_for(lambda: "with status RUNNING" in status_view.logs(demo.cfg)[1])
    out = cli("logs", "--state-dir", sd)
    assert out.exit_code == 0 and f"ECS task: {a['task_arn']} with status RUNNING" in out.output
    assert "with status RUNNING" in cli("logs", alloc[:8], "--state-dir", sd).output
    stream = status_view.follow(demo.cfg, alloc, idle_timeout=5)    # what `logs --follow` prints
    seen = ""
    for chunk in stream:
        seen += chunk
        if seen.count("with status RUNNING") >= 2:
            break
    stream.close()
    assert f"ECS task: {a['task_arn']} with status RUNNING" in seen
    bad = cli("logs", "zzz", "--state-dir", sd)
    assert bad.exit_code == 1 and "'zzz' is not an allocation ID" in str(bad.exception)

    down = cli("teardown", "--keep-infra", "--state-dir", sd)
    assert down.exit_code == 0, down.output
    assert "Torn down" in down.output
    assert demo.task_status(a["task_arn"]) == "STOPPED" and demo.task_status(orphan) == "STOPPED"


def test_status_when_nomad_and_ecs_are_down_still_shows_the_rest(nomad_demo):
    demo = nomad_demo
    demo.fake.stop()
    demo.cfg.state.write_json("local.json", {"pid": 1, "port": 1, "url": "http://127.0.0.1:1", "log": "",
                                             "started_at": ""})
    out = cli("status", "--json", "--state-dir", str(demo.cfg.state_dir))
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert "cannot reach Nomad" in data["nomad_error"] and data["allocations"] is None
    assert data["ecs_error"] and data["endpoint"]["healthy"] is False
    table = cli("status", "--state-dir", str(demo.cfg.state_dir))
    assert table.exit_code == 0 and "Nomad:" in table.output and "ECS:" in table.output


def test_logs_without_a_running_allocation(nomad_demo):
    out = cli("logs", "--state-dir", str(nomad_demo.cfg.state_dir))
    assert out.exit_code == 1 and "has no running allocation" in str(out.exception)


# --- bad input, through the real entry point: a message, never a traceback --------------------------
@pytest.mark.slow
def test_commands_without_a_demo(tmp_path):
    for command in ("run", "status", "logs"):
        res = ecsdemo(command, "--state-dir", str(tmp_path / "none"))
        assert res.returncode == 1, (command, res.stderr)
        assert "error: no demo found" in res.stderr and "ecsdemo up" in res.stderr
        assert "Traceback" not in res.stderr
    res = ecsdemo("teardown", "--state-dir", str(tmp_path / "none"))   # nothing to do is fine
    assert res.returncode == 0 and "Torn down" in res.stdout, res.stderr


@pytest.mark.slow
def test_corrupt_state_files(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    res = ecsdemo("status", "--state-dir", str(tmp_path))
    assert res.returncode == 1 and "config.json is corrupt" in res.stderr and "Traceback" not in res.stderr
    DemoConfig(state_dir=tmp_path, render_dir=tmp_path / "nomad").save()
    (tmp_path / "agents.json").write_text('["not", "an", "object"]')
    for command in ("status", "teardown"):
        res = ecsdemo(command, "--state-dir", str(tmp_path))
        assert res.returncode == 1 and "agents.json is corrupt" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_bad_flags_and_values(tmp_path):
    res = ecsdemo("up", "--clients", "0", "--state-dir", str(tmp_path))
    assert res.returncode == 2 and "--clients" in res.stderr
    res = ecsdemo("up", "--bogus")
    assert res.returncode == 2 and "No such option" in res.stderr
    res = ecsdemo("up", "--region", "us east 1!", "--state-dir", str(tmp_path))
    assert res.returncode == 1 and "invalid AWS region" in res.stderr and "Traceback" not in res.stderr
    res = ecsdemo("teardown", "--keep-infra", "extra-arg")
    assert res.returncode == 2
    assert not (tmp_path / "agents.json").exists()


def test_up_refuses_when_a_port_is_taken_and_starts_nothing(nomad_demo):
    demo = nomad_demo
    with socket.socket() as s:
        s.bind(("127.0.0.1", demo.cfg.client_http_port(2)))
        s.listen()
        res = ecsdemo("up", "--state-dir", str(demo.cfg.state_dir),
                      env={"ECSDEMO_TF_PLUGIN_DIR": "/opt/tf-plugins"})
    assert res.returncode == 1, res.stderr
    assert "prerequisites missing" in res.stderr and f"{demo.cfg.client_http_port(2)} (nomad-client-2)" in res.stderr
    assert "Traceback" not in res.stderr
    assert not agents.load(demo.cfg)


def test_up_refuses_nomad_1_10(nomad_demo, tmp_path):
    exe = tmp_path / "nomad110"
    exe.write_text("#!/bin/sh\necho 'Nomad v1.10.0'\n")
    exe.chmod(0o755)
    res = ecsdemo("up", "--state-dir", str(nomad_demo.cfg.state_dir), env={"ECSDEMO_NOMAD_BIN": str(exe)})
    assert res.returncode == 1 and "remote tasks were removed in Nomad 1.10" in res.stderr
    assert not agents.load(nomad_demo.cfg)


def test_up_refuses_to_switch_mode_under_a_live_demo(nomad_demo):
    res = ecsdemo("up", "--aws", "--state-dir", str(nomad_demo.cfg.state_dir))
    assert res.returncode == 1 and "cannot switch to --aws" in res.stderr and "teardown" in res.stderr


@pytest.mark.slow
def test_stale_state_dir_from_a_previous_run(nomad_demo):
    demo = nomad_demo
    agents.start_all(demo.cfg)
    recs = agents.load(demo.cfg)
    for rec in recs.values():
        os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: all(agents.status(r) == "stopped" for r in recs.values()))
    data = json.loads(cli("status", "--json", "--state-dir", str(demo.cfg.state_dir)).output)
    assert {a["name"]: a["status"] for a in data["agents"]} == {n: "stopped" for n in recs}
    res = ecsdemo("teardown", "--keep-infra", "--state-dir", str(demo.cfg.state_dir))
    assert res.returncode == 0, res.stderr
    assert not agents.load(demo.cfg)


def test_ctrl_c_while_waiting_leaves_a_state_teardown_cleans(nomad_demo):
    """SIGINT in the middle of the cluster wait (no node ever registers): the agents are recorded, and
    `teardown` stops every one of them."""
    demo = nomad_demo
    script = ("import sys\nfrom ecsdemo import lifecycle\nfrom ecsdemo.config import DemoConfig\n"
              "from ecsdemo.state import StateDir\nfrom ecsdemo.progress import RecordingReporter\n"
              "cfg = DemoConfig.load(StateDir(sys.argv[1]))\n"
              "lifecycle.start_cluster(cfg, RecordingReporter(), sys.argv[2], lifecycle.Timing(ready=60, poll=0.05))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(demo.cfg.state_dir), demo.ecs_demo.endpoint],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(agents.load(demo.cfg)) == 3, timeout=20)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    recs = agents.load(demo.cfg)
    assert all(agents.status(r) == "running" for r in recs.values())   # left running, but recorded
    result = lifecycle.teardown(demo.cfg, demo.reporter, keep_infra=True, timing=fast_timing())
    assert set(result.agents.values()) == {"stopped"}
    assert not any(psutil.pid_exists(r.pid) and psutil.Process(r.pid).status() != psutil.STATUS_ZOMBIE
                   for r in recs.values())
