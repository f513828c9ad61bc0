"""`ecsdemo infra apply|destroy|outputs`: the demo's AWS side with Terraform."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ecsdemo import infra
from ecsdemo.commands.common import (
    JsonOpt,
    ModeOpt,
    RegionOpt,
    StateDirOpt,
    TfPluginDirOpt,
    echo_json,
    key_value_table,
)
from ecsdemo.console import RichReporter, console
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import recorded
from ecsdemo.resolve import resolve_config

NameOpt = Annotated[Optional[str], typer.Option(
    "--name", help="Name of the ECS cluster and task definition family. (default: nomad-remote-driver-demo)",
    show_default=False)]
CidrOpt = Annotated[Optional[str], typer.Option("--vpc-cidr", help="CIDR block of the demo VPC. (default: 10.0.0.0/24)",
                                                show_default=False)]
TaskDefOpt = Annotated[Optional[str], typer.Option(
    "--task-definition", help="Container definitions: `base`, `updated` or the path of a JSON file. "
                              "(default: the one of the previous apply, else base)", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the `infra` command group to the main app."""
    group = typer.Typer(help="Build or remove the AWS side with Terraform.", no_args_is_help=True)
    group.command("apply")(apply_cmd)
    group.command("destroy")(destroy_cmd)
    group.command("outputs")(outputs_cmd)
    app.add_typer(group, name="infra")


def _print_outputs(outputs) -> None:
    console.print(key_value_table((key, str(value)) for key, value in outputs.to_json().items() if value is not None))


def apply_cmd(local: ModeOpt = None, region: RegionOpt = None, name: NameOpt = None, vpc_cidr: CidrOpt = None,
              tf_plugin_dir: TfPluginDirOpt = None, task_definition: TaskDefOpt = None, json: JsonOpt = False,
              state_dir: StateDirOpt = None) -> None:
    """Create or update the demo's AWS resources with Terraform and print its outputs.

    In local mode the embedded endpoint is started first (or reused). The settings are saved in the
    state directory, so later commands (render, destroy, up) use the same ones.
    """
    cfg = resolve_config(state_dir, local=local, region=region, name=name, vpc_cidr=vpc_cidr,
                         tf_plugin_dir=tf_plugin_dir)
    outputs = infra.apply(cfg, RichReporter(quiet=json), task_definition=task_definition)
    cfg.save()
    if json:
        echo_json(outputs.to_json())
    else:
        _print_outputs(outputs)


def destroy_cmd(local: ModeOpt = None, json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Remove the demo's AWS resources (with the settings of the last apply). Fine when there are none.

    While the demo is live, a --local/--aws other than its mode is refused, as in `up`.
    The local endpoint keeps running; `ecsdemo local stop` stops it.
    """
    cfg = resolve_config(state_dir, local=local)
    destroyed = infra.destroy(cfg, RichReporter(quiet=json))
    if json:
        echo_json({"destroyed": destroyed})
    else:
        console.print("AWS resources destroyed" if destroyed else "nothing to destroy")


def outputs_cmd(local: ModeOpt = None, json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Print the outputs of the last apply (from the state directory; Terraform is not run).

    --local/--aws are accepted for symmetry with apply; the outputs are those of the last apply either way.
    """
    outputs = recorded(resolve_config(state_dir).state)
    if outputs is None:
        raise EcsdemoError("no Terraform outputs in this state directory", hint="run `ecsdemo infra apply` first")
    if json:
        echo_json(outputs.to_json())
    else:
        _print_outputs(outputs)
