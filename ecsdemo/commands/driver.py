"""`ecsdemo driver serve|install|check`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from ecsdemo import plugininstall, render
from ecsdemo.commands.common import JsonOpt, LocalOpt, RegionOpt, StateDirOpt, echo_json
from ecsdemo.console import RichReporter, console
from ecsdemo.errors import EcsdemoError
from ecsdemo.resolve import resolve_config

if TYPE_CHECKING:
    from ecsdemo.drivercheck import CheckReport

PluginDirOpt = Annotated[Optional[Path], typer.Option(
    "--plugin-dir", file_okay=False,
    help="The Nomad client's plugin_dir. (default: <render dir>/plugins, i.e. ./nomad/plugins)", show_default=False)]
ClusterOpt = Annotated[Optional[str], typer.Option(
    "--cluster", help="ECS cluster for the plugin config. (default: the demo's, nomad-remote-driver-demo)",
    show_default=False)]
EndpointOpt = Annotated[Optional[str], typer.Option(
    "--endpoint", help="ECS endpoint URL for the plugin config (a local endpoint or a VPC endpoint).",
    show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the `driver` command group to the main app."""
    group = typer.Typer(help="Run, install and check the nomad-driver-ecs plugin.", no_args_is_help=True)
    for command in (serve, install, check):
        group.command()(command)
    app.add_typer(group, name="driver")


def serve() -> None:
    """Run the plugin in this process, as Nomad runs nomad-driver-ecs (it needs Nomad's magic cookie)."""
    from driver.main import main as plugin_main  # noqa: PLC0415 - lazy: gRPC and the plugin stay out of other commands' start-up
    plugin_main()


def install(plugin_dir: PluginDirOpt = None, cluster: ClusterOpt = None, region: RegionOpt = None,
            endpoint: EndpointOpt = None, state_dir: StateDirOpt = None) -> None:
    """Write an executable nomad-driver-ecs launcher into the plugin dir and print the agent's plugin block."""
    cfg = resolve_config(state_dir)
    target = plugininstall.install_launcher(plugin_dir or cfg.plugin_dir)
    console.print(f"[green]✓[/green] installed {target}", soft_wrap=True)
    console.print(f"Add this block to each Nomad client's configuration (with plugin_dir = \"{target.parent}\"):\n",
                  soft_wrap=True)
    typer.echo(render.plugin_stanza(cluster or cfg.name, region or cfg.region, endpoint))


def check(plugin_dir: PluginDirOpt = None, local: LocalOpt = False, cluster: ClusterOpt = None,
          region: RegionOpt = None, endpoint: EndpointOpt = None, state_dir: StateDirOpt = None,
          json: JsonOpt = False) -> None:
    """Launch the installed plugin exactly as Nomad would and report each step (handshake .. fingerprint health).

    --local starts an embedded AWS endpoint with the cluster, so no AWS account is needed. Without it, a demo
    brought up with `up --local` is checked against its running embedded endpoint.
    """
    cfg = resolve_config(state_dir)
    from ecsdemo import drivercheck  # noqa: PLC0415 - lazy: gRPC stays out of every other command's start-up
    report = drivercheck.check_installed(cfg, RichReporter(quiet=json), plugin_dir=plugin_dir, local_endpoint=local,
                                         cluster=cluster, region=region, endpoint=endpoint)
    if json:
        echo_json(report.to_json())
    else:
        _print_report(report)
    if not report.ok:
        failed = next(s for s in report.steps if not s.ok)
        raise EcsdemoError(f"plugin check failed at `{failed.name}`: {failed.detail}",
                           hint=f"the plugin's log is {report.log_path}")


def _print_report(report: CheckReport) -> None:
    table = Table(title=f"nomad-driver-ecs check: {report.launcher}", show_lines=False)
    table.add_column("", width=1)
    table.add_column("step")
    table.add_column("result", overflow="fold")
    for step in report.steps:
        table.add_row("[green]✓[/green]" if step.ok else "[red]✗[/red]", step.name, step.detail)
    console.print(table)
    if report.ok:
        console.print(f"[green]plugin OK[/green]: driver health {report.health} ({report.health_description})")
