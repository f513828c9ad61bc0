"""`ecsdemo doctor`: each prerequisite as data, and the command's table, JSON and exit code."""

from __future__ import annotations

import io
import json
import os
import socket

import pytest
from rich.console import Console
from typer.testing import CliRunner

from ecsdemo import doctor, releases
from ecsdemo.cli import app
from ecsdemo.commands.lifecycle import print_checks
from ecsdemo.config import DemoConfig
from tests.support.standin_demo import MIRROR, free_ports_cfg, standin_nomad


@pytest.mark.parametrize("version,ok,words", [
    ("1.6.5", True, "Nomad 1.6.5"),
    ("1.1.0", True, "Nomad 1.1.0"),
    ("1.9.7", True, "Nomad 1.9.7"),
    ("1.10.0", False, "remote tasks were removed in Nomad 1.10"),
    ("1.11.2", False, "remote tasks were removed in Nomad 1.10"),
    ("1.0.18", False, "need Nomad >= 1.1.0"),
])
def test_nomad_version_window(tmp_path, monkeypatch, version, ok, words):
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(standin_nomad(tmp_path, version)))
    check = doctor.check_nomad()
    assert check.ok is ok and check.blocking      # a binary named by the env variable is never replaced
    assert words in check.detail
    assert (check.hint is None) is ok
    assert check.source == "env" and check.version == version
    if not ok:
        assert "ECSDEMO_NOMAD_BIN" in check.hint and "ecsdemo install nomad" in check.hint


def test_nomad_missing_or_broken(tmp_path, monkeypatch):
    monkeypatch.delenv("ECSDEMO_NOMAD_BIN", raising=False)
    monkeypatch.setenv("ECSDEMO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    check = doctor.check_nomad()
    # missing: `up` installs it, so a warning naming the fix; with --no-install it blocks
    assert not check.ok and not check.blocking and "not on PATH" in check.detail
    assert "`ecsdemo up` will install Nomad 1.9.7" in check.detail and "ecsdemo install nomad" in check.hint
    assert "ECSDEMO_NOMAD_BIN" in check.hint
    assert doctor.check_nomad(auto_install=False).blocking
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(tmp_path / "nope"))
    check = doctor.check_nomad()
    assert "is not an executable file" in check.detail and check.blocking
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(standin_nomad(tmp_path / "b", body="echo garbage; exit 0")))
    check = doctor.check_nomad()
    assert not check.ok and "gave no version (garbage)" in check.detail


@pytest.mark.skipif(not MIRROR.is_dir(), reason="no terraform provider mirror at /opt/tf-plugins")
@pytest.mark.terraform
@pytest.mark.slow
def test_terraform_and_provider_mirror(tmp_path):
    checks = doctor.check_terraform(free_ports_cfg(tmp_path))
    assert [c.name for c in checks] == ["terraform", "aws provider"]
    assert all(c.ok for c in checks), checks
    assert "local provider mirror /opt/tf-plugins" in checks[1].detail
    bad = doctor.check_terraform(DemoConfig(state_dir=tmp_path, tf_plugin_dir=tmp_path))
    assert not bad[1].ok and "has no registry.terraform.io/hashicorp/aws" in bad[1].detail


def test_terraform_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("ECSDEMO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ECSDEMO_TERRAFORM", raising=False)
    check = doctor.check_terraform(free_ports_cfg(tmp_path))[0]
    assert not check.ok and "`terraform` is not on PATH" in check.detail and "ecsdemo install terraform" in check.hint
    assert not check.blocking and doctor.check_terraform(free_ports_cfg(tmp_path), auto_install=False)[0].blocking


def test_aws_credentials(tmp_path, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert doctor.check_aws(free_ports_cfg(tmp_path, local=True)).ok
    missing = doctor.check_aws(free_ports_cfg(tmp_path))
    assert not missing.ok and "no AWS credentials" in missing.detail and "--local" in missing.hint
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "verysecretvalue")
    found = doctor.check_aws(free_ports_cfg(tmp_path))
    assert found.ok and "env" in found.detail
    assert "verysecretvalue" not in str(found) and "AKIAEXAMPLEKEY" not in str(found)


def test_ports_in_use_are_named(tmp_path):
    cfg = free_ports_cfg(tmp_path)
    assert doctor.check_ports(cfg).ok
    with socket.socket() as s:
        s.bind(("127.0.0.1", cfg.server_rpc_port))
        s.listen()
        check = doctor.check_ports(cfg)
        assert not check.ok and f"{cfg.server_rpc_port} (nomad-server)" in check.detail
        assert doctor.check_ports(cfg, ours={"nomad-server"}).ok   # our own running server: fine


def test_plugin_dir_and_state_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = free_ports_cfg(tmp_path)
    cfg.render_dir = blocker / "nomad"
    check = doctor.check_plugin_dir(cfg)
    assert not check.ok and "is not a directory" in check.detail
    cfg.render_dir = tmp_path / "nomad"
    assert doctor.check_plugin_dir(cfg).ok

    (state_check,) = doctor.check_state_dir(cfg)
    assert state_check.ok and "will be created" in state_check.detail
    cfg.state.ensure().path("config.json").write_text("{oops")
    (state_check,) = doctor.check_state_dir(cfg)
    assert not state_check.ok and state_check.blocking and "config.json is corrupt" in state_check.detail


def test_stale_agents_from_a_previous_run_are_a_warning(tmp_path):
    cfg = free_ports_cfg(tmp_path)
    cfg.state.ensure().write_json("agents.json", {"nomad-server": {
        "name": "nomad-server", "role": "server", "pid": 2 ** 22 - 7, "create_time": 1.0, "cmdline": ["nomad", "agent"],
        "log": "", "http_addr": "http://127.0.0.1:1", "config": ""}})
    checks = doctor.check_state_dir(cfg)
    stale = [c for c in checks if c.name == "previous run"]
    assert stale and not stale[0].ok and not stale[0].blocking and "nomad-server" in stale[0].detail
    assert not doctor.blocking_failures(checks)


def test_doctor_command_table_json_and_exit_code(tmp_path, monkeypatch):
    runner = CliRunner()
    cfg = free_ports_cfg(tmp_path, local=True)
    cfg.save()
    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(standin_nomad(tmp_path / "bin", "1.6.5")))
    result = runner.invoke(app, ["doctor", "--state-dir", str(cfg.state_dir)])
    if doctor.blocking_failures(doctor.run_checks(cfg)):   # e.g. no terraform on this machine
        assert result.exit_code == 1 and "block `ecsdemo up`" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "Nomad 1.6.5" in result.output and "ready for `ecsdemo up --local`" in result.output

    monkeypatch.setenv("ECSDEMO_NOMAD_BIN", str(standin_nomad(tmp_path / "bin2", "1.10.1")))
    result = runner.invoke(app, ["doctor", "--json", "--state-dir", str(cfg.state_dir)])
    assert result.exit_code == 1
    data = json.loads(result.output)
    nomad = next(c for c in data["checks"] if c["name"] == "nomad")
    assert data["ok"] is False and nomad["ok"] is False and "removed in Nomad 1.10" in nomad["detail"]
    assert set(nomad) == {"name", "ok", "detail", "hint", "blocking", "source", "version", "path"}
    assert nomad["source"] == "env" and nomad["version"] == "1.10.1"
    ports = next(c for c in data["checks"] if c["name"] == "ports")
    assert set(ports) == {"name", "ok", "detail", "hint", "blocking"}   # only binaries have a source


def test_doctor_command_bad_input(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["doctor", "--clients", "0", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--clients" in result.output
    result = runner.invoke(app, ["doctor", "--bogus"])
    assert result.exit_code == 2 and "No such option" in result.output
    (tmp_path / "config.json").write_text("[1, 2]")
    result = runner.invoke(app, ["doctor", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "config.json is corrupt" in str(result.exception)


def test_table_keeps_hints_readable_at_80_columns(tmp_path, monkeypatch):
    """The fixes go below the table as whole paragraphs: no word (or URL) is split across lines at 80
    columns, and the table itself fits."""
    checks = [
        doctor.Check("nomad", False, "`nomad` is not on PATH and ecsdemo's cache has no Nomad", blocking=False,
                     hint="run `ecsdemo install nomad` or download https://releases.hashicorp.com/nomad/1.9.7/ "
                          "and put it on PATH, or set ECSDEMO_NOMAD_BIN"),
        doctor.Check("terraform", True, "Terraform 1.11.4 at /usr/local/bin/terraform", source="PATH",
                     version="1.11.4", path="/usr/local/bin/terraform"),
        doctor.Check("aws provider", False, "the Terraform registry is not reachable and no local mirror is given",
                     hint="set ECSDEMO_TF_PLUGIN_DIR to a provider mirror (e.g. /opt/tf-plugins)"),
    ]
    buf = io.StringIO()
    print_checks(checks, out=Console(file=buf, width=80, color_system=None, highlight=False))
    lines = buf.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    header = lines[0].split()
    assert header == ["check", "source", "detail"]
    terraform = next(line for line in lines if "terraform" in line.split()[:2])
    assert "PATH" in terraform.split() and "Terraform 1.11.4" in terraform
    words = {w for line in lines for w in line.split()}
    for c in checks:
        for word in (c.hint or "").split():
            assert word in words, f"{word!r} of the hint was split: {lines}"
    first_fix = next(i for i, line in enumerate(lines) if line.startswith("fix 1 (nomad):"))
    assert all(not line.startswith("fix") for line in lines[:first_fix])
    assert any(line.startswith("fix 2 (aws provider):") for line in lines[first_fix:])
    assert "[fix 1]" in buf.getvalue() and "[fix 2]" in buf.getvalue()


def test_doctor_command_names_where_nomad_comes_from(tmp_path, monkeypatch):
    """On PATH, Nomad 1.10 is skipped (saying why) for the 1.9.7 in ecsdemo's cache; the JSON names the version."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ECSDEMO_CACHE_DIR", str(cache))
    monkeypatch.delenv("ECSDEMO_NOMAD_BIN", raising=False)
    on_path = standin_nomad(tmp_path / "path", "1.10.2")
    monkeypatch.setenv("PATH", f"{on_path.parent}:{os.environ['PATH']}")
    cached = standin_nomad(releases.install_dir("nomad", "1.9.7"), "1.9.7")
    cfg = free_ports_cfg(tmp_path, local=True)
    cfg.save()
    result = CliRunner().invoke(app, ["doctor", "--local", "--json", "--state-dir", str(cfg.state_dir)])
    nomad = next(c for c in json.loads(result.output)["checks"] if c["name"] == "nomad")
    assert nomad["ok"] and nomad["version"] == "1.9.7" and nomad["source"] == "ecsdemo cache"
    assert nomad["path"] == str(cached) and "Nomad 1.9.7" in nomad["detail"]
    assert f"skipped Nomad 1.10.2 at {on_path}: remote tasks were removed in Nomad 1.10" in nomad["detail"]
    table = CliRunner().invoke(app, ["doctor", "--local", "--state-dir", str(cfg.state_dir)], env={"COLUMNS": "80"})
    row = next(line for line in table.output.splitlines() if line.split()[1:2] == ["nomad"])
    assert "ecsdemo cache" in row and "Nomad 1.9.7" in row
