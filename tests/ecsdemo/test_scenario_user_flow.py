"""The whole user flow, as a user types it: `ecsdemo up --local`, `run`, `run-scenario all --json`,
`teardown`, every command a subprocess of the installed CLI. Real terraform (provider mirror), ecsdemo's own
local endpoint (a moto server it starts, pauses for the outage and stops), the plugin installed into the
agents' plugin_dir and launched by the client agents. Only `nomad` is a stand-in (tests/fakenomad/bin/nomad):
its client agents launch that plugin and drive every task through it, its SIGTERM restart restores the
node's allocations from its data_dir. The scenarios run with their production adapters and defaults
(the plugin's 5 s poll and 30 s fingerprint, a 60 s outage). Slow: Terraform, and the outage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from ecsdemo import local
from tests.ecsdemo.test_lifecycle_support import make_config

FAKE_NOMAD = Path(__file__).resolve().parents[1] / "fakenomad" / "bin" / "nomad"


def ecsdemo(cfg, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, ECSDEMO_NOMAD_BIN=str(FAKE_NOMAD), COLUMNS="200")
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "NOMAD_ADDR"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args, "--state-dir", str(cfg.state_dir)],
                          capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


@pytest.mark.terraform
@pytest.mark.slow
def test_up_run_all_scenarios_teardown(tmp_path, tf_mirror):
    if not FAKE_NOMAD.is_file():
        pytest.skip("the stand-in nomad executable (tests/fakenomad/bin/nomad) is missing")
    cfg = make_config(tmp_path, server_port=local.free_port(), tf_plugin_dir=tf_mirror)
    cfg.save()
    try:
        up = ecsdemo(cfg, "up", "--local")
        assert up.returncode == 0, up.stdout + up.stderr
        ran = ecsdemo(cfg, "run")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        endpoint = local.local_endpoint_status(cfg.state)

        proc = ecsdemo(cfg, "run-scenario", "all", "--json", "--timeout", "120")
        report = json.loads(proc.stdout)
        failed = [(r["scenario"], c["name"], c["detail"]) for r in report["results"] for c in r["checks"] if not c["ok"]]
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
    finally:
        down = ecsdemo(cfg, "teardown")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not psutil.pid_exists(endpoint["pid"]) or psutil.Process(endpoint["pid"]).status() == psutil.STATUS_ZOMBIE
