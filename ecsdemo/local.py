"""The embedded AWS endpoint: a moto server process on 127.0.0.1.

This module starts, configures and health-checks the process. Local mode (`ecsdemo local ...`, `up
--local`) and the test suite both use it, so tests exercise the same endpoint users get.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ecsdemo.errors import EcsdemoError

# Dummy credentials for the local endpoint; moto accepts any. They are not secrets.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

# ECS tasks stay RUNNING until something stops them, like real ones (moto's default walks every task to
# STOPPED in four describe calls). See the toolchain notes.
TASKS_STAY_RUNNING = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post_json(url: str, payload: dict | None, timeout: float = 5.0) -> None:
    data = json.dumps(payload).encode() if payload is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when a moto server answers at `url`."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def configure(url: str) -> None:
    """Make ECS tasks behave like real ones on this endpoint."""
    _post_json(f"{url}/moto-api/state-manager/set-transition", TASKS_STAY_RUNNING)


def reset(url: str) -> None:
    """Wipe every resource on the endpoint and re-apply the task behaviour."""
    _post_json(f"{url}/moto-api/reset", None)
    configure(url)


@dataclass
class MotoProcess:
    url: str
    port: int
    pid: int
    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_moto(log_path: Path, port: int | None = None, timeout: float = 30.0) -> MotoProcess:
    """Start a moto server in its own process group, wait until it answers, configure it."""
    port = port or free_port()
    env = dict(os.environ)
    env.update(LOCAL_CREDENTIALS)
    env["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
    finally:
        log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EcsdemoError(f"the local AWS endpoint (moto server) exited with code {proc.returncode} at start",
                               hint=f"see {log_path}")
        if is_healthy(url, timeout=1.0):
            configure(url)
            return MotoProcess(url=url, port=port, pid=proc.pid, proc=proc)
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise EcsdemoError(f"the local AWS endpoint did not answer on {url} within {timeout:.0f}s", hint=f"see {log_path}")
