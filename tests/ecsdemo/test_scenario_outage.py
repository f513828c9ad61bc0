"""The outage scenario's tool: pausing THE local endpoint (SIGSTOP, then SIGCONT), always resumed.

Every test here pauses a moto server dedicated to this module (started with `ecsdemo.local.start_moto`,
recorded in a state directory as `ensure_local_endpoint` records it), never the session's shared one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from ecsdemo import local
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import RecordingReporter
from ecsdemo.state import StateDir


@pytest.fixture(scope="module")
def own_moto(tmp_path_factory):
    log = tmp_path_factory.mktemp("outage-moto") / "moto.log"
    proc = local.start_moto(log)
    yield proc, log
    os.kill(proc.pid, signal.SIGCONT)   # harmless when it runs; a stopped server would not act on SIGTERM
    proc.stop()


@pytest.fixture
def endpoint_state(own_moto, tmp_path):
    proc, log = own_moto
    state = StateDir(tmp_path / "state").ensure()
    local.record_endpoint(state, proc, log)
    yield state, proc
    assert psutil.Process(proc.pid).status() != psutil.STATUS_STOPPED, "a test left the endpoint paused"


def _status(pid: int) -> str:
    return psutil.Process(pid).status()


@pytest.mark.slow
def test_paused_endpoint_does_not_answer_and_answers_again(endpoint_state):
    state, proc = endpoint_state
    with local.paused_local_endpoint(state) as rec:
        assert rec["pid"] == proc.pid and _status(proc.pid) == psutil.STATUS_STOPPED
        assert not local.is_healthy(proc.url, timeout=0.5)
        status = local.local_endpoint_status(state)
        assert status["running"] and status["paused"] and not status["healthy"]
    assert _status(proc.pid) != psutil.STATUS_STOPPED and local.is_healthy(proc.url)
    assert local.local_endpoint_status(state)["paused"] is False


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_resumed_when_the_body_fails_or_on_ctrl_c(endpoint_state, exc):
    state, proc = endpoint_state
    with pytest.raises(type(exc)):
        with local.paused_local_endpoint(state):
            assert _status(proc.pid) == psutil.STATUS_STOPPED
            raise exc
    assert _status(proc.pid) != psutil.STATUS_STOPPED and local.is_healthy(proc.url)


def test_resumed_when_ecsdemo_gets_sigterm(endpoint_state, tmp_path):
    state, proc = endpoint_state
    script = textwrap.dedent(f"""
        import time
        from ecsdemo import local
        from ecsdemo.state import StateDir
        with local.paused_local_endpoint(StateDir({str(state.root)!r})):
            print("paused", flush=True)
            time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "paused"
        assert _status(proc.pid) == psutil.STATUS_STOPPED
        child.send_signal(signal.SIGTERM)
        assert child.wait(10) == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    assert _status(proc.pid) != psutil.STATUS_STOPPED and local.is_healthy(proc.url)


def test_only_the_process_ecsdemo_started_is_paused(endpoint_state):
    state, proc = endpoint_state
    rec = state.read_json(local.LOCAL_FILE)
    state.write_json(local.LOCAL_FILE, {**rec, "cmdline": [sys.executable, "-m", "something.else"]})
    with pytest.raises(EcsdemoError, match="no local AWS endpoint started by ecsdemo is running"):
        with local.paused_local_endpoint(state):
            pass
    assert _status(proc.pid) != psutil.STATUS_STOPPED
    state.remove(local.LOCAL_FILE)
    with pytest.raises(EcsdemoError) as info:
        with local.paused_local_endpoint(state):
            pass
    assert "ecsdemo up --local" in info.value.hint


def test_an_endpoint_left_paused_is_resumed_by_the_next_start(endpoint_state):
    # ecsdemo killed with SIGKILL mid-outage leaves the server stopped: the next `up --local` resumes it
    state, proc = endpoint_state
    os.kill(proc.pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while _status(proc.pid) != psutil.STATUS_STOPPED and time.monotonic() < deadline:
        time.sleep(0.01)
    reporter = RecordingReporter()
    assert local.ensure_local_endpoint(state, reporter) == proc.url
    assert local.is_healthy(proc.url) and state.read_json(local.LOCAL_FILE)["pid"] == proc.pid
    assert any("was paused" in t for t in reporter.texts("warn"))
