"""The project's foundation: packaging data, the state directory, the config object, the CLI's error handling."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import typer
from rich.console import Console

from ecsdemo import cli, files, paths, waiting
from ecsdemo.config import DemoConfig
from ecsdemo.console import RichReporter
from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic
from ecsdemo.state import StateDir
from ecsdemo.waiting import wait_until


def test_share_dirs_exist():
    assert (paths.templates_dir()).is_dir()
    assert (paths.terraform_dir()).is_dir()


def test_state_json_roundtrip_and_atomic(tmp_path):
    st = StateDir(tmp_path / "s").ensure()
    st.write_json("a.json", {"x": 1})
    assert st.read_json("a.json") == {"x": 1}
    assert st.read_json("missing.json", default=7) == 7
    assert not [p for p in st.root.iterdir() if p.name.startswith(".a.json")]  # no temp file left


def test_corrupt_state_file_is_a_clear_error(tmp_path):
    st = StateDir(tmp_path).ensure()
    st.path("bad.json").write_text("{not json")
    with pytest.raises(EcsdemoError, match="bad.json is corrupt"):
        st.read_json("bad.json")


def test_state_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(EcsdemoError, match="not a directory"):
        StateDir(f).ensure()


def test_config_roundtrip_and_validation(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path, local=True, clients=3, region="eu-west-1")
    cfg.save()
    again = DemoConfig.load(cfg.state)
    assert again == cfg
    assert again.client_http_port(2) == 6656
    with pytest.raises(EcsdemoError, match="--clients"):
        DemoConfig(state_dir=tmp_path, clients=0)
    with pytest.raises(EcsdemoError, match="region"):
        DemoConfig(state_dir=tmp_path, region="us east")
    cfg.state.write_json("config.json", {"bogus": 1})
    with pytest.raises(EcsdemoError, match="unknown keys: bogus"):
        DemoConfig.load(cfg.state)


def test_cli_usage_error_is_not_a_traceback():
    r = subprocess.run([sys.executable, "-m", "ecsdemo", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "No such command" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_moto_server_fixture_keeps_tasks_running(aws):
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName="c")
    assert ecs.describe_clusters(clusters=["c"])["clusters"][0]["status"] == "ACTIVE"
    aws.reset()
    assert ecs.describe_clusters(clusters=["c"])["clusters"] == []


def test_cli_propagates_a_commands_exit_code(monkeypatch):
    @cli.app.command("exit-seven-for-test", hidden=True)
    def _seven():
        raise typer.Exit(7)

    monkeypatch.setattr(sys, "argv", ["ecsdemo", "exit-seven-for-test"])
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert exc.value.code == 7
    finally:
        cli.app.registered_commands = [c for c in cli.app.registered_commands if c.name != "exit-seven-for-test"]


def test_error_messages_are_printed_verbatim_on_one_line(monkeypatch, capsys):
    long_arn = "arn:aws:ecs:us-east-1:123456789012:task/nomad-remote-driver-demo/" + "0" * 32
    message = f"task [bold]{long_arn}[/bold] is missing from ['subnet-1']"

    def boom(*_a, **_k):
        raise EcsdemoError(message, hint="see [docs]")

    monkeypatch.setattr(cli, "app", boom)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert message in err  # Rich markup in a message is not interpreted, and long lines are not wrapped
    assert "hint: see [docs]" in err


def test_rich_reporter_shows_text_verbatim():
    buf = io.StringIO()
    rep = RichReporter(out=Console(file=buf, width=200, force_terminal=False))
    with rep.step("terraform apply [plan]"):
        rep.info("aws_vpc.demo: Creation complete after 0s [id=vpc-123]")
    rep.warn("tags [nomad:alloc_id] missing")
    out = buf.getvalue()
    assert "terraform apply [plan]" in out
    assert "[id=vpc-123]" in out
    assert "tags [nomad:alloc_id] missing" in out


def test_wait_until_lets_the_caller_word_the_timeout_from_the_last_value():
    seen = iter(range(100))

    def fetch(_max_block: float) -> int:
        return next(seen)

    with pytest.raises(EcsdemoError) as err:
        wait_until("unused", fetch, lambda v: False, timeout=0.1, interval=0.01,
                   timed_out=lambda last: EcsdemoError(f"gave up at {last}", hint="look at the logs"))
    assert err.value.message.startswith("gave up at ") and int(err.value.message.split()[-1]) > 0
    assert err.value.hint == "look at the logs"


def test_write_atomic_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.txt"
    write_atomic(target, "one\n", mode=0o755)
    assert target.read_text() == "one\n" and target.stat().st_mode & 0o777 == 0o755

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "two\n")
    assert target.read_text() == "one\n"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]   # the temporary file was removed


class Abort(EcsdemoError):
    """A caller's own error class: wait_until raises it on timeout."""


def test_wait_until_returns_value_or_names_what_did_not_happen():
    calls = []

    def fetch(block):
        calls.append(block)
        return len(calls)

    assert wait_until("x", fetch, lambda v: v >= 3, timeout=5, explain=str, interval=0.01, error=Abort) == 3
    with pytest.raises(Abort) as info:
        wait_until("no replacement allocation was placed", lambda b: "still 1", lambda v: False, timeout=0.2,
                   explain=lambda v: f"state: {v}", interval=0.05, error=Abort)
    assert str(info.value).startswith("no replacement allocation was placed within 0.2s; state: still 1")


def test_wait_until_gives_blocking_fetches_the_remaining_time():
    seen = []

    def fetch(block):
        seen.append(block)
        time.sleep(0.05)
        return None

    with pytest.raises(Abort):
        wait_until("nothing", fetch, lambda v: False, timeout=0.3, explain=lambda v: "", interval=0.01,
                   error=Abort)
    assert seen[0] > 0.25 and all(b <= 0.3 for b in seen) and seen == sorted(seen, reverse=True)


def test_observe_looks_for_the_whole_time(monkeypatch):
    now = [100.0]  # a clock only observe's sleeps move: the count does not depend on the machine's load
    monkeypatch.setattr(waiting, "time", SimpleNamespace(monotonic=lambda: now[0],
                                                         sleep=lambda s: now.__setitem__(0, now[0] + s)))
    seen = []
    n = waiting.observe(0.5, 0.125, lambda: seen.append(now[0] - 100.0))  # binary-exact steps
    assert n == len(seen) == 5 and seen == [0.0, 0.125, 0.25, 0.375, 0.5]
    seen.clear()
    n = waiting.observe(0.3, 0.125, lambda: seen.append(now[0] - 100.5))
    assert n == 4 and seen[-1] == pytest.approx(0.3)  # the last look is at the end, not one interval early
    assert waiting.observe(0, 0.125, lambda: None) == 1  # at least once
