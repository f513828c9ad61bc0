"""`ecsdemo infra apply|destroy|outputs`, `ecsdemo render` and `ecsdemo local start|stop|status`."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ecsdemo.commands.common import JsonOpt, ModeOpt, RegionOpt, StateDirOpt, TfPluginDirOpt
from ecsdemo.console import RichReporter, console
from ecsdemo.errors import EcsdemoError

infra_app = typer.Typer(help="Build or remove the AWS side with Terraform.", no_args_is_help=True)
local_app = typer.Typer(help="Manage the embedded AWS endpoint (a local moto server).", no_args_is_help=True)

NameOpt = Annotated[Optional[str], typer.Option(
    "--name", help="Name of the ECS cluster and task definition family. (default: nomad-remote-driver-demo)",
    show_default=False)]
CidrOpt = Annotated[Optional[str], typer.Option("--vpc-cidr", help="CIDR block of the demo VPC. (default: 10.0.0.0/24)",
                                                show_default=False)]
TaskDefOpt = Annotated[Optional[str], typer.Option(
    "--task-definition", help="Container definitions: `base`, `updated` or the path of a JSON file. "
                              "(default: the one of the previous apply, else base)", show_default=False)]
RenderDirOpt = Annotated[Optional[Path], typer.Option(
    "--render-dir", file_okay=False, help="Where to write the Nomad files. (default: ./nomad, or the saved one)",
    show_default=False)]
ClientsOpt = Annotated[Optional[int], typer.Option("--clients", min=1, max=9,
                                                   help="Number of client configs. (default: 2, or the saved number)",
                                                   show_default=False)]


def _config(state_dir: Path | None, **flags: Any):
    """The saved configuration of this state directory (or the defaults) with the given flags applied."""
    from ecsdemo.config import DemoConfig
    from ecsdemo.state import StateDir

    state = StateDir(state_dir)
    cfg = DemoConfig.load(state) or DemoConfig(state_dir=state.root)
    cfg.state_dir = state.root
    for key, value in flags.items():
        if value is not None:
            setattr(cfg, key, value)
    cfg.validate()
    return cfg


def _echo_json(data: Any) -> None:
    typer.echo(jsonlib.dumps(data, indent=2, sort_keys=True))


def _print_outputs(outputs) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in outputs.to_json().items():
        if value is not None:
            table.add_row(key, str(value))
    console.print(table)


@infra_app.command("apply")
def apply_cmd(local: ModeOpt = None, region: RegionOpt = None, name: NameOpt = None, vpc_cidr: CidrOpt = None,
              tf_plugin_dir: TfPluginDirOpt = None, task_definition: TaskDefOpt = None, json: JsonOpt = False,
              state_dir: StateDirOpt = None) -> None:
    """Create or update the demo's AWS resources with Terraform and print its outputs.

    In local mode the embedded endpoint is started first (or reused). The settings are saved in the
    state directory, so later commands (render, destroy, up) use the same ones.
    """
    from ecsdemo import infra

    cfg = _config(state_dir, local=local, region=region, name=name, vpc_cidr=vpc_cidr, tf_plugin_dir=tf_plugin_dir)
    outputs = infra.apply(cfg, RichReporter(quiet=json), task_definition=task_definition)
    cfg.save()
    if json:
        _echo_json(outputs.to_json())
    else:
        _print_outputs(outputs)


@infra_app.command("destroy")
def destroy_cmd(local: ModeOpt = None, json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Remove the demo's AWS resources (with the settings of the last apply). Fine when there are none.

    The mode recorded by the last apply wins over --local/--aws. The local endpoint keeps running;
    `ecsdemo local stop` stops it.
    """
    from ecsdemo import infra

    cfg = _config(state_dir, local=local)
    destroyed = infra.destroy(cfg, RichReporter(quiet=json))
    if json:
        _echo_json({"destroyed": destroyed})
    else:
        console.print("AWS resources destroyed" if destroyed else "nothing to destroy")


@infra_app.command("outputs")
def outputs_cmd(local: ModeOpt = None, json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Print the outputs of the last apply (from the state directory; Terraform is not run).

    --local/--aws are accepted for symmetry with apply; the outputs are those of the last apply either way.
    """
    from ecsdemo import infra

    outputs = infra.outputs(_config(state_dir))
    if outputs is None:
        raise EcsdemoError("no Terraform outputs in this state directory", hint="run `ecsdemo infra apply` first")
    if json:
        _echo_json(outputs.to_json())
    else:
        _print_outputs(outputs)


def register(app: typer.Typer) -> None:
    """Add the top-level commands of this module (`render`) to the main app."""

    @app.command("render")
    def render_cmd(render_dir: RenderDirOpt = None, clients: ClientsOpt = None, json: JsonOpt = False,
                   state_dir: StateDirOpt = None) -> None:
        """Write the Nomad server and client configs and the demo job from the last apply's outputs.

        Re-run it after the task definition changes: the job then names the new revision.
        """
        from ecsdemo import infra, render

        cfg = _config(state_dir, render_dir=render_dir, clients=clients)
        outputs = infra.outputs(cfg)
        if outputs is None:
            raise EcsdemoError("there are no Terraform outputs to render from", hint="run `ecsdemo infra apply` first")
        paths = render.render_all(cfg, outputs, outputs.endpoint)
        if render_dir is not None or clients is not None:
            cfg.save()
        if json:
            _echo_json([str(p) for p in paths])
        else:
            for p in paths:
                console.print(f"wrote {p}")


@local_app.command("start")
def local_start(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Start the embedded AWS endpoint on a free port of 127.0.0.1 (or reuse the running one)."""
    from ecsdemo import local
    from ecsdemo.state import StateDir

    state = StateDir(state_dir)
    url = local.ensure_local_endpoint(state, RichReporter(quiet=json))
    if json:
        _echo_json(local.local_endpoint_status(state))
    else:
        console.print(url)


@local_app.command("stop")
def local_stop(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Stop the embedded AWS endpoint (its resources go with it). Fine when it is not running."""
    from ecsdemo import local
    from ecsdemo.state import StateDir

    stopped = local.stop_local_endpoint(StateDir(state_dir))
    if json:
        _echo_json({"stopped": stopped})
    else:
        console.print("local AWS endpoint stopped" if stopped else "the local AWS endpoint was not running")


@local_app.command("status")
def local_status(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show the embedded AWS endpoint (URL, pid, port, log); exit code 1 when it is not running and healthy."""
    from ecsdemo import local
    from ecsdemo.state import StateDir

    status = local.local_endpoint_status(StateDir(state_dir))
    if json:
        _echo_json(status)
    elif status is not None:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        state_text = "[green]healthy[/green]" if status["healthy"] else (
            "[yellow]running but not answering[/yellow]" if status["running"] else "[red]not running[/red]")
        table.add_row("status", state_text)
        for key in ("url", "pid", "port", "log", "started_at"):
            table.add_row(key, str(status.get(key)))
        console.print(table)
    if status is None:
        raise EcsdemoError("no local AWS endpoint was started in this state directory",
                           hint="`ecsdemo local start` starts one")
    if not status["healthy"]:
        what = "does not answer" if status["running"] else "is not running"
        raise EcsdemoError(f"the local AWS endpoint (pid {status['pid']}) {what}",
                           hint="`ecsdemo local start` replaces it")
