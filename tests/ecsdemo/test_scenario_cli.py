"""`ecsdemo run-scenario` as a user runs it: bad input gets a clear message and a non-zero exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def test_unknown_scenario_is_a_usage_error(tmp_path):
    proc = run_cli("run-scenario", "explode", "--state-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "explode" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag,scenario", [("--revert", "drain"), ("--keep-drained", "stop"),
                                           ("--no-restart", "update"), ("--for=30", "task-exit")])
def test_option_for_another_scenario_is_refused(tmp_path, flag, scenario):
    proc = run_cli("run-scenario", scenario, flag, "--state-dir", str(tmp_path))
    flag = flag.split("=")[0]
    assert proc.returncode == 2
    assert f"{flag} does not apply to the {scenario} scenario" in proc.stderr and "Traceback" not in proc.stderr


def test_no_demo_in_the_state_dir(tmp_path):
    proc = run_cli("run-scenario", "drain", "--state-dir", str(tmp_path / "empty"))
    assert proc.returncode == 1
    assert "no demo found" in proc.stderr and "ecsdemo up" in proc.stderr


def test_timeout_must_be_positive(tmp_path):
    proc = run_cli("run-scenario", "drain", "--timeout", "0", "--state-dir", str(tmp_path))
    assert proc.returncode == 2 and "--timeout" in proc.stderr


def test_outage_length_must_be_at_least_a_second(tmp_path):
    proc = run_cli("run-scenario", "outage", "--for", "0", "--state-dir", str(tmp_path))
    assert proc.returncode == 2 and "--for" in proc.stderr and "Traceback" not in proc.stderr


def test_help_names_the_new_scenarios_and_the_order():
    proc = run_cli("run-scenario", "--help")
    text = " ".join(proc.stdout.replace("│", " ").split())   # Rich's help boxes wrap the text
    assert proc.returncode == 0
    assert "drain, undrain, lost-node, client-restart, task-exit, outage, update, stop" in text
    assert "--for" in text
