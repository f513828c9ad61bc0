"""`ecsdemo up --local`, `run`, `status`, `logs`, `teardown` against a real Nomad (server plus two clients
running the real nomad-driver-ecs plugin) and real Terraform, in local mode.

Runs only where `nomad` 1.1-1.9 is on PATH (or ECSDEMO_NOMAD_BIN points at one) and terraform with an aws
provider is available; elsewhere it skips and says why. Ports are free ones (a saved config), never
Nomad's defaults, so it can run next to anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

from ecsdemo import agents, local
from ecsdemo.config import DemoConfig
from tests.support.standin_demo import free_port_pair
from tests.support.terraform import find_tf_mirror

_mirror, _why = find_tf_mirror()
pytestmark = [
    pytest.mark.nomad,
    pytest.mark.terraform,
    pytest.mark.slow,
    pytest.mark.skipif(_mirror is None, reason=_why),
]


def ecsdemo(state_dir, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env=dict(os.environ, ECSDEMO_TF_PLUGIN_DIR=str(_mirror)))


def test_up_run_status_logs_teardown_with_real_nomad(tmp_path):
    state_dir = tmp_path / "state"
    cfg = DemoConfig(state_dir=state_dir, render_dir=tmp_path / "nomad", local=True, clients=2,
                     tf_plugin_dir=_mirror, server_http_port=local.free_port(), server_rpc_port=local.free_port(),
                     server_serf_port=local.free_port(), client_http_base=free_port_pair(), client_http_step=1)
    cfg.save()
    try:
        up = ecsdemo(state_dir, "up", "--local")
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        assert "The demo is up" in up.stdout

        run = ecsdemo(state_dir, "run", timeout=300)
        assert run.returncode == 0, f"run failed:\n{run.stdout}\n{run.stderr}"

        status = ecsdemo(state_dir, "status", "--json", timeout=60)
        data = json.loads(status.stdout)
        assert all(n["status"] == "ready" and n["ecs_driver"] == "healthy" for n in data["nodes"])
        live = [a for a in data["allocations"] if a["live"]]
        assert len(live) == 1 and live[0]["task_arn"]
        running = [t for t in data["ecs_tasks"] if t["last_status"] == "RUNNING"]
        assert [t["arn"] for t in running] == [live[0]["task_arn"]] and not data["orphans"]

        logs = ecsdemo(state_dir, "logs", timeout=60)
        assert logs.returncode == 0 and live[0]["task_arn"] in logs.stdout, logs.stderr

        pids = [r.pid for r in agents.load(cfg).values()]
        down = ecsdemo(state_dir, "teardown")
        assert down.returncode == 0, f"teardown failed:\n{down.stdout}\n{down.stderr}"
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
        assert not (state_dir / "agents.json").exists() and not (state_dir / "local.json").exists()
    finally:
        ecsdemo(state_dir, "teardown")
