"""Agent process management (ecsdemo.agents) with a stand-in `nomad` that behaves like a long-running agent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from ecsdemo import agents
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from tests.support.standin_demo import write_standin_bin


def write_agent_configs(cfg: DemoConfig) -> None:
    """Minimal rendered configs of the shape `ecsdemo render` writes (data dirs under the state dir)."""
    cfg.render_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.state_dir / "data"
    (cfg.render_dir / "server.hcl").write_text(
        f'data_dir = "{data}/server"\nbind_addr = "127.0.0.1"\nname = "nomad-server"\n'
        f'ports {{\n  http = {cfg.server_http_port}\n  rpc = {cfg.server_rpc_port}\n'
        f'  serf = {cfg.server_serf_port}\n}}\n'
        'server {\n  enabled = true\n  bootstrap_expect = 1\n}\n')
    for i, name in enumerate(cfg.client_names(), start=1):
        (cfg.render_dir / f"client-{i}.hcl").write_text(
            f'data_dir = "{data}/client-{i}"\nbind_addr = "127.0.0.1"\nname = "{name}"\n'
            f'ports {{\n  http = {cfg.client_http_port(i)}\n}}\n'
            f'client {{\n  enabled = true\n  servers = ["127.0.0.1:{cfg.server_rpc_port}"]\n}}\n')


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(write_standin_bin(tmp_path / "bin")))
    for var in ("STANDIN_IGNORE_TERM", "STANDIN_EXIT_AT_START", "STANDIN_SPAWN_PLUGIN", "STANDIN_ENV_DUMP"):
        monkeypatch.delenv(var, raising=False)
    c = DemoConfig(state_dir=tmp_path / "state", render_dir=tmp_path / "nomad", clients=2)
    c.state.ensure()
    write_agent_configs(c)
    yield c
    for name in list(agents.load(c)):   # nothing left running, whatever the test did
        agents.stop_agent(c, name, grace=0.5)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_start_all_records_each_agent_in_its_own_process_group(cfg):
    recs = agents.start_all(cfg)
    assert [r.name for r in recs] == ["nomad-server", "nomad-client-1", "nomad-client-2"]
    saved = json.loads(cfg.state.path("agents.json").read_text())
    assert set(saved) == {"nomad-server", "nomad-client-1", "nomad-client-2"}
    for rec in recs:
        assert agents.status(rec) == "running"
        assert os.getpgid(rec.pid) == rec.pid != os.getpgid(0)   # a session/group of its own
        assert rec.cmdline[-1 if rec.role == "server" else -2].startswith("-config=")
        assert saved[rec.name]["pid"] == rec.pid and saved[rec.name]["create_time"] == rec.create_time
        assert wait_for(lambda: "heartbeat" in Path(rec.log).read_text())
    client = recs[1]
    assert client.http_addr == "http://127.0.0.1:5656" and recs[2].http_addr == "http://127.0.0.1:6656"
    assert f"-plugin-dir={cfg.plugin_dir}" in client.cmdline          # the rendered config sets no plugin_dir
    assert client.data_dir == str(cfg.state_dir / "data" / "client-1")


def test_start_again_reuses_running_agents(cfg):
    first = agents.start_agent(cfg, "nomad-server")
    again = agents.start_agent(cfg, "nomad-server")
    assert again.pid == first.pid
    config = str(cfg.render_dir / "server.hcl")
    assert len([p for p in psutil.process_iter(["cmdline"]) if config in " ".join(p.info["cmdline"] or [])]) == 1


def test_stop_sends_sigterm_and_forgets_the_record(cfg):
    rec = agents.start_agent(cfg, "nomad-client-1")
    assert wait_for(lambda: "heartbeat" in Path(rec.log).read_text())
    assert agents.stop_agent(cfg, "nomad-client-1", grace=5) == "stopped"
    assert not psutil.pid_exists(rec.pid) or psutil.Process(rec.pid).status() == psutil.STATUS_ZOMBIE
    assert "SIGTERM received: shutting down" in Path(rec.log).read_text()
    assert "nomad-client-1" not in agents.load(cfg)
    assert agents.stop_agent(cfg, "nomad-client-1") == "not recorded"


@pytest.mark.slow
def test_agent_that_ignores_sigterm_is_killed_after_the_grace_period(cfg, monkeypatch):
    monkeypatch.setenv("STANDIN_IGNORE_TERM", "1")
    rec = agents.start_agent(cfg, "nomad-server")
    assert wait_for(lambda: "heartbeat" in Path(rec.log).read_text())
    t0 = time.monotonic()
    assert agents.stop_agent(cfg, "nomad-server", grace=0.7) == "killed"
    assert time.monotonic() - t0 >= 0.7
    assert agents.status(rec) == "stopped"
    assert "ignoring it" in Path(rec.log).read_text()


@pytest.mark.slow
def test_plugins_the_agent_launched_are_stopped_too(cfg, monkeypatch):
    monkeypatch.setenv("STANDIN_SPAWN_PLUGIN", "1")
    rec = agents.start_agent(cfg, "nomad-client-1")
    assert wait_for(lambda: psutil.Process(rec.pid).children())
    child = psutil.Process(rec.pid).children()[0]
    agents.stop_agent(cfg, "nomad-client-1", grace=2)
    assert wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 5)


@pytest.mark.slow
def test_orphaned_plugin_of_an_agent_killed_by_hand_is_cleaned_up(cfg, monkeypatch):
    monkeypatch.setenv("STANDIN_SPAWN_PLUGIN", "1")
    rec = agents.start_agent(cfg, "nomad-client-1")
    assert wait_for(lambda: psutil.Process(rec.pid).children())
    child = psutil.Process(rec.pid).children()[0]
    os.kill(rec.pid, signal.SIGKILL)   # by hand, behind ecsdemo's back
    assert wait_for(lambda: agents.status(rec) == "stopped")
    assert child.is_running()
    assert agents.stop_agent(cfg, "nomad-client-1", grace=1) == "not running"
    assert wait_for(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 5)


def test_a_reused_pid_is_never_signalled(cfg):
    rec = agents.start_agent(cfg, "nomad-server")
    agents.stop_agent(cfg, "nomad-server", grace=2)
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        # the record now points at a live process that ecsdemo did not start (same pid, different identity)
        fake = agents.AgentRecord(**{**rec.__dict__, "pid": other.pid})
        agents._record(cfg, fake)
        assert agents.status(fake) == "stopped"
        assert agents.stop_agent(cfg, "nomad-server", grace=0.5) == "pid reused"
        with pytest.raises(EcsdemoError, match="not running"):
            agents.kill_agent(cfg, "nomad-server")
        assert other.poll() is None   # untouched
    finally:
        other.kill()
        other.wait()


def test_kill_then_start_brings_the_same_node_back(cfg):
    rec = agents.start_agent(cfg, "nomad-client-2")
    killed = agents.kill_agent(cfg, "nomad-client-2", signal.SIGKILL)
    assert killed.pid == rec.pid and agents.status(rec) == "stopped"
    assert "nomad-client-2" in agents.load(cfg)             # kept: the scenario restarts it
    back = agents.start_agent(cfg, "nomad-client-2")
    assert back.pid != rec.pid and agents.status(back) == "running"
    assert back.config == rec.config and back.data_dir == rec.data_dir


def test_agent_that_exits_at_start_is_seen_stopped_with_its_log(cfg, monkeypatch):
    monkeypatch.setenv("STANDIN_EXIT_AT_START", "3")
    rec = agents.start_agent(cfg, "nomad-server")
    assert wait_for(lambda: agents.status(rec) == "stopped")
    assert "failing at start with code 3" in agents.log_tail(rec)


def test_local_mode_environment_carries_endpoint_and_dummy_keys_only(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "real-profile")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "real-token")
    dump = tmp_path / "env.json"
    monkeypatch.setenv("STANDIN_ENV_DUMP", str(dump))
    cfg.local = True
    cfg.state.write_json("local.json", {"url": "http://127.0.0.1:5999"})
    agents.start_agent(cfg, "nomad-client-1")
    assert wait_for(dump.exists)
    env = json.loads(dump.read_text())
    assert env["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL_ECS"] == "http://127.0.0.1:5999"
    assert env["AWS_REGION"] == cfg.region and env["AWS_ACCESS_KEY_ID"] == "<set>"
    assert "AWS_PROFILE" not in env and "AWS_SESSION_TOKEN" not in env
    stored = cfg.state.path("agents.json").read_text() + Path(agents.load(cfg)["nomad-client-1"].log).read_text()
    assert "testing" not in stored and "real-token" not in stored   # no credentials in state or logs


def test_remove_data_dirs_only_inside_the_state_dir(cfg, tmp_path):
    inside = cfg.state_dir / "data" / "client-1"
    inside.mkdir(parents=True)
    (inside / "client-id").write_text("x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    rec = agents.AgentRecord(name="x", role="client", pid=1, create_time=0, cmdline=[], log="", http_addr="",
                             config="", data_dir=str(outside))
    removed = agents.remove_data_dirs(cfg, {"x": rec})
    assert inside.resolve() in removed and not inside.exists()
    assert outside.exists()


def test_bad_records_and_configs_are_clear_errors(cfg, monkeypatch):
    cfg.state.path("agents.json").write_text("{broken")
    with pytest.raises(EcsdemoError, match="agents.json is corrupt"):
        agents.load(cfg)
    cfg.state.path("agents.json").write_text('{"nomad-server": {"pid": 1}}')
    with pytest.raises(EcsdemoError, match="invalid entry"):
        agents.load(cfg)
    cfg.state.remove("agents.json")
    with pytest.raises(EcsdemoError, match="unknown agent"):
        agents.start_agent(cfg, "nomad-client-7")
    (cfg.render_dir / "server.hcl").unlink()
    with pytest.raises(EcsdemoError, match="rendered config for nomad-server is missing"):
        agents.start_agent(cfg, "nomad-server")
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", "/nonexistent/nomad")
    with pytest.raises(EcsdemoError, match="nomad is not installed"):
        agents.start_agent(cfg, "nomad-client-1")


@pytest.mark.slow
def test_plugins_of_a_killed_then_restarted_agent_are_cleaned_up_on_stop(cfg, monkeypatch):
    monkeypatch.setenv("STANDIN_SPAWN_PLUGIN", "1")
    first = agents.start_agent(cfg, "nomad-client-1")
    assert wait_for(lambda: psutil.Process(first.pid).children())
    orphan = psutil.Process(first.pid).children()[0]
    agents.kill_agent(cfg, "nomad-client-1", signal.SIGKILL)      # the lost-node scenario
    monkeypatch.delenv("STANDIN_SPAWN_PLUGIN")
    second = agents.start_agent(cfg, "nomad-client-1")
    assert second.extra["earlier_groups"] == [{"pgid": first.pid, "create_time": first.create_time}]
    assert orphan.is_running()
    assert agents.stop_agent(cfg, "nomad-client-1", grace=2) == "stopped"
    assert wait_for(lambda: not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE, 5)



def test_an_agent_in_the_middle_of_an_exec_is_still_ours(cfg, monkeypatch):
    """/proc shows an empty command line while a wrapper script execs the real program (seen under load):
    the identity check waits that moment out instead of disowning the agent."""
    rec = agents.start_agent(cfg, "nomad-server")
    real = psutil.Process.cmdline
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        return [] if calls["n"] <= 3 else real(self)

    monkeypatch.setattr(psutil.Process, "cmdline", flaky)
    assert agents.status(rec) == "running"
    assert calls["n"] == 4
