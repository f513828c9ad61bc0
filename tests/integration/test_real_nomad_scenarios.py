"""Every scenario against a real Nomad (1.1-1.9) and real Terraform, in local mode (a moto server).

These run only where `nomad` 1.1-1.9 is on PATH (or ECSDEMO_NOMAD_BIN points at it) and `terraform` is
installed; elsewhere they skip and say why. They drive the installed CLI exactly as a user would:
`ecsdemo up --local`, `ecsdemo run`, `ecsdemo run-scenario ... --json`, `ecsdemo teardown`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.nomad, pytest.mark.terraform, pytest.mark.slow]

STEP_TIMEOUT = 900   # up (terraform apply + agents) is the slowest step


def ecsdemo(demo_dir, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ, ECSDEMO_STATE_DIR=str(demo_dir / ".ecsdemo"))
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args], cwd=demo_dir, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def scenario(demo_dir, *args: str) -> dict:
    proc = ecsdemo(demo_dir, "run-scenario", *args, "--json", "--timeout", "180")
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"run-scenario {' '.join(args)} printed no JSON report (rc {proc.returncode}):\n"
                    f"{proc.stdout}\n{proc.stderr}")
    failed = [(r["scenario"], c["name"], c["detail"]) for r in report["results"] for c in r["checks"] if not c["ok"]]
    errors = [(r["scenario"], r["error"]) for r in report["results"] if r["error"]]
    assert proc.returncode == 0 and report["ok"], f"failed checks: {failed}; errors: {errors}\n{proc.stderr}"
    return report


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("real-demo")
    try:
        up = ecsdemo(d, "up", "--local")
        assert up.returncode == 0, f"ecsdemo up --local failed:\n{up.stdout}\n{up.stderr}"
        run = ecsdemo(d, "run")
        assert run.returncode == 0, f"ecsdemo run failed:\n{run.stdout}\n{run.stderr}"
        yield d
    finally:
        ecsdemo(d, "teardown")


def _checks(report: dict, name: str) -> dict[str, dict]:
    res = next(r for r in report["results"] if r["scenario"] == name)
    return {c["name"]: c for c in res["checks"]}


def test_drain_keeps_the_same_ecs_task(demo):
    report = scenario(demo, "drain")
    c = _checks(report, "drain")
    assert c["ECS task ARN unchanged (allocations' task handles)"]["ok"]
    assert c["ECS task never left RUNNING"]["after"] == ["RUNNING"]
    assert c["node eligible again"]["ok"]


def test_lost_node_keeps_the_same_ecs_task_and_the_client_rejoins(demo):
    report = scenario(demo, "lost-node")
    c = _checks(report, "lost-node")
    assert c["node marked down"]["after"]["status"] == "down"
    assert c["client rejoined"]["ok"] and c["lost allocation finished by the client"]["ok"]


def test_update_replaces_the_task_and_revert_goes_back(demo):
    c = _checks(scenario(demo, "update"), "update")
    assert c["old ECS task STOPPED by the driver"]["ok"]
    c = _checks(scenario(demo, "update", "--revert"), "update")
    assert c["new ECS task RUNNING on the new revision"]["ok"]


def test_stop_stops_the_ecs_task(demo):
    c = _checks(scenario(demo, "stop"), "stop")
    assert c["no ECS task of the job left running"]["ok"]


def test_all_in_the_demos_order(demo):
    run = ecsdemo(demo, "run")
    assert run.returncode == 0, run.stderr
    report = scenario(demo, "all")
    assert [r["scenario"] for r in report["results"]] == ["drain", "undrain", "lost-node", "update", "stop"]
