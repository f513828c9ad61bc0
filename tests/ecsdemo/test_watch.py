"""`ecsdemo watch`: the Watcher following the fake Nomad and moto through a drain, frames rendered at 80
and 120 columns through Rich's recording console, `--once` with nothing running, and the live view
driven in tmux (start, capture the screen, Ctrl-C, the terminal restored)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types

import pytest
from rich.console import Console

from ecsdemo import local, status, views
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.local import free_port
from ecsdemo.nomad import NomadClient, task_arn
from ecsdemo.watch import Watcher, diff, task_id
from tests.fakenomad import FakeNomad, Timings
from tests.support.running_demo import demo_config, run_job
from tests.support.waiting import wait_for

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True


def render(renderable, width: int) -> str:
    con = Console(record=True, width=width, height=60, file=open(os.devnull, "w"), color_system=None)
    con.print(renderable)
    return con.export_text()


def row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


@pytest.fixture
def drained(tmp_path, nomad_cluster, ecs_demo, moto_server):
    """The demo job drained from its node while a Watcher follows: (watcher, old alloc, new alloc, ARN, fake)."""
    cfg = demo_config(tmp_path, nomad_cluster, ecs_demo, moto_server)
    api, old = run_job(nomad_cluster, ecs_demo)
    arn = task_arn(old, TASK_NAME)
    watcher = Watcher(cfg, block_wait=1, ecs_interval=0.1).start()
    try:
        api.drain(old["NodeID"], deadline_s=30)

        def settled():
            allocs = {a["ID"]: a for a in api.job_allocations(JOB_ID)}
            new = next((a for a in allocs.values() if a["ID"] != old["ID"] and a["ClientStatus"] == "running"), None)
            if new and allocs[old["ID"]]["ClientStatus"] == "complete" and task_arn(new, TASK_NAME) == arn:
                kinds = {e.kind for e in watcher.frame().events}
                return new if {"placed", "detached", "recovered"} <= kinds else None
            return None
        new = wait_for(settled, timeout=15, what="the replacement running with the same task, seen by the watcher")
        yield watcher, old, new, arn, nomad_cluster
    finally:
        watcher.close()


@pytest.mark.slow
def test_drain_frames_at_80_and_120_columns(drained):
    watcher, old, new, arn, fake = drained
    # the watcher followed Nomad with blocking queries (an index from the previous answer)
    for path in ("/v1/nodes", f"/v1/job/{JOB_ID}/allocations"):
        indexes = [r.query.get("index") for r in fake.requests_to("GET", path)]
        assert any(i not in (None, "0", ["0"]) for i in indexes), (path, indexes)
    frame = watcher.frame()
    tid = task_id(arn)

    text80 = render(views.watch_view(frame, events=20), 80)
    assert max(len(line) for line in text80.splitlines()) <= 80
    # the handed-over task is shown under the new allocation; the old one finished and is dimmed
    new_row, old_row = row(text80, new["ID"][:8]), row(text80, old["ID"][:8])
    assert new["NodeName"] in new_row and "running" in new_row and new_row.rstrip().endswith(tid)
    assert "complete" in old_row and old["NodeName"] in old_row
    ecs_row = row(text80, tid)
    assert ecs_row.split() == [tid, "RUNNING", ecs_row.split()[2], new["ID"][:8]]      # not an orphan
    assert arn not in text80 and new["ID"] not in text80          # short forms only
    # the drained node: ineligible (the drain itself is complete by now)
    node_row = row(text80, old["NodeName"])
    assert "ineligible" in node_row and "healthy" in node_row
    # the event strip tells the story with times
    flat = " ".join(text80.split())
    assert f"alloc {new['ID'][:8]} placed on {new['NodeName']} (v0) with task {tid[:8]}" in flat
    assert f"alloc {old['ID'][:8]} detached from task {tid[:8]} (now held by {new['ID'][:8]})" in flat
    assert f"alloc {new['ID'][:8]} recovered task {tid[:8]} from {old['ID'][:8]}" in flat
    assert f"node {old['NodeName']} draining" in flat and f"node {old['NodeName']} ineligible" in flat
    assert any(line[:8].count(":") == 2 for line in text80.splitlines() if "recovered" in line)

    text120 = render(views.watch_view(frame), 120)
    assert max(len(line) for line in text120.splitlines()) <= 120
    assert row(text120, new["ID"][:8]).rstrip().endswith(tid)
    wide = "".join(render(views.watch_view(frame, wide=True), 120).split())   # long values fold over lines
    assert arn in wide and new["ID"] in wide and old["ID"] in wide


@pytest.mark.slow
def test_stopping_the_job_is_no_detach(drained):
    watcher, old, new, arn, _ = drained
    tid = task_id(arn)
    NomadClient(watcher.cfg.server_address, timeout=5).stop_job(JOB_ID)
    frame = wait_for(lambda: (lambda f: f if any(e.text.endswith("-> STOPPED") for e in f.events) else None)(
        watcher.frame()), timeout=15, what="the watcher to see the ECS task STOPPED")
    texts = [e.text for e in frame.events]
    assert any(t.startswith(f"ECS task {tid[:8]} ") and t.endswith("-> STOPPED") for t in texts)
    assert any(t.startswith(f"alloc {new['ID'][:8]} run/running -> stop/") for t in texts)
    assert sum("detached" in t for t in texts) == 1                 # only the drain's
    stopped = row(render(views.watch_view(frame), 80), tid)
    assert "STOPPED" in stopped and "ORPHAN" not in stopped


@pytest.mark.slow
def test_status_layout_is_the_watch_layout(drained):
    watcher, old, new, arn, _ = drained
    data = status.collect(watcher.cfg)
    text = render(views.status_view(data), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert row(text, new["ID"][:8]).rstrip().endswith(task_id(arn))
    frame_text = render(views.watch_view(watcher.frame()), 80)
    for title in ("Nodes", "Allocations of the demo job", "ECS tasks in the cluster"):
        assert title in text and title in frame_text


def test_diff_events_from_views():
    def view(allocs, tasks, nodes=()):
        return {"nomad_error": None, "ecs_error": None, "nodes": list(nodes), "allocations": allocs,
                "ecs_tasks": tasks}

    a1 = {"id": "a" * 36, "node": "n1", "node_id": "x", "desired_status": "run", "client_status": "running",
          "job_version": 0, "task_arn": "arn:t/c/T1", "live": True}
    task = {"arn": "arn:t/c/T1", "last_status": "RUNNING", "task_definition": "d:1"}
    node = {"id": "n", "name": "n1", "status": "ready", "eligibility": "eligible", "drain": False,
            "ecs_driver": "healthy"}
    first = view([a1], [task], [node])
    assert diff(None, first, 1.0) == []                                 # the baseline has no events
    stopped = view([{**a1, "desired_status": "stop", "client_status": "complete", "live": False}],
                   [{**task, "last_status": "STOPPED"}],
                   [{**node, "ecs_driver": "ECS cluster status: INACTIVE"}])
    texts = [e.text for e in diff(first, stopped, 2.0)]
    assert "ecs driver on n1: healthy -> ECS cluster status: INACTIVE" in texts
    assert "alloc aaaaaaaa run/running -> stop/complete" in texts
    assert "ECS task T1 RUNNING -> STOPPED" in texts
    assert not any("detached" in t for t in texts)                     # a plain stop is not a detach
    down = {**first, "nomad_error": "cannot reach Nomad"}
    assert [e.kind for e in diff(first, down, 3.0)] == ["nomad"]
    assert [e.text for e in diff(down, first, 4.0)] == ["Nomad answers again"]


def test_once_with_nothing_running(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / ".ecsdemo", local=True, server_http_port=free_port())
    cfg.state.ensure()
    cfg.save()
    proc = subprocess.run([sys.executable, "-m", "ecsdemo", "watch", "--once", "--state-dir", str(cfg.state_dir)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert f"Nomad: cannot reach Nomad at http://127.0.0.1:{cfg.server_http_port}: connection refused" \
        in " ".join(proc.stdout.split())
    assert "ECS: the local AWS endpoint is not answering" in proc.stdout
    assert "no Nomad agents recorded" in proc.stdout and "Traceback" not in proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_live_view_needs_a_terminal(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / ".ecsdemo")
    cfg.save()
    proc = subprocess.run([sys.executable, "-m", "ecsdemo", "watch", "--state-dir", str(cfg.state_dir)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2 and "needs a terminal" in proc.stderr and "--once" in proc.stderr


@pytest.mark.slow
def test_watcher_sees_nomad_come_up(tmp_path, ecs_demo, moto_server):
    port = local.free_port()
    cfg = demo_config(tmp_path, types.SimpleNamespace(port=port), ecs_demo, moto_server)
    with Watcher(cfg, block_wait=1, ecs_interval=0.2) as watcher:
        first = watcher.frame()
        assert "connection refused" in first.data["nomad_error"] and first.data["ecs_error"] is None
        assert first.events == []                   # the first view's errors are shown, not news
        text = render(views.watch_view(first), 80)
        assert f"Nomad: cannot reach Nomad at http://127.0.0.1:{port}" in " ".join(text.split())
        assert "no ECS tasks running in the cluster" in text
        fake = FakeNomad(timings=Timings.fast(), port=port).start()
        try:
            fake.add_node("nomad-client-1")
            frame = wait_for(lambda: (lambda f: f if f.data["nodes"] else None)(watcher.frame()),
                             timeout=15, what="the watcher to see Nomad and its node")
            assert frame.data["nomad_error"] is None and frame.data["allocations"] == []
            assert [e.text for e in frame.events][0] == "Nomad answers again"
            # the first answer names no node as "joined": what was there before Nomad answered is unknown
            assert not any("joined" in e.text for e in frame.events[:1])
        finally:
            fake.stop()


@pytest.mark.slow
def test_no_demo_is_said_plainly(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ecsdemo", "watch", "--once", "--state-dir", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"no demo found in {tmp_path / 'none'}" in proc.stderr and "ecsdemo up" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the live view in a real terminal (tmux) ------------------------------------------------------
def tmux(sock: str, *args: str) -> str:
    return subprocess.run(["tmux", "-S", sock, *args], capture_output=True, text=True, timeout=10, check=True).stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_live_view_in_tmux_and_ctrl_c_restores_the_terminal(tmp_path, nomad_cluster, ecs_demo, moto_server):
    cfg = demo_config(tmp_path, nomad_cluster, ecs_demo, moto_server)
    _, alloc = run_job(nomad_cluster, ecs_demo)
    sock = str(tmp_path / "tmux.sock")
    script = tmp_path / "run.sh"
    # the shell survives the Ctrl-C (a trap with a handler; the child gets SIGINT's default back)
    script.write_text(f"trap : INT\ncd {tmp_path}\necho BEFORE-WATCH\n{sys.executable} -m ecsdemo watch --interval 0.5 "
                      f"--state-dir {cfg.state_dir}\necho WATCH-EXIT=$?\nexec sleep 60\n")
    env_vars = [f"{k}={v}" for k, v in os.environ.items() if k.startswith(("AWS_", "PYTHON", "PATH", "HOME"))]
    tmux(sock, "new-session", "-d", "-x", "80", "-y", "40", "-s", "w", "env", *env_vars, "TERM=xterm-256color",
         "sh", str(script))
    try:
        screen = wait_for(lambda: (lambda s: s if alloc["ID"][:8] in s and "RUNNING" in s else None)(
            tmux(sock, "capture-pane", "-p", "-t", "w")), timeout=30, what="the live view on the tmux screen")
        assert "Nodes" in screen and "nomad-client-1" in screen and "Events" in screen
        assert "BEFORE-WATCH" not in screen                    # full screen: the alternate screen is shown
        assert tmux(sock, "display", "-p", "-t", "w", "#{alternate_on}").strip() == "1"
        tmux(sock, "send-keys", "-t", "w", "C-c")
        after = wait_for(lambda: (lambda s: s if "WATCH-EXIT=" in s else None)(
            tmux(sock, "capture-pane", "-p", "-t", "w")), timeout=15, what="watch to exit after Ctrl-C")
        assert "WATCH-EXIT=0" in after and "Traceback" not in after and "interrupted" not in after
        assert "BEFORE-WATCH" in after and "Nodes" not in after   # the normal screen is back, frame gone
        assert tmux(sock, "display", "-p", "-t", "w", "#{alternate_on}").strip() == "0"
        assert tmux(sock, "display", "-p", "-t", "w", "#{cursor_flag}").strip() == "1"   # cursor shown again
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, timeout=10)
