"""Rendering: every file is parsed back with python-hcl2 and its values checked against the inputs."""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest

from ecsdemo import render
from ecsdemo.config import DRIVER_NAME, GROUP_NAME, JOB_ID, PLUGIN_NAME, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import Outputs

OPTS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)


def parse(path: Path) -> dict:
    with open(path) as fh:
        return hcl2.load(fh, serialization_options=OPTS)


def outputs(revision: int = 7, endpoint: str | None = None, **over) -> Outputs:
    values = dict(demo_subnet_id="subnet-0a1b2c3d", demo_security_group_id="sg-0f9e8d7c", cluster_name="c-demo",
                  region="eu-west-3", task_definition_family="fam-demo", task_definition_revision=revision,
                  task_definition_arn=f"arn:aws:ecs:eu-west-3:123456789012:task-definition/fam-demo:{revision}",
                  endpoint=endpoint)
    values.update(over)
    return Outputs(**values)


def hcl_unescape(text: str) -> str:
    text = re.sub(r'\\([\\"tnr])', lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), text)
    return text.replace("$${", "${").replace("%%{", "%{")


def make_cfg(tmp_path, **kw) -> DemoConfig:
    return DemoConfig(state_dir=tmp_path / "st", render_dir=tmp_path / "out", **kw)


def test_render_all_local_mode_values_round_trip(tmp_path):
    cfg = make_cfg(tmp_path, local=True, clients=3, server_http_port=14646, server_rpc_port=14647,
                   server_serf_port=14648, client_http_base=15656, client_http_step=10)
    out = outputs(endpoint="http://127.0.0.1:50123")
    paths = render.render_all(cfg, out, out.endpoint)

    names = [p.name for p in paths]
    assert names == ["server.hcl", "client-1.hcl", "client-2.hcl", "client-3.hcl", "demo-ecs.nomad"]
    assert all(p.parent == (tmp_path / "out").resolve() for p in paths)

    server = parse(paths[0])
    assert server["bind_addr"] == "127.0.0.1"
    assert server["data_dir"] == str(render.server_data_dir(cfg))
    assert server["data_dir"].startswith(str(cfg.state_dir.resolve()))
    assert server["ports"][0] == {"http": 14646, "rpc": 14647, "serf": 14648}
    srv = server["server"][0]
    assert srv["enabled"] is True and srv["bootstrap_expect"] == 1
    assert srv["heartbeat_grace"] == "3s" and srv["min_heartbeat_ttl"] == "3s"

    data_dirs, http_ports = set(), set()
    for i, (path, name) in enumerate(zip(paths[1:4], cfg.client_names()), start=1):
        client = parse(path)
        assert client["name"] == name
        assert client["data_dir"] == str(cfg.state_dir.resolve() / "nomad" / f"client-{i}")
        assert client["plugin_dir"] == str(cfg.plugin_dir.resolve())
        assert client["ports"][0]["http"] == 15656 + (i - 1) * 10 == cfg.client_http_port(i)
        c = client["client"][0]
        assert c["enabled"] is True
        assert c["servers"] == ["127.0.0.1:14647"]
        assert c["max_kill_timeout"] == "3m"
        plugin = client["plugin"][0]
        assert list(plugin) == [PLUGIN_NAME]
        assert plugin[PLUGIN_NAME]["config"][0] == {"enabled": True, "cluster": "c-demo", "region": "eu-west-3",
                                                    "endpoint": "http://127.0.0.1:50123"}
        data_dirs.add(client["data_dir"])
        http_ports.add(client["ports"][0]["http"])
    assert len(data_dirs) == 3 and len(http_ports) == 3

    job = parse(paths[4])["job"][0]
    assert list(job) == [JOB_ID]
    body = job[JOB_ID]
    assert body["datacenters"] == ["dc1"]
    group = body["group"][0][GROUP_NAME]
    assert group["restart"][0] == {"attempts": 2, "interval": "10m", "delay": "5s", "mode": "fail"}
    assert group["reschedule"][0] == {"delay": "5s"}
    assert "max_client_disconnect" not in group and "disconnect" not in group
    task = group["task"][0][TASK_NAME]
    assert task["driver"] == DRIVER_NAME
    assert task["kill_timeout"] == "1m"
    assert task["resources"][0] == {"cpu": 1, "memory": 10}
    ecs = task["config"][0]["task"][0]
    assert ecs["launch_type"] == "FARGATE"
    assert ecs["task_definition"] == "fam-demo:7"
    vpc = ecs["network_configuration"][0]["aws_vpc_configuration"][0]
    assert vpc == {"assign_public_ip": "ENABLED", "security_groups": ["sg-0f9e8d7c"], "subnets": ["subnet-0a1b2c3d"]}


def test_real_aws_mode_has_no_endpoint(tmp_path):
    cfg = make_cfg(tmp_path)
    paths = render.render_all(cfg, outputs(), None)
    for path in paths[1:-1]:
        config = parse(path)["plugin"][0][PLUGIN_NAME]["config"][0]
        assert "endpoint" not in config
        assert config["cluster"] == "c-demo"
    assert "endpoint" not in paths[1].read_text()


def test_rerender_job_with_new_revision_replaces_the_sed_step(tmp_path):
    cfg = make_cfg(tmp_path)
    paths = render.render_all(cfg, outputs(revision=1), None)
    before = {p: p.read_text() for p in paths}
    job = render.render_job(cfg, outputs(revision=2))
    assert job == render.job_path(cfg)
    ecs = parse(job)["job"][0][JOB_ID]["group"][0][GROUP_NAME]["task"][0][TASK_NAME]["config"][0]["task"][0]
    assert ecs["task_definition"] == "fam-demo:2"
    for p in paths[:-1]:
        assert p.read_text() == before[p]          # only the job changed
    assert sorted(x.name for x in job.parent.iterdir()) == sorted(p.name for p in paths)   # no backup files


def test_fewer_clients_removes_stale_client_files(tmp_path):
    cfg = make_cfg(tmp_path, clients=3)
    render.render_all(cfg, outputs(), None)
    cfg.clients = 1
    render.render_all(cfg, outputs(), None)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["client-1.hcl", "demo-ecs.nomad", "server.hcl"]


@pytest.mark.parametrize("value", ['we"ird', "back\\slash", "${not.interpolated}", "%{ if x }", "tab\there"])
def test_strings_are_quoted_so_they_read_back_unchanged(tmp_path, value):
    cfg = make_cfg(tmp_path)
    paths = render.render_all(cfg, outputs(cluster_name=value, demo_subnet_id=value), None)
    config = parse(paths[1])["plugin"][0][PLUGIN_NAME]["config"][0]
    # python-hcl2 un-escapes only \" and leaves other escapes and template sequences as written:
    # apply the rest of HCL's own unescaping to compare with what Nomad will read.
    assert hcl_unescape(config["cluster"]) == value
    text = paths[1].read_text()
    assert "${" not in text.replace("$${", "") and "%{" not in text.replace("%%{", "")   # no live templates
    assert hcl_unescape(parse(paths[-1])["job"][0][JOB_ID]["group"][0][GROUP_NAME]["task"][0][TASK_NAME]["config"][0]
                        ["task"][0]["network_configuration"][0]["aws_vpc_configuration"][0]["subnets"][0]) == value


def test_missing_outputs_and_unwritable_dir_are_clear_errors(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(EcsdemoError, match="no Terraform outputs"):
        render.render_all(cfg, None, None)
    with pytest.raises(EcsdemoError, match="demo_subnet_id is empty"):
        render.render_all(cfg, outputs(demo_subnet_id=" "), None)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg.render_dir = blocker / "sub"
    with pytest.raises(EcsdemoError, match="cannot write"):
        render.render_all(cfg, outputs(), None)
