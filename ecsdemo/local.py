"""The embedded AWS endpoint: a moto server process on 127.0.0.1.

This module starts, configures and health-checks the process. Local mode (`ecsdemo local ...`, `up
--local`) and the test suite both use it, so tests exercise the same endpoint users get.

THE local endpoint of a demo is recorded in the state directory (`local.json`: pid, port, URL, log
path, start time); `ensure_local_endpoint`, `stop_local_endpoint` and `local_endpoint_status` manage it.
The process runs in its own session, so it outlives the command that started it. `paused_local_endpoint`
makes it stop answering for a while (SIGSTOP, then SIGCONT: the outage scenario), always resuming it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

from ecsdemo import procs
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import Reporter
from ecsdemo.state import StateDir
from ecsdemo.waiting import wait_until

LOCAL_FILE = "local.json"
LOG_NAME = "local-endpoint.log"

# Dummy credentials for the local endpoint; moto accepts any. They are not secrets.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

# ECS tasks stay RUNNING until something stops them, like real ones (moto's default walks every task to
# STOPPED in four describe calls). See docs/development.md (moto as the local AWS endpoint).
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
    """True when a moto server answers at `url` (its small dashboard page; `data.json` grows to megabytes)."""
    try:
        with urllib.request.urlopen(f"{url}/moto-api/", timeout=timeout) as resp:
            return resp.status == 200 and b"moto" in resp.read(65536).lower()
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

    def answers(_max_block: float) -> bool:
        if proc.poll() is not None:
            raise EcsdemoError(f"the local AWS endpoint (moto server) exited with code {proc.returncode} at start",
                               hint=f"see {log_path}")
        return is_healthy(url, timeout=1.0)

    try:
        wait_until(f"the local AWS endpoint did not answer on {url}", answers, bool, timeout, interval=0.1,
                   hint=f"see {log_path}")
    except EcsdemoError:
        proc.kill()   # a no-op when it exited by itself
        proc.wait()
        raise
    configure(url)
    return MotoProcess(url=url, port=port, pid=proc.pid, proc=proc)


# --- THE local endpoint of a state directory -------------------------------------------------------

def _process(rec: dict):
    """The recorded moto server if it is still the process ecsdemo started (never a reused pid)."""
    if not isinstance(rec.get("create_time"), (int, float)) or not isinstance(rec.get("cmdline"), list):
        return None   # a record without the process's identity: nothing we may signal
    return procs.find(rec["pid"], rec["create_time"], rec["cmdline"])


def _read_record(state: StateDir) -> dict | None:
    data = state.read_json(LOCAL_FILE)
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("port"), int) \
            or not isinstance(data.get("url"), str):
        raise EcsdemoError(f"state file {state.path(LOCAL_FILE)} is corrupt (expected pid, port and url)",
                           hint="stop any moto server by hand if one is running, then delete that file")
    return data


def local_endpoint_status(state: StateDir) -> dict | None:
    """The recorded local endpoint with its live status, or None when none was ever started here.

    Keys: pid, port, url, log, started_at (as recorded), running (the process exists), paused (it is
    stopped by SIGSTOP), healthy (it answers).
    """
    rec = _read_record(state)
    if rec is None:
        return None
    proc = _process(rec)
    paused = proc is not None and _is_paused(proc)
    return {**rec, "running": proc is not None, "paused": paused,
            "healthy": proc is not None and not paused and is_healthy(rec["url"])}


def record_endpoint(state: StateDir, proc: MotoProcess, log_path: Path) -> None:
    """Record `proc` as THE local endpoint of `state`, with the identity that lets ecsdemo signal it later."""
    state.write_json(LOCAL_FILE, {"pid": proc.pid, "port": proc.port, "url": proc.url, "log": str(log_path),
                                  "create_time": procs.track(proc.proc), "cmdline": list(proc.proc.args),
                                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def ensure_local_endpoint(state: StateDir, reporter: Reporter) -> str:
    """Start THE local endpoint of this state directory, or reuse the running one; return its URL.

    A recorded process that is alive and answers is reused (and re-configured, which is idempotent). A
    dead or unresponsive one is cleaned up and replaced by a new server on a free port.
    """
    state.ensure()
    if resume_local_endpoint(state):
        reporter.warn("the local AWS endpoint was paused (an interrupted outage scenario?): resumed it")
    status = local_endpoint_status(state)
    if status is not None and status["healthy"]:
        configure(status["url"])
        reporter.info(f"local AWS endpoint already running at {status['url']} (pid {status['pid']})")
        return status["url"]
    if status is not None:
        if status["running"]:
            reporter.warn(f"local AWS endpoint pid {status['pid']} does not answer; replacing it")
        stop_local_endpoint(state)
    log_path = state.logs / LOG_NAME
    with reporter.step("Starting the local AWS endpoint (moto server)"):
        proc = start_moto(log_path)
        record_endpoint(state, proc, log_path)
    reporter.info(f"local AWS endpoint at {proc.url} (pid {proc.pid}, log {log_path})")
    return proc.url


def stop_local_endpoint(state: StateDir, timeout: float = 10.0) -> bool:
    """Stop the recorded local endpoint; True when a running process was stopped.

    Absent record or an already dead process is fine (returns False). The record is removed either way.
    """
    rec = _read_record(state)
    if rec is None:
        return False
    stopped = False
    if _process(rec) is not None:
        resume_local_endpoint(state)   # a stopped process would not act on SIGTERM
        stopped = procs.terminate(rec["pid"], rec["create_time"], rec["cmdline"], timeout) in ("stopped", "killed")
    state.remove(LOCAL_FILE)
    return stopped


# --- an outage: the endpoint stops answering, then answers again -------------------------------------

def _is_paused(proc) -> bool:
    try:
        return proc.status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def _resume(rec: dict) -> bool:
    """SIGCONT the recorded process if it is paused and still the one ecsdemo started; True if it was."""
    proc = _process(rec)
    if proc is None or not _is_paused(proc):
        return False
    with contextlib.suppress(psutil.Error):
        proc.resume()
    _settle(lambda: not _is_paused(proc))
    return True


def _settle(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """A signal is delivered asynchronously: give `condition()` up to `seconds` to hold, then go on anyway."""
    with contextlib.suppress(EcsdemoError):
        wait_until("the signal took no effect", lambda _max_block: condition(), bool, seconds, interval=0.01)


def resume_local_endpoint(state: StateDir) -> bool:
    """Resume the recorded endpoint if it is paused; True if it was."""
    rec = _read_record(state)
    return rec is not None and _resume(rec)


class _Signalled(BaseException):
    """SIGTERM/SIGHUP arrived while the endpoint was paused: unwind (resuming it) like Ctrl-C does."""


@contextlib.contextmanager
def _unwind_on_termination() -> Iterator[None]:
    """While the body runs, SIGTERM and SIGHUP raise (so `finally` blocks run) instead of ending the
    process at once; Ctrl-C raises KeyboardInterrupt anyway. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise _Signalled(signum)
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Signalled as exc:
        raise SystemExit(128 + exc.args[0]) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def paused_local_endpoint(state: StateDir) -> Iterator[dict]:
    """The recorded local endpoint stops answering (SIGSTOP) for the body of the `with`, then answers again
    (SIGCONT), also when the body fails, on Ctrl-C, SIGTERM or SIGHUP. Yields the record (pid, url, ...).

    Only the process ecsdemo started is signalled (pid, start time and command line must all match); an
    `ecsdemo` killed with SIGKILL meanwhile leaves it paused, and the next `ensure_local_endpoint` resumes it.
    """
    rec = _read_record(state)
    proc = _process(rec) if rec is not None else None
    if proc is None:
        raise EcsdemoError(f"no local AWS endpoint started by ecsdemo is running for {state.root}",
                           hint="start it with `ecsdemo up --local` (or `ecsdemo local start`)")
    with _unwind_on_termination():
        try:
            try:
                proc.suspend()
            except psutil.Error as exc:
                raise EcsdemoError(f"cannot pause the local AWS endpoint (pid {rec['pid']}): {exc}") from None
            _settle(lambda: _is_paused(proc))
            yield rec
        finally:
            _resume(rec)
