"""`ecsdemo driver serve|install|check`."""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from ecsdemo.commands.common import JsonOpt, LocalOpt, RegionOpt, StateDirOpt

app = typer.Typer(help="Run, install and check the nomad-driver-ecs plugin.", no_args_is_help=True)

PluginDirOpt = Annotated[Optional[Path], typer.Option(
    "--plugin-dir", file_okay=False,
    help="The Nomad client's plugin_dir. (default: <render dir>/plugins, i.e. ./nomad/plugins)", show_default=False)]
ClusterOpt = Annotated[Optional[str], typer.Option(
    "--cluster", help="ECS cluster for the plugin config. (default: the demo's, nomad-remote-driver-demo)",
    show_default=False)]
EndpointOpt = Annotated[Optional[str], typer.Option(
    "--endpoint", help="ECS endpoint URL for the plugin config (a local endpoint or a VPC endpoint).",
    show_default=False)]


def _demo_config(state_dir: Path | None):
    from ecsdemo.config import DemoConfig
    from ecsdemo.state import StateDir

    state = StateDir(state_dir)
    cfg = DemoConfig.load(state) or DemoConfig(state_dir=state.root)
    cfg.state_dir = state.root
    return cfg


@app.command()
def serve() -> None:
    """Run the plugin in this process, as Nomad runs nomad-driver-ecs (it needs Nomad's magic cookie)."""
    from driver.main import main as plugin_main  # the plugin's public entry point

    plugin_main()


@app.command()
def install(plugin_dir: PluginDirOpt = None, cluster: ClusterOpt = None, region: RegionOpt = None,
            endpoint: EndpointOpt = None, state_dir: StateDirOpt = None) -> None:
    """Write an executable nomad-driver-ecs launcher into the plugin dir and print the agent's plugin block."""
    from ecsdemo import driverctl
    from ecsdemo.console import console

    cfg = _demo_config(state_dir)
    target = driverctl.install_launcher(plugin_dir or cfg.plugin_dir)
    console.print(f"[green]✓[/green] installed {target}", soft_wrap=True)
    console.print(f"Add this block to each Nomad client's configuration (with plugin_dir = \"{target.parent}\"):\n",
                  soft_wrap=True)
    typer.echo(driverctl.plugin_stanza(cluster or cfg.name, region or cfg.region, endpoint))


@app.command()
def check(plugin_dir: PluginDirOpt = None, local: LocalOpt = False, cluster: ClusterOpt = None,
          region: RegionOpt = None, endpoint: EndpointOpt = None, state_dir: StateDirOpt = None,
          json: JsonOpt = False) -> None:
    """Launch the installed plugin exactly as Nomad would and report each step (handshake .. fingerprint health).

    --local starts an embedded AWS endpoint with the cluster, so no AWS account is needed. Without it, a demo
    brought up with `up --local` is checked against its running embedded endpoint.
    """
    import os

    from ecsdemo import driverctl, local as local_endpoint
    from ecsdemo.config import PLUGIN_NAME
    from ecsdemo.console import RichReporter, console
    from ecsdemo.errors import EcsdemoError

    cfg = _demo_config(state_dir)
    launcher = (plugin_dir or cfg.plugin_dir) / PLUGIN_NAME
    if not launcher.exists():
        raise EcsdemoError(f"no plugin at {launcher}", hint="run `ecsdemo driver install` (or pass --plugin-dir)")
    state = cfg.state.ensure()
    cluster, region = cluster or cfg.name, region or cfg.region
    env = dict(os.environ)
    moto = None
    reporter = RichReporter(quiet=json)
    try:
        if local:
            with reporter.step("start the embedded AWS endpoint"):
                moto = local_endpoint.start_moto(state.logs / "driver-check-moto.log")
                env.update(local_endpoint.LOCAL_CREDENTIALS)
                env["AWS_EC2_METADATA_DISABLED"] = "true"
                _create_cluster(moto.url, cluster, region)
            endpoint = moto.url
        elif cfg.local and not endpoint:  # the saved demo runs on the embedded endpoint: check against it
            from ecsdemo.aws import endpoint_url

            endpoint = endpoint_url(cfg)
            env.update(local_endpoint.LOCAL_CREDENTIALS)
        config = {"enabled": True, "cluster": cluster, "region": region}
        if endpoint:
            config["endpoint"] = endpoint
        report = driverctl.check_plugin(launcher, config, reporter, env=env, log_path=state.logs / "driver-check.log")
    finally:
        if moto is not None:
            moto.stop()
    if json:
        typer.echo(jsonlib.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_report(report, console)
    if not report.ok:
        failed = next(s for s in report.steps if not s.ok)
        raise EcsdemoError(f"plugin check failed at `{failed.name}`: {failed.detail}",
                           hint=f"the plugin's log is {state.logs / 'driver-check.log'}")


def _create_cluster(url: str, name: str, region: str) -> None:
    import boto3

    from ecsdemo.local import LOCAL_CREDENTIALS

    boto3.client("ecs", region_name=region, endpoint_url=url, aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).create_cluster(clusterName=name)


def _print_report(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"nomad-driver-ecs check: {report.launcher}", show_lines=False)
    table.add_column("", width=1)
    table.add_column("step")
    table.add_column("result", overflow="fold")
    for step in report.steps:
        table.add_row("[green]✓[/green]" if step.ok else "[red]✗[/red]", step.name, step.detail)
    console.print(table)
    if report.ok:
        console.print(f"[green]plugin OK[/green]: driver health {report.health} ({report.health_description})")
