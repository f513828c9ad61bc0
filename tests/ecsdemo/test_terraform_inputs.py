"""Bad input to `infra apply` is caught before Terraform runs, with a clear error and an untouched state dir.

Also: the shipped task definitions, the generated CLI config, and Terraform's own error text reaching the
user (the real binary on a broken configuration; no provider needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import hcl2
import pytest

from ecsdemo import infra, local, terraform
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import INFRA_FILE
from ecsdemo.paths import terraform_dir
from ecsdemo.progress import RecordingReporter
from ecsdemo.terraform import state_has_resources


def test_shipped_task_definitions_are_valid_and_differ_in_the_page():
    base = infra.load_task_definition(infra.task_definition_path("base"))
    updated = infra.load_task_definition(infra.task_definition_path("updated"))
    assert [c["name"] for c in base] == [c["name"] for c in updated]
    for b, u in zip(base, updated):
        assert isinstance(b["memory"], int) and b["memory"] == u["memory"]     # container-level memory
        assert b["image"] == u["image"] and b["portMappings"] == u["portMappings"]
        assert b["command"] != u["command"] and "Updated" in u["command"][0] and "Updated" not in b["command"][0]
        assert {k for k in b if b[k] != u[k]} == {"command"}


BAD_FILES = [
    ("{not json", "is not valid JSON"),
    ('{"name": "x"}', "non-empty JSON array"),
    ("[]", "non-empty JSON array"),
    ('["x"]', "container #1 is not a JSON object"),
    ('[{"image": "i", "memory": 64}]', "needs a `name`"),
    ('[{"name": "a b", "image": "i", "memory": 64}]', "needs a `name`"),
    ('[{"name": "a", "memory": 64}]', "needs an `image`"),
    ('[{"name": "a", "image": "i"}]', "`memory` or `memoryReservation`"),
    ('[{"name": "a", "image": "i", "memory": true}]', "`memory` or `memoryReservation`"),
    ('[{"name": "a", "image": "i", "memory": 64}, {"name": "a", "image": "i", "memory": 64}]', "repeats"),
    ('[{"name": "a", "image": "i", "memory": 400}, {"name": "b", "image": "i", "memoryReservation": 200}]',
     "ask for 600 MiB"),
    ('[{"name": "a", "image": "i", "memory": 64, "essential": false}]', "must be essential"),
]


@pytest.mark.parametrize("content,message", BAD_FILES)
def test_invalid_task_definition_files(tmp_path, content, message):
    f = tmp_path / "td.json"
    f.write_text(content)
    with pytest.raises(EcsdemoError, match=message):
        infra.load_task_definition(f)


def test_unreadable_task_definition_file(tmp_path):
    with pytest.raises(EcsdemoError, match="does not exist"):
        infra.load_task_definition(tmp_path / "missing.json")
    with pytest.raises(EcsdemoError, match="cannot read task definition file"):
        infra.load_task_definition(tmp_path)          # a directory


def _untouched(cfg: DemoConfig) -> None:
    """Nothing of an apply happened: no infra record, no Terraform working copy, no local endpoint."""
    assert cfg.state.read_json(INFRA_FILE) is None
    assert not cfg.state.path(infra.WORKDIR_NAME).exists()
    assert cfg.state.read_json(local.LOCAL_FILE) is None


@pytest.mark.parametrize("change,message", [
    ({"region": "mars-north-1"}, "unknown AWS region 'mars-north-1'"),
    ({"name": "has space"}, "invalid demo name"),
    ({"name": "x" * 65}, "invalid demo name"),
    ({"vpc_cidr": "10.0.0.0/33"}, "invalid VPC CIDR"),
    ({"vpc_cidr": "10.0.0.1/24"}, "invalid VPC CIDR"),
    ({"vpc_cidr": "10.0.0.0/8"}, "prefix length from /16 to /28"),
    ({"vpc_cidr": "fd00::/64"}, "must be IPv4"),
])
def test_bad_config_is_refused_before_anything_runs(tmp_path, change, message):
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True, **change)
    with pytest.raises(EcsdemoError, match=message):
        infra.apply(cfg, RecordingReporter())
    _untouched(cfg)


def test_bad_task_definition_is_refused_before_anything_runs(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True)
    bad = tmp_path / "td.json"
    bad.write_text('[{"name": "a", "image": "i"}]')
    with pytest.raises(EcsdemoError, match="memory"):
        infra.apply(cfg, RecordingReporter(), task_definition=str(bad))
    _untouched(cfg)
    with pytest.raises(EcsdemoError, match="does not exist"):
        infra.apply(cfg, RecordingReporter(), task_definition="upgraded")   # neither base/updated nor a file
    _untouched(cfg)


def test_missing_terraform_binary_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("ECSDEMO_TERRAFORM", raising=False)
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True)
    with pytest.raises(EcsdemoError) as err:
        infra.apply(cfg, RecordingReporter())
    assert "terraform was not found on PATH" in err.value.message
    assert "developer.hashicorp.com/terraform/install" in err.value.hint
    _untouched(cfg)

    monkeypatch.setenv("ECSDEMO_TERRAFORM", str(tmp_path / "nope"))
    with pytest.raises(EcsdemoError, match="ECSDEMO_TERRAFORM=.* is not an executable file"):
        infra.apply(cfg, RecordingReporter())
    _untouched(cfg)


def test_too_old_terraform_is_refused(tmp_path, monkeypatch):
    old = tmp_path / "terraform-0.12"
    old.write_text('#!/bin/sh\necho \'{"terraform_version": "0.12.31"}\'\n')
    old.chmod(0o755)
    monkeypatch.setenv("ECSDEMO_TERRAFORM", str(old))
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True)
    with pytest.raises(EcsdemoError, match="is Terraform 0.12.31; ecsdemo needs 1.0 or newer"):
        infra.apply(cfg, RecordingReporter())
    assert cfg.state.read_json(INFRA_FILE) is None
    assert cfg.state.read_json(local.LOCAL_FILE) is None


@pytest.mark.terraform
@pytest.mark.slow
def test_mirror_that_is_not_a_directory(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True, tf_plugin_dir=tmp_path / "no-mirror")
    with pytest.raises(EcsdemoError, match="provider mirror .*no-mirror is not a directory"):
        infra.apply(cfg, RecordingReporter())
    assert cfg.state.read_json(local.LOCAL_FILE) is None


def test_cli_config_names_the_mirror_or_nothing(tmp_path):
    text = terraform.cli_config_text(tmp_path / "mirror dir")
    assert "filesystem_mirror" in text and json.dumps(str(tmp_path / "mirror dir")) in text
    assert "direct" not in text                        # the registry is never consulted
    assert "provider_installation" not in terraform.cli_config_text(None)


@pytest.mark.terraform
@pytest.mark.slow
def test_terraforms_own_error_text_reaches_the_user(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text('resource "aws_vpc" "x" {\n  cidr_block = \n}\n')
    log = tmp_path / "logs" / "terraform.log"
    runner = terraform.TerraformRunner(workdir=work, log_path=log)
    with pytest.raises(EcsdemoError) as err:
        runner.init()
    assert "terraform init failed" in err.value.message
    assert "Invalid expression" in err.value.message      # Terraform's words, not ours
    assert str(log) in err.value.hint
    logged = log.read_text()
    assert "Invalid expression" in logged and "=== exit code 1" in logged
    # The CLI config Terraform got is ours, not the environment's missing file.
    assert "Unable to open CLI configuration file" not in logged


def test_shipped_module_declares_what_the_issue_asks(tmp_path):
    opts = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
    merged: dict[str, list] = {}
    for tf in sorted(terraform_dir().glob("*.tf")):
        with open(tf) as fh:
            for key, value in hcl2.load(fh, serialization_options=opts).items():
                merged.setdefault(key, []).extend(value)
    variables = {name for block in merged["variable"] for name in block}
    assert variables == {"region", "name", "vpc_cidr_block", "ecs_task_definition_file"}
    outputs = {name for block in merged["output"] for name in block}
    assert outputs == {"demo_subnet_id", "demo_security_group_id", "cluster_name", "region", "task_definition_family",
                       "task_definition_revision", "task_definition_arn"}
    resources = {(rtype, name) for block in merged["resource"] for rtype, body in block.items() for name in body}
    assert {r for r, _ in resources} == {"aws_ecs_cluster", "aws_ecs_task_definition", "aws_vpc", "aws_subnet",
                                         "aws_internet_gateway", "aws_route_table", "aws_route",
                                         "aws_route_table_association", "aws_security_group"}
    tf_block = merged["terraform"][0]
    assert tf_block["required_version"] == ">= 1.0"
    assert tf_block["required_providers"][0]["aws"]["version"].startswith(">= 5.0")
    assert not (terraform_dir() / infra.OVERRIDE_FILE).exists()   # the override is only ever generated
    assert os.path.basename(infra.TASK_DEFINITIONS["base"]) == "base-demo.json"
    assert (Path(terraform_dir()) / "files" / "updated-demo.json").is_file()


def test_local_override_is_terraform_json_and_replaces_the_old_hcl_one(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / infra.LEGACY_OVERRIDE_FILE).write_text('provider "aws" {}\n')    # what an older ecsdemo wrote
    url = "http://127.0.0.1:5000"
    infra._write_override(workdir, url)
    assert infra.OVERRIDE_FILE.endswith("_override.tf.json")                      # Terraform's override naming
    assert not (workdir / infra.LEGACY_OVERRIDE_FILE).exists()                    # Terraform would read both
    doc = json.loads((workdir / infra.OVERRIDE_FILE).read_text())
    assert set(doc) == {"//", "provider"}                                         # "//" is a comment in Terraform JSON
    provider = doc["provider"]["aws"]
    assert provider["endpoints"] == {"ec2": url, "ecs": url, "iam": url, "sts": url}
    assert (provider["access_key"], provider["secret_key"]) == (local.LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                                                local.LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    assert provider["skip_credentials_validation"] is True and provider["skip_metadata_api_check"] is True
    assert provider["skip_requesting_account_id"] is True and provider["max_retries"] == 2

    (workdir / infra.LEGACY_OVERRIDE_FILE).write_text('provider "aws" {}\n')
    infra._write_override(workdir, None)                                          # real AWS: no override at all
    assert list(workdir.iterdir()) == []


def _applied_state(cfg: DemoConfig, mode: str, region: str) -> None:
    """A state directory that says infrastructure exists (as an earlier apply leaves it)."""
    work = cfg.state.ensure().path(infra.WORKDIR_NAME)
    work.mkdir()
    (work / "terraform.tfstate").write_text(json.dumps({"version": 4, "resources": [{"type": "aws_vpc"}]}))
    (work / infra.TFVARS_FILE).write_text(json.dumps({"region": region}))
    cfg.state.write_json(INFRA_FILE, {"mode": mode, "outputs": None})


def test_switching_mode_or_region_under_live_infrastructure_is_refused(tmp_path):
    cfg = DemoConfig(state_dir=tmp_path / "st", local=True)
    assert not infra.has_infrastructure(cfg)
    _applied_state(cfg, "aws", "us-east-1")
    assert infra.has_infrastructure(cfg)
    with pytest.raises(EcsdemoError, match="applied in aws mode") as err:
        infra.apply(cfg, RecordingReporter())
    assert "infra destroy" in err.value.hint
    assert cfg.state.read_json(local.LOCAL_FILE) is None                 # nothing started

    cfg = DemoConfig(state_dir=tmp_path / "st2", region="eu-west-1")
    _applied_state(cfg, "aws", "us-east-1")
    with pytest.raises(EcsdemoError, match="exists in region us-east-1, not eu-west-1"):
        infra.apply(cfg, RecordingReporter())
    assert cfg.state.read_json(INFRA_FILE) == {"mode": "aws", "outputs": None}   # untouched


def test_destroy_after_the_local_endpoint_was_replaced_needs_no_terraform(tmp_path, monkeypatch, state):
    """The resources lived in an endpoint that is gone (dead, or replaced by a new empty one)."""
    cfg = DemoConfig(state_dir=state.root, local=True)
    _applied_state(cfg, "local", "us-east-1")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))           # no terraform reachable
    rep = RecordingReporter()
    assert infra.destroy(cfg, rep) is False                            # endpoint dead
    assert "its resources are already gone" in rep.texts("info")[0]
    assert not state_has_resources(state.path(infra.WORKDIR_NAME))

    state.path(infra.WORKDIR_NAME, "terraform.tfstate").write_text(json.dumps({"resources": [{"type": "aws_vpc"}]}))
    local.ensure_local_endpoint(state, RecordingReporter())            # a new, empty endpoint
    state.write_json(INFRA_FILE, {"mode": "local", "outputs": None, "endpoint_id": "123@http://old"})
    rep = RecordingReporter()
    assert infra.destroy(cfg, rep) is False
    assert "its resources are already gone" in rep.texts("info")[0]
    assert state.read_json(INFRA_FILE) is None


@pytest.mark.terraform
@pytest.mark.slow
def test_corrupt_terraform_state_is_named(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "terraform.tfstate").write_text("{truncated")
    with pytest.raises(EcsdemoError, match=r"state file .*terraform.tfstate cannot be read"):
        terraform.TerraformRunner(workdir=work, log_path=tmp_path / "tf.log")
    with pytest.raises(EcsdemoError, match=r"state file .*terraform.tfstate cannot be read"):
        state_has_resources(work)        # so destroy never says "nothing to destroy" over it
