"""`ecsdemo infra ...`, `ecsdemo render` and `ecsdemo local ...` run as a user runs them (a subprocess):
clean messages and exit codes, JSON for scripts. (The Terraform-backed paths are in test_terraform_local.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import hcl2
import pytest

from ecsdemo import local
from ecsdemo.config import DemoConfig
from ecsdemo.outputs import INFRA_FILE, Outputs

OPTS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def cli(*args: str, state=None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "ecsdemo", *args]
    if state is not None:
        argv += ["--state-dir", str(state.root)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "400", **(env or {})})   # no wrapped messages
    assert "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.slow
def test_local_start_status_stop(state):
    r = cli("local", "start", "--json", state=state)
    assert r.returncode == 0, r.stderr
    started = json.loads(r.stdout)
    assert started["healthy"] and started["url"] == f"http://127.0.0.1:{started['port']}"
    assert local.is_healthy(started["url"])

    r = cli("local", "start", state=state)                  # reuse
    assert r.returncode == 0 and r.stdout.strip() == started["url"]
    assert "already running" in r.stderr

    r = cli("local", "status", state=state)
    assert r.returncode == 0 and "healthy" in r.stdout and str(started["pid"]) in r.stdout

    r = cli("local", "stop", "--json", state=state)
    assert r.returncode == 0 and json.loads(r.stdout) == {"stopped": True}
    assert not local.is_healthy(started["url"])

    r = cli("local", "status", "--json", state=state)
    assert r.returncode == 1 and json.loads(r.stdout) is None
    assert "no local AWS endpoint was started" in r.stderr
    r = cli("local", "stop", state=state)
    assert r.returncode == 0 and "was not running" in r.stdout


@pytest.mark.slow
def test_outputs_and_render_need_an_apply(state):
    r = cli("infra", "outputs", "--local", state=state)
    assert r.returncode == 1 and "no Terraform outputs" in r.stderr and "ecsdemo infra apply" in r.stderr
    r = cli("render", state=state)
    assert r.returncode == 1 and "no Terraform outputs to render from" in r.stderr


def test_destroy_with_nothing_applied_needs_no_terraform(state, tmp_path):
    r = cli("infra", "destroy", "--local", "--json", state=state, env={"PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"destroyed": False}


@pytest.mark.slow
def test_bad_apply_input_is_a_clean_error(state, tmp_path):
    r = cli("infra", "apply", "--local", "--region", "mars-north-1", state=state)
    assert r.returncode == 1 and "unknown AWS region 'mars-north-1'" in r.stderr
    bad = tmp_path / "td.json"
    bad.write_text("[{")
    r = cli("infra", "apply", "--local", "--task-definition", str(bad), state=state)
    assert r.returncode == 1 and "is not valid JSON" in r.stderr
    r = cli("infra", "apply", "--local", "--vpc-cidr", "10.0.0.0/8", state=state)
    assert r.returncode == 1 and "/16 to /28" in r.stderr
    assert state.read_json(local.LOCAL_FILE) is None         # nothing was started
    assert state.read_json(INFRA_FILE) is None


@pytest.mark.slow
def test_outputs_json_and_render_from_the_state_dir(state, tmp_path):
    out = Outputs(demo_subnet_id="subnet-77", demo_security_group_id="sg-88", cluster_name="cl", region="us-west-2",
                  task_definition_family="fam", task_definition_revision=4,
                  task_definition_arn="arn:aws:ecs:us-west-2:1:task-definition/fam:4", endpoint="http://127.0.0.1:9",
                  task_definition="updated")
    DemoConfig(state_dir=state.root, local=True, region="us-west-2").save()
    state.write_json(INFRA_FILE, {"mode": "local", "task_definition": "updated", "outputs": out.to_json()})

    r = cli("infra", "outputs", "--json", state=state)
    assert r.returncode == 0 and json.loads(r.stdout) == out.to_json()
    r = cli("infra", "outputs", state=state)
    assert r.returncode == 0 and "subnet-77" in r.stdout and "fam" in r.stdout

    rendered = tmp_path / "rendered"
    r = cli("render", "--render-dir", str(rendered), "--clients", "3", "--json", state=state)
    assert r.returncode == 0, r.stderr
    paths = json.loads(r.stdout)
    assert [os.path.basename(p) for p in paths] == ["server.hcl", "client-1.hcl", "client-2.hcl", "client-3.hcl",
                                                    "demo-ecs.nomad"]
    with open(rendered / "client-3.hcl") as fh:
        plugin = hcl2.load(fh, serialization_options=OPTS)["plugin"][0]["nomad-driver-ecs"]["config"][0]
    assert plugin == {"enabled": True, "cluster": "cl", "region": "us-west-2", "endpoint": "http://127.0.0.1:9"}
    with open(rendered / "demo-ecs.nomad") as fh:
        job = hcl2.load(fh, serialization_options=OPTS)
    task = job["job"][0]["nomad-ecs-demo"]["group"][0]["ecs-remote-task-demo"]["task"][0]["http-server"]
    assert task["config"][0]["task"][0]["task_definition"] == "fam:4"
    saved = DemoConfig.load(state)                              # the choices are remembered for later commands
    assert saved.clients == 3 and saved.render_dir == rendered


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_apply_refuses_to_switch_mode_under_live_local_infrastructure(state, tmp_path):
    """`infra apply` resolves its config like `up`: --aws over a live local demo is refused before anything runs."""
    out = Outputs(demo_subnet_id="subnet-1", demo_security_group_id="sg-1", cluster_name="cl", region="us-east-1",
                  task_definition_family="fam", task_definition_revision=1,
                  task_definition_arn="arn:aws:ecs:us-east-1:1:task-definition/fam:1", endpoint="http://127.0.0.1:9",
                  task_definition="base")
    DemoConfig(state_dir=state.root, local=True).save()
    state.write_json(INFRA_FILE, {"mode": "local", "task_definition": "base", "outputs": out.to_json()})
    before = _files(state.root)

    r = cli("infra", "apply", "--aws", state=state, env={"PATH": str(tmp_path)})   # no terraform to run
    assert r.returncode == 1
    assert "runs locally; cannot switch to --aws under it" in r.stderr and "ecsdemo teardown" in r.stderr
    assert _files(state.root) == before                        # nothing changed: no config saved, nothing applied
    assert DemoConfig.load(state).local is True
