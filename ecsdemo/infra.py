"""Workflow: build, inspect and remove the demo's AWS side with Terraform (real AWS or the local endpoint).

Layout in the state directory:
- `terraform/`: Terraform's working copy of the shipped module, its `.terraform/` (reused, so re-init is
  skipped), `terraform.tfstate`, `terraform.tfvars.json` (the variables of the last apply), the chosen
  container definitions as `task-definition.json`, and in local mode only a generated provider override
  `local_override.tf.json`;
- `infra.json`: mode (`local` or `aws`), the chosen task definition and the last outputs (the `Outputs`
  type and the reading of this record live in `ecsdemo.outputs`, so adapters can read it too);
- `logs/terraform.log`: the full output of every terraform command.

Task definition choice: `apply(..., task_definition="base" | "updated" | <path>)` picks the container
definitions; `None` (the default) keeps the one of the previous apply (`base` at first). So a plain
re-apply after the update scenario does not silently revert the task definition. `destroy` forgets it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import boto3

from ecsdemo import local
from ecsdemo.config import DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic
from ecsdemo.outputs import INFRA_FILE, Outputs, read_record
from ecsdemo.paths import terraform_dir
from ecsdemo.progress import Reporter
from ecsdemo.terraform import TerraformRunner, state_has_resources

WORKDIR_NAME = "terraform"
TF_LOG_NAME = "terraform.log"
PLAN_FILE = "ecsdemo.tfplan"
OVERRIDE_FILE = "local_override.tf.json"      # Terraform reads *_override.tf.json after the module's files
LEGACY_OVERRIDE_FILE = "local_override.tf"    # the HCL override ecsdemo wrote before
TFVARS_FILE = "terraform.tfvars.json"
TASK_DEFINITION_COPY = "task-definition.json"
TASK_DEFINITIONS = {"base": "base-demo.json", "updated": "updated-demo.json"}
TASK_MEMORY_MIB = 512          # task-level memory in ecs.tf; the containers must fit in it
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CONTAINER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_PROGRESS_RE = re.compile(r"^(\S+: (Creation|Destruction|Modifications) complete"
                          r"|Plan: |Apply complete|Destroy complete)")
# Variables that would send the local-mode provider somewhere else than the local endpoint.
_LOCAL_DROP_ENV_PREFIXES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL",
                            "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ROLE_ARN",
                            "AWS_WEB_IDENTITY_TOKEN_FILE")


# --- input validation (before any terraform call) --------------------------------------------------

def known_regions() -> set[str]:
    """Every region botocore knows ECS in, across all partitions."""
    session = boto3.session.Session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("ecs", partition_name=partition))
    return regions


def validate_config(cfg: DemoConfig) -> None:
    if cfg.region not in known_regions():
        raise EcsdemoError(f"unknown AWS region {cfg.region!r}: botocore knows no ECS endpoint there",
                           hint="use a region name such as us-east-1 or eu-west-1")
    if not NAME_RE.match(cfg.name):
        raise EcsdemoError(f"invalid demo name {cfg.name!r}",
                           hint="use 1-64 letters, digits, hyphens or underscores "
                                "(it names the ECS cluster and family)")
    try:
        net = ipaddress.ip_network(cfg.vpc_cidr, strict=True)
    except ValueError as exc:
        raise EcsdemoError(f"invalid VPC CIDR block {cfg.vpc_cidr!r}: {exc}", hint="for example 10.0.0.0/24") from None
    if net.version != 4 or not 16 <= net.prefixlen <= 28:
        raise EcsdemoError(f"VPC CIDR block {cfg.vpc_cidr} must be IPv4 with a prefix length from /16 to /28",
                           hint="for example 10.0.0.0/24")


def task_definition_path(choice: str) -> Path:
    """The container definitions file of a choice: "base", "updated" or a path to a JSON file."""
    if choice in TASK_DEFINITIONS:
        return terraform_dir() / "files" / TASK_DEFINITIONS[choice]
    return Path(choice).expanduser().resolve()


def load_task_definition(path: Path) -> list[dict[str, Any]]:
    """Read and check a container definitions file; a clear error names what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EcsdemoError(f"task definition file {path} does not exist",
                           hint="use `base`, `updated` or the path of a JSON container definitions file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise EcsdemoError(f"cannot read task definition file {path}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EcsdemoError(f"task definition file {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno})") from None
    if not isinstance(data, list) or not data:
        raise EcsdemoError(f"task definition file {path} must hold a non-empty JSON array of container definitions")
    seen: set[str] = set()
    total_memory = 0
    essential = False
    for i, c in enumerate(data):
        where = f"task definition file {path}: container #{i + 1}"
        if not isinstance(c, dict):
            raise EcsdemoError(f"{where} is not a JSON object")
        name = c.get("name")
        if not isinstance(name, str) or not CONTAINER_NAME_RE.match(name):
            raise EcsdemoError(f"{where} needs a `name` of letters, digits, hyphens or underscores")
        if name in seen:
            raise EcsdemoError(f"{where} repeats the container name {name!r}")
        seen.add(name)
        if not isinstance(c.get("image"), str) or not c["image"].strip():
            raise EcsdemoError(f"{where} ({name}) needs an `image`")
        memory = c.get("memory", c.get("memoryReservation"))
        if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
            raise EcsdemoError(f"{where} ({name}) needs a positive integer `memory` or `memoryReservation` (MiB)",
                               hint="containers carry their own memory setting (the local endpoint refuses to run "
                                    "tasks without one)")
        total_memory += memory
        if c.get("essential", True) is not False:
            essential = True
    if not essential:
        raise EcsdemoError(f"task definition file {path}: at least one container must be essential")
    if total_memory > TASK_MEMORY_MIB:
        raise EcsdemoError(f"task definition file {path}: the containers ask for {total_memory} MiB but the task has "
                           f"{TASK_MEMORY_MIB} MiB")
    return data


# --- state ----------------------------------------------------------------------------------------

def _workdir(cfg: DemoConfig) -> Path:
    return cfg.state.path(WORKDIR_NAME)


def has_infrastructure(cfg: DemoConfig) -> bool:
    """True when Terraform's state in the state directory lists resources (no terraform call)."""
    return state_has_resources(_workdir(cfg))


def _mode(cfg: DemoConfig) -> str:
    return "local" if cfg.local else "aws"


def _runner(cfg: DemoConfig, reporter: Reporter, local_mode: bool) -> TerraformRunner:
    """A runner for the state directory's working copy (checks the binary, its version and the mirror)."""
    workdir = _workdir(cfg)
    env: dict[str, str] = {}
    drop: tuple[str, ...] = ()
    if local_mode:
        env = {**local.LOCAL_CREDENTIALS, "AWS_DEFAULT_REGION": cfg.region}
        drop = tuple(k for k in os.environ if k.startswith(_LOCAL_DROP_ENV_PREFIXES))

    def on_line(line: str) -> None:
        if _PROGRESS_RE.match(line):
            reporter.info(line)

    runner = TerraformRunner(workdir=workdir, log_path=cfg.state.logs / TF_LOG_NAME, plugin_mirror=cfg.tf_plugin_dir,
                             env=env, remove_env=drop, on_line=on_line)
    runner.version()
    return runner


def override_config(endpoint: str) -> dict[str, Any]:
    """The provider override for local mode, in Terraform's JSON syntax: the AWS provider talks to the local
    endpoint with its dummy credentials."""
    creds = local.LOCAL_CREDENTIALS
    return {
        "//": "Generated by ecsdemo for local mode: the AWS provider talks to the embedded endpoint with dummy "
              "credentials. This file never exists in real-AWS mode.",
        "provider": {"aws": {
            "access_key": creds["AWS_ACCESS_KEY_ID"],
            "secret_key": creds["AWS_SECRET_ACCESS_KEY"],
            "skip_credentials_validation": True,
            "skip_metadata_api_check": True,
            "skip_requesting_account_id": True,
            "max_retries": 2,
            "endpoints": {service: endpoint for service in ("ec2", "ecs", "iam", "sts")},
        }},
    }


def _write_override(workdir: Path, endpoint: str | None) -> None:
    """The provider override that points Terraform at the local endpoint; removed in real-AWS mode. The HCL
    override an older ecsdemo wrote goes either way (Terraform would read both)."""
    (workdir / LEGACY_OVERRIDE_FILE).unlink(missing_ok=True)
    path = workdir / OVERRIDE_FILE
    if endpoint is None:
        path.unlink(missing_ok=True)
        return
    write_atomic(path, json.dumps(override_config(endpoint), indent=2) + "\n")


def _prepare_workdir(cfg: DemoConfig, td_file: Path, endpoint: str | None) -> Path:
    """Copy the shipped module into the state directory and write the variables and the override."""
    src = terraform_dir()
    workdir = _workdir(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    shipped = {p.name for p in src.glob("*.tf")}
    for old in workdir.glob("*.tf"):
        if old.name not in shipped:
            old.unlink()   # a file an older ecsdemo shipped (or its HCL override)
    for tf in src.glob("*.tf"):
        shutil.copyfile(tf, workdir / tf.name)
    shutil.copytree(src / "files", workdir / "files", dirs_exist_ok=True)
    # A copy, so destroy still works when a custom file has since moved or changed.
    shutil.copyfile(td_file, workdir / TASK_DEFINITION_COPY)
    (workdir / TFVARS_FILE).write_text(json.dumps({
        "region": cfg.region, "name": cfg.name, "vpc_cidr_block": cfg.vpc_cidr,
        "ecs_task_definition_file": f"./{TASK_DEFINITION_COPY}"}, indent=2) + "\n")
    _write_override(workdir, endpoint)
    return workdir


def _applied_region(workdir: Path) -> str | None:
    try:
        return json.loads((workdir / TFVARS_FILE).read_text()).get("region")
    except (OSError, ValueError, AttributeError):
        return None


def _endpoint_id(state) -> str | None:
    """Identifies the running local endpoint (pid@url); resources live only as long as it does."""
    status = local.local_endpoint_status(state)
    return f"{status['pid']}@{status['url']}" if status and status["healthy"] else None


def _forget_lost_resources(workdir: Path) -> None:
    """The local endpoint that held the resources is gone: so are they. Keep the old state aside."""
    (workdir / "terraform.tfstate").replace(workdir / "terraform.tfstate.lost-endpoint")


def _endpoint_died(endpoint: str | None, exc: EcsdemoError, cfg: DemoConfig, doing: str) -> EcsdemoError:
    """Turn a terraform failure caused by a dead local endpoint into a clear message."""
    if endpoint is None or local.is_healthy(endpoint):
        return exc
    return EcsdemoError(f"the local AWS endpoint at {endpoint} stopped answering while Terraform was {doing}",
                        hint=f"run `ecsdemo local start`, then `ecsdemo infra apply --local` again (it starts from a "
                             f"clean endpoint); Terraform's log is in {cfg.state.logs / TF_LOG_NAME}")


# --- the workflow ---------------------------------------------------------------------------------

def apply(cfg: DemoConfig, reporter: Reporter, task_definition: str | None = None) -> Outputs:
    """Create or update the AWS side; return its outputs (also saved in the state directory).

    `task_definition`: "base", "updated" or a container definitions file; None keeps the previous choice.
    In local mode the local endpoint is started (or reused) first. Inputs are validated before Terraform
    runs. On failure the outputs are cleared (the next apply completes the change) and Terraform's own
    error text is in the raised EcsdemoError.
    """
    validate_config(cfg)
    record = read_record(cfg.state)
    choice = task_definition or record.get("task_definition") or "base"
    td_file = task_definition_path(choice)
    load_task_definition(td_file)
    if choice not in TASK_DEFINITIONS:
        choice = str(td_file)
    workdir = _workdir(cfg)
    mode = _mode(cfg)
    state = cfg.state.ensure()
    has_resources = state_has_resources(workdir)
    if has_resources and record.get("mode", mode) != mode:
        raise EcsdemoError(f"the state directory {state.root} holds infrastructure applied in {record['mode']} mode",
                           hint="run `ecsdemo infra destroy` first, or use another --state-dir")
    if has_resources and _applied_region(workdir) not in (None, cfg.region):
        raise EcsdemoError(f"the demo's infrastructure exists in region {_applied_region(workdir)}, not {cfg.region}",
                           hint="run `ecsdemo infra destroy` first, or use another --state-dir")

    runner = _runner(cfg, reporter, cfg.local)
    endpoint = None
    endpoint_id = None
    if cfg.local:
        endpoint = local.ensure_local_endpoint(state, reporter)
        endpoint_id = _endpoint_id(state)
        if has_resources and record.get("endpoint_id") != endpoint_id:
            _forget_lost_resources(workdir)
            reporter.info("the local endpoint of the last apply is gone (and its resources with it): "
                          "applying from scratch")

    _prepare_workdir(cfg, td_file, endpoint)
    state.write_json(INFRA_FILE, {**record, "mode": mode, "task_definition": choice, "outputs": None,
                                  "last_error": None, "region": cfg.region, "endpoint_id": endpoint_id})
    try:
        with reporter.step("Terraform init"):
            if not runner.init():
                reporter.info("already initialised (providers reused)")
        with reporter.step("Terraform plan"):
            changes = runner.plan(PLAN_FILE)
        if changes:
            with reporter.step(f"Terraform apply ({'local endpoint' if endpoint else cfg.region})"):
                runner.apply_plan(PLAN_FILE)
        else:
            reporter.info("no changes: the infrastructure matches the configuration")
        result = Outputs.from_terraform(runner.outputs(), endpoint, choice)
    except EcsdemoError as exc:
        err = _endpoint_died(endpoint, exc, cfg, "applying")
        state.write_json(INFRA_FILE, {**read_record(cfg.state), "last_error": err.message})
        raise err from None
    finally:
        (workdir / PLAN_FILE).unlink(missing_ok=True)   # a plan holds variable values; do not leave it around
    state.write_json(INFRA_FILE, {**read_record(cfg.state), "outputs": result.to_json(), "applied_at": _now(),
                                  "terraform_seconds": round(sum(r.seconds for r in runner.records), 2)})
    return result


def destroy(cfg: DemoConfig, reporter: Reporter) -> bool:
    """Remove the AWS side; True when Terraform destroyed something. Fine when nothing was applied.

    Uses the variables of the last apply (not `cfg`'s), so a changed config cannot orphan resources. In
    local mode with the endpoint gone, the resources are gone with it: the state is cleared, no Terraform.
    """
    state = cfg.state
    workdir = _workdir(cfg)
    record = read_record(cfg.state)
    if not state_has_resources(workdir):
        reporter.info("nothing to destroy")
        state.remove(INFRA_FILE)
        return False
    endpoint = None
    if record.get("mode", _mode(cfg)) == "local":
        if local.resume_local_endpoint(state):   # left paused by an interrupted outage scenario: not gone
            reporter.warn("the local AWS endpoint was paused (an interrupted outage scenario?): resumed it")
        status = local.local_endpoint_status(state)
        if not (status and status["healthy"]) or record.get("endpoint_id") != _endpoint_id(state):
            _forget_lost_resources(workdir)
            reporter.info("the local endpoint of the last apply is not running: its resources are already gone")
            state.remove(INFRA_FILE)
            return False
        endpoint = status["url"]
    _write_override(workdir, endpoint)
    runner = _runner(cfg, reporter, endpoint is not None)
    try:
        with reporter.step("Terraform init"):
            runner.init(reuse_any=True)
        with reporter.step(f"Terraform destroy ({'local endpoint' if endpoint else _applied_region(workdir)})"):
            runner.destroy()
    except EcsdemoError as exc:
        err = _endpoint_died(endpoint, exc, cfg, "destroying")
        state.write_json(INFRA_FILE, {**record, "outputs": None, "last_error": err.message})
        raise err from None
    state.remove(INFRA_FILE)
    return True


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
