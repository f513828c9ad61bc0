"""Adapter: the HCL ecsdemo writes for Nomad, rendered from the Jinja2 templates in `templates/`.

That is the agent configs, the demo job, and the plugin stanza `driver install` prints (the same template
the client configs use). The values come only from `DemoConfig` and `outputs.Outputs`, never hand edits.
Re-rendering the job with a new task definition revision is what replaces the upstream demo's `sed` step.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from ecsdemo.config import DRIVER_NAME, GROUP_NAME, JOB_ID, PLUGIN_NAME, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic
from ecsdemo.outputs import Outputs
from ecsdemo.paths import templates_dir

SERVER_FILE = "server.hcl"
JOB_FILE = "demo-ecs.nomad"


def hcl_string(value: object) -> str:
    """A quoted HCL string literal: JSON escapes (valid in HCL) plus escaped template sequences."""
    return json.dumps(str(value), ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["hcl"] = hcl_string
    return env


# --- where things are (the lifecycle uses the same functions to start the agents) -------------------

def server_data_dir(cfg: DemoConfig) -> Path:
    return Path(cfg.state_dir).resolve() / "nomad" / "server"


def client_data_dir(cfg: DemoConfig, index: int) -> Path:
    """Data directory of client `index` (1-based); it keeps the node ID across agent restarts."""
    return Path(cfg.state_dir).resolve() / "nomad" / f"client-{index}"


def server_config_path(cfg: DemoConfig) -> Path:
    return Path(cfg.render_dir).resolve() / SERVER_FILE


def client_config_path(cfg: DemoConfig, index: int) -> Path:
    return Path(cfg.render_dir).resolve() / f"client-{index}.hcl"


def job_path(cfg: DemoConfig) -> Path:
    return Path(cfg.render_dir).resolve() / JOB_FILE


# --- rendering ------------------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    """Write atomically, so an agent never reads half a file."""
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise EcsdemoError(f"cannot write {path}: {exc.strerror or exc}",
                           hint="choose another directory with --render-dir") from None
    return path


def _check_outputs(outputs: Outputs | None) -> Outputs:
    if outputs is None:
        raise EcsdemoError("there are no Terraform outputs to render from", hint="run `ecsdemo infra apply` first")
    for name in ("demo_subnet_id", "demo_security_group_id", "cluster_name", "region", "task_definition_family"):
        if not str(getattr(outputs, name)).strip():
            raise EcsdemoError(f"Terraform output {name} is empty", hint="run `ecsdemo infra apply` again")
    return outputs


def render_job(cfg: DemoConfig, outputs: Outputs) -> Path:
    """(Re-)render only the job file, e.g. after the task definition moved to a new revision."""
    outputs = _check_outputs(outputs)
    text = _env().get_template("demo-ecs.nomad.j2").render(
        outputs=outputs, job_id=JOB_ID, group_name=GROUP_NAME, task_name=TASK_NAME, driver_name=DRIVER_NAME)
    return _write(job_path(cfg), text)


def plugin_stanza(cluster: str, region: str, endpoint: str | None = None, poll_interval: str | None = None) -> str:
    """The agent's `plugin "nomad-driver-ecs" { config { ... } }` block for these settings, from the template
    the client configs use (templates/plugin.hcl.j2); `ecsdemo driver install` prints it."""
    stanza = _env().get_template("plugin.hcl.j2").module.plugin_stanza
    return str(stanza(PLUGIN_NAME, cluster, region, endpoint, poll_interval))


def render_all(cfg: DemoConfig, outputs: Outputs, endpoint: str | None) -> list[Path]:
    """Write `server.hcl`, `client-<i>.hcl` (i = 1..cfg.clients) and `demo-ecs.nomad` into cfg.render_dir.

    `endpoint` is the local AWS endpoint's URL in local mode (it goes into the plugin config), None on
    real AWS. Client files left over from a render with more clients are removed. Returns the paths.
    """
    outputs = _check_outputs(outputs)
    env = _env()
    written = [_write(server_config_path(cfg), env.get_template("server.hcl.j2").render(
        cfg=cfg, data_dir=str(server_data_dir(cfg))))]
    client_template = env.get_template("client.hcl.j2")
    for index, name in enumerate(cfg.client_names(), start=1):
        written.append(_write(client_config_path(cfg, index), client_template.render(
            cfg=cfg, index=index, name=name, data_dir=str(client_data_dir(cfg, index)),
            plugin_dir=str(Path(cfg.plugin_dir).resolve()), http_port=cfg.client_http_port(index),
            server_rpc=f"127.0.0.1:{cfg.server_rpc_port}", plugin_name=PLUGIN_NAME, outputs=outputs,
            endpoint=endpoint)))
    keep = set(written)
    for stale in Path(cfg.render_dir).resolve().glob("client-*.hcl"):
        if stale not in keep:
            stale.unlink()
    written.append(render_job(cfg, outputs))
    return written
