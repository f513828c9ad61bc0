"""`ecsdemo driver install|check|serve` and the functions behind them (ecsdemo.plugininstall, ecsdemo.drivercheck)."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys

import hcl2
import pytest

from ecsdemo import drivercheck, pluginclient, plugininstall, render
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import Outputs
from ecsdemo.progress import RecordingReporter
from ecsdemo.state import StateDir
from tests.support.plugin_host import PluginHost


def run_cli(*args: str, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ecsdemo", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def test_install_writes_an_executable_launcher_bound_to_this_python(tmp_path):
    target = plugininstall.install_launcher(tmp_path / "plugins")
    assert target == tmp_path / "plugins" / "nomad-driver-ecs"
    assert stat.S_IMODE(target.stat().st_mode) & 0o111 == 0o111
    text = target.read_text()
    assert text.startswith("#!/bin/sh\n") and sys.executable in text and "-m driver.main" in text
    assert plugininstall.install_launcher(tmp_path / "plugins") == target  # idempotent
    assert target.read_text() == text


def test_install_refuses_to_overwrite_a_different_file(tmp_path):
    other = tmp_path / "nomad-driver-ecs"
    other.write_text("#!/bin/sh\necho someone else's plugin\n")
    with pytest.raises(EcsdemoError, match="not overwriting"):
        plugininstall.install_launcher(tmp_path)
    assert "someone else" in other.read_text()


def test_plugin_stanza_is_valid_hcl_with_the_settings():
    text = render.plugin_stanza("c1", "eu-west-1", endpoint="http://127.0.0.1:5000", poll_interval="2s")
    parsed = hcl2.load(io.StringIO(text), serialization_options=hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False))
    config = parsed["plugin"][0]["nomad-driver-ecs"]["config"][0]
    assert config == {"enabled": True, "cluster": "c1", "region": "eu-west-1", "endpoint": "http://127.0.0.1:5000",
                      "poll_interval": "2s"}


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:50123", None])
def test_the_client_config_holds_the_stanza_driver_install_prints(tmp_path, endpoint):
    """One template (templates/plugin.hcl.j2) for the plugin block: the rendered client config holds exactly
    the text `ecsdemo driver install` prints for the same cluster, region and endpoint."""
    cfg = DemoConfig(state_dir=tmp_path / "st", render_dir=tmp_path / "nomad", clients=1, local=endpoint is not None)
    out = Outputs(demo_subnet_id="subnet-1", demo_security_group_id="sg-1", cluster_name="c-demo", region="eu-west-3",
                  task_definition_family="fam", task_definition_revision=7,
                  task_definition_arn="arn:aws:ecs:eu-west-3:1:task-definition/fam:7", endpoint=endpoint,
                  task_definition="base")
    render.render_all(cfg, out, endpoint)
    client = render.client_config_path(cfg, 1).read_text()
    args = ["driver", "install", "--plugin-dir", str(tmp_path / "plugins"), "--state-dir", str(tmp_path / "st"),
            "--cluster", "c-demo", "--region", "eu-west-3"] + (["--endpoint", endpoint] if endpoint else [])
    res = run_cli(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    printed = res.stdout[res.stdout.index('plugin "nomad-driver-ecs" {'):].removesuffix("\n")
    assert printed == render.plugin_stanza("c-demo", "eu-west-3", endpoint)
    assert client.endswith("\n" + printed)


@pytest.mark.slow
def test_installed_launcher_passes_the_check_against_moto(tmp_path, aws):
    aws.client("ecs").create_cluster(clusterName="checked")
    launcher = plugininstall.install_launcher(tmp_path / "plugins")
    reporter = RecordingReporter()
    report = drivercheck.check_plugin(launcher, {"enabled": True, "cluster": "checked", "region": aws.region,
                                                 "endpoint": aws.url}, reporter,
                                      env=dict(os.environ, AWS_EC2_METADATA_DISABLED="true"),
                                      log_path=tmp_path / "plugin.log")
    assert report.ok, report.to_json()
    assert [s.name for s in report.steps] == ["launch and handshake", "plugin info", "schemas", "SetConfig",
                                              "capabilities", "fingerprint", "shutdown"]
    assert report.health == "healthy"
    assert reporter.texts("done") == [s.name for s in report.steps]
    assert "1|2|unix|" in report.steps[0].detail
    assert json.loads((tmp_path / "plugin.log").read_text().splitlines()[0])["@level"]


@pytest.mark.slow
def test_check_reports_an_unhealthy_driver_and_a_bad_config(tmp_path, aws):
    launcher = plugininstall.install_launcher(tmp_path / "plugins")
    env = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    report = drivercheck.check_plugin(launcher, {"enabled": True, "cluster": "absent", "region": aws.region,
                                                 "endpoint": aws.url}, RecordingReporter(), env=env)
    assert not report.ok
    failed = [s for s in report.steps if not s.ok]
    assert [s.name for s in failed] == ["fingerprint"] and "not found" in failed[0].detail
    assert report.steps[-1].name == "shutdown" and report.steps[-1].ok

    bad = drivercheck.check_plugin(launcher, {"enabled": True, "cluster": "c", "poll_interval": "often"},
                                   RecordingReporter(), env=env)
    assert [(s.name, s.ok) for s in bad.steps][-1] == ("SetConfig", False)
    assert "poll_interval" in bad.steps[-1].detail and "'often'" in bad.steps[-1].detail


def test_check_of_something_that_is_not_a_plugin(tmp_path):
    fake = tmp_path / "nomad-driver-ecs"
    fake.write_text("#!/bin/sh\necho not a plugin >&2\nexit 3\n")
    fake.chmod(0o755)
    report = drivercheck.check_plugin(fake, {"enabled": False}, RecordingReporter())
    assert not report.ok and len(report.steps) == 1
    assert "exited with code 3" in report.steps[0].detail and "not a plugin" in report.steps[0].detail


@pytest.mark.slow
def test_cli_install_then_check_local(tmp_path):
    plugins = tmp_path / "plugins"
    res = run_cli("driver", "install", "--plugin-dir", str(plugins), "--state-dir", str(tmp_path / "st"),
                  "--cluster", "demo-x", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert 'plugin "nomad-driver-ecs"' in res.stdout and 'cluster = "demo-x"' in res.stdout
    res = run_cli("driver", "check", "--plugin-dir", str(plugins), "--local", "--json", "--state-dir",
                  str(tmp_path / "st"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    report = json.loads(res.stdout)
    assert report["ok"] is True and report["health"] == "healthy"
    assert all(step["ok"] for step in report["steps"])


def test_cli_check_without_a_plugin_is_a_clear_error(tmp_path):
    res = run_cli("driver", "check", "--plugin-dir", str(tmp_path), "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    assert res.returncode == 1
    assert "no plugin at" in res.stderr and "ecsdemo driver install" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_install_refusal_is_a_clear_error(tmp_path):
    (tmp_path / "nomad-driver-ecs").write_text("other")
    res = run_cli("driver", "install", "--plugin-dir", str(tmp_path), "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    assert res.returncode == 1 and "not overwriting" in res.stderr and "Traceback" not in res.stderr


def test_cli_serve_needs_the_cookie(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != pluginclient.MAGIC_COOKIE_KEY}
    res = subprocess.run([sys.executable, "-m", "ecsdemo", "driver", "serve"], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and "not meant to be executed directly" in res.stderr and res.stdout == ""


def test_cli_serve_speaks_go_plugin(tmp_path):
    host = PluginHost(tmp_path, argv=[sys.executable, "-m", "ecsdemo", "driver", "serve"])
    try:
        host.start(timeout=60)
        assert host.plugin_info().name == "ecs"
        assert host.shutdown() == 0
        assert host.extra_stdout == b""
    finally:
        host.kill()


@pytest.mark.slow
def test_cli_check_uses_the_saved_local_demo_endpoint(tmp_path, aws):
    state = StateDir(tmp_path / "st").ensure()
    DemoConfig(state_dir=state.root, local=True, name="saved-demo", render_dir=tmp_path / "nomad").save()
    state.write_json("local.json", {"url": aws.url})
    aws.client("ecs").create_cluster(clusterName="saved-demo")
    plugininstall.install_launcher(tmp_path / "nomad" / "plugins")
    res = run_cli("driver", "check", "--json", "--state-dir", str(state.root), cwd=tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout
    report = json.loads(res.stdout)
    assert report["health"] == "healthy"
    assert any("saved-demo" in step["detail"] for step in report["steps"] if step["name"] == "fingerprint")
