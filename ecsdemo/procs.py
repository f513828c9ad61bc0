"""Processes ecsdemo starts in the background (Nomad agents, the local AWS endpoint): who they are, and
stopping them without ever signalling a process ecsdemo did not start.

A process's identity is its pid, its start time (psutil `create_time`) and its command line, recorded when
it is started. A recorded pid whose start time or command line no longer match belongs to another program
now (the pid was reused) and is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import psutil

from ecsdemo.errors import EcsdemoError
from ecsdemo.waiting import wait_until

START_TIME_TOLERANCE = 1.0   # seconds; psutil's start time is derived from clock ticks since boot

_children: dict[int, subprocess.Popen] = {}   # processes started by this process, so they can be reaped


def track(proc: subprocess.Popen) -> float:
    """Remember a process we just started (to reap it later) and return its start time (0.0 if it is gone)."""
    _children[proc.pid] = proc
    try:
        return psutil.Process(proc.pid).create_time()
    except psutil.Error:
        return 0.0


def reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is our exited child, so it does not linger as a zombie."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is not None:
            _children.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process, settle: float = 1.0) -> list[str]:
    """The process's command line. While a process is in the middle of an exec (a wrapper script exec-ing
    the real program) /proc shows it empty for a moment: wait that out rather than disown the process."""
    try:
        return wait_until(f"pid {proc.pid} showed no command line", lambda _max_block: proc.cmdline(), bool,
                          settle, interval=0.02)
    except EcsdemoError:
        return []   # still empty after `settle` seconds: that is its command line


def same_command(actual: list[str], recorded: list[str]) -> bool:
    """The process runs what we started: its arguments end with ours (a wrapper script may exec the
    real program, changing argv[0] but passing the arguments through)."""
    args = recorded[1:]
    ends_with_ours = len(actual) >= len(args) and actual[len(actual) - len(args):] == args
    return bool(recorded) and (actual == recorded or ends_with_ours)


def find(pid: int, create_time: float, cmdline: list[str]) -> psutil.Process | None:
    """The live process the record describes, or None (gone, a zombie, or a different program now)."""
    reap(pid)
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > START_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            reap(pid)
            return None
        if not same_command(_cmdline(proc), cmdline):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None   # not ours to touch


def pid_taken(pid: int, create_time: float, cmdline: list[str]) -> bool:
    """The recorded pid is alive but belongs to another program now."""
    return psutil.pid_exists(pid) and find(pid, create_time, cmdline) is None and not is_zombie(pid)


def wait_gone(pid: int, create_time: float, cmdline: list[str], timeout: float) -> bool:
    """True once the recorded process is gone (within `timeout` seconds), False if it is still there."""
    try:
        wait_until(f"pid {pid} did not exit", lambda _max_block: find(pid, create_time, cmdline),
                   lambda proc: proc is None, timeout, interval=0.05)
    except EcsdemoError:
        return False
    return True


def terminate(pid: int, create_time: float, cmdline: list[str], grace: float) -> str:
    """SIGTERM the recorded process, then SIGKILL its process group after `grace` seconds if it is still
    the same process. Returns "stopped", "killed", "not running" or "pid reused" (left alone)."""
    proc = find(pid, create_time, cmdline)
    if proc is None:
        return "pid reused" if pid_taken(pid, create_time, cmdline) else "not running"
    with contextlib.suppress(psutil.Error):
        proc.send_signal(signal.SIGTERM)
    if wait_gone(pid, create_time, cmdline, grace):
        return "stopped"
    if find(pid, create_time, cmdline) is not None:   # still the same process: it ignored SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    wait_gone(pid, create_time, cmdline, 5.0)
    return "killed"
