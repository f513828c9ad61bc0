"""`ecsdemo doctor|up|run|status|logs|teardown`: parse options, call the workflow, print the result."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ecsdemo import doctor as doc
from ecsdemo import lifecycle, views
from ecsdemo import status as status_view
from ecsdemo.commands.common import (
    JsonOpt,
    ModeOpt,
    NoInstallOpt,
    RegionOpt,
    ReleasesKeyOpt,
    ReleasesUrlOpt,
    StateDirOpt,
    TfPluginDirOpt,
    WideOpt,
    download_bar,
)
from ecsdemo.console import RichReporter, console
from ecsdemo.resolve import resolve_config

ClientsOpt = Annotated[Optional[int], typer.Option("--clients", min=1, max=9, help="Number of Nomad clients. "
                                                   "(default: 2, or the last `up`'s)", show_default=False)]
AllocArg = Annotated[Optional[str], typer.Argument(
    help="Allocation ID or unique prefix. (default: the demo job's running allocation)", show_default=False)]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")]
KeepInfraOpt = Annotated[bool, typer.Option("--keep-infra", help="Keep the AWS side (and the local endpoint): stop "
                                                                 "only the job, its tasks and the agents.")]


def register(app: typer.Typer) -> None:
    """Add this module's top-level commands to the main app."""
    for command in (doctor, up, run, status, logs, teardown):
        app.command()(command)


def _json(data) -> None:
    typer.echo(jsonlib.dumps(data, indent=2, default=str))


def print_checks(checks, out=None) -> None:
    """The checks as a table (mark, check, source of a binary, detail), then each fix below it as its own
    paragraph, so hints stay readable (whole words, URLs unbroken) even at 80 columns."""
    out = out or console
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("check", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    fixes = []
    for c in checks:
        mark = "[green]✓[/green]" if c.ok else ("[red]✗[/red]" if c.blocking else "[yellow]![/yellow]")
        ref = ""
        if c.hint and not c.ok:
            fixes.append((len(fixes) + 1, c))
            ref = f" [dim]\\[fix {len(fixes)}][/dim]"
        table.add_row(mark, escape(c.name), escape(getattr(c, "source", None) or ""), escape(c.detail) + ref)
    out.print(table)
    for n, c in fixes:
        out.print(f"[bold]fix {n}[/bold] ({escape(c.name)}): {escape(c.hint)}", overflow="fold")


def doctor(local: ModeOpt = None, region: RegionOpt = None, clients: ClientsOpt = None,
           tf_plugin_dir: TfPluginDirOpt = None, json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Check what `up` needs: nomad 1.1-1.9, terraform and its aws provider, AWS credentials (not with --local), free agent ports, a writable plugin directory and a sane state directory. Exits 1 when something blocks `up`.

    For nomad and terraform it shows the source (env, PATH or ecsdemo cache) and the version. A missing one is a warning, not a blocker: `up` installs it (`ecsdemo install nomad` does it now)."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    cfg = resolve_config(state_dir, local=local, region=region, clients=clients, tf_plugin_dir=tf_plugin_dir)
    checks = doc.run_checks(cfg)
    blocking = doc.blocking_failures(checks)
    if json:
        _json({"ok": not blocking, "checks": [c.doctor_json() for c in checks]})
    else:
        print_checks(checks)
        if blocking:
            console.print(f"[red]{len(blocking)} problem(s) block `ecsdemo up`[/red]")
        else:
            console.print("[green]ready for `ecsdemo up" + (" --local" if cfg.local else "") + "`[/green]")
    if blocking:
        raise typer.Exit(1)


def up(local: ModeOpt = None, region: RegionOpt = None, clients: ClientsOpt = None,
       tf_plugin_dir: TfPluginDirOpt = None, no_install: NoInstallOpt = False,
       releases_url: ReleasesUrlOpt = None, releases_key: ReleasesKeyOpt = None,
       state_dir: StateDirOpt = None) -> None:
    """Bring the whole demo up: checks, (local endpoint,) Terraform, rendered configs, the plugin, a Nomad server and N clients in the background; waits until every client has a healthy ecs driver. Safe to run again (reuses what is up); after Ctrl-C, `ecsdemo teardown` cleans up.

    nomad and terraform come from ECSDEMO_NOMAD_BIN / ECSDEMO_TERRAFORM, else PATH, else ecsdemo's cache. When none is usable (e.g. no nomad, or Nomad 1.10+ on PATH, which has no remote tasks), `up` installs Nomad 1.9.7 (and the newest Terraform 1.x) into its cache, verified like `ecsdemo install`; your own binaries are never changed. --no-install turns this off."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    cfg = resolve_config(state_dir, local=local, region=region, clients=clients, tf_plugin_dir=tf_plugin_dir)
    with download_bar() as on_bytes:
        policy = lifecycle.BinaryPolicy(install=not no_install, releases_url=releases_url,
                                        releases_key=releases_key, on_bytes=on_bytes)
        result = lifecycle.up(cfg, RichReporter(), binaries=policy)
    where = f"local endpoint {result.endpoint}" if result.endpoint else f"AWS {cfg.region}"
    console.print()
    console.print(f"[bold green]The demo is up[/bold green] ({where}, ECS cluster {result.cluster})")
    console.print(f"Nomad UI: [bold]{result.ui_url}[/bold]", soft_wrap=True)
    print_nodes(result.nodes)
    console.print("\nNext: [bold]ecsdemo run[/bold] (submit the job), [bold]ecsdemo status[/bold], "
                  "[bold]ecsdemo run-scenario all[/bold], and finally [bold]ecsdemo teardown[/bold]")


def run(state_dir: StateDirOpt = None) -> None:
    """Submit the demo job (parse, then register through the Nomad API) and wait until its allocation runs and its ECS task is RUNNING."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    cfg = resolve_config(state_dir, required=True)
    result = lifecycle.run(cfg, RichReporter())
    console.print(f"allocation [bold]{result.alloc_id}[/bold] on {result.node}", soft_wrap=True)
    console.print(f"ECS task   [bold]{result.task_arn}[/bold] RUNNING", soft_wrap=True)
    console.print("Next: [bold]ecsdemo logs --follow[/bold] (the driver's monitoring lines) or "
                  "[bold]ecsdemo run-scenario all[/bold]")


def status(json: JsonOpt = False, wide: WideOpt = False, state_dir: StateDirOpt = None) -> None:
    """One view of the demo: agents, nodes (status, eligibility, drain, ecs driver), the job's allocations (with the ECS task from their task handle) and the cluster's ECS tasks, with orphans (no live allocation owns them) flagged. The same layout as `ecsdemo watch`; IDs are shortened to 8 characters and ECS tasks shown by task id unless --wide."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    cfg = resolve_config(state_dir, required=True)
    data = status_view.collect(cfg)
    if json:
        _json(data)
    else:
        print_status(data, wide)


def logs(alloc: AllocArg = None, follow: FollowOpt = False, state_dir: StateDirOpt = None) -> None:
    """The demo task's stdout through the Nomad API: the driver's monitoring lines."""
    cfg = resolve_config(state_dir, required=True)
    if follow:
        alloc_id = status_view.resolve_alloc(cfg, alloc)
        for text in status_view.follow(cfg, alloc_id):
            typer.echo(text, nl=False)
    else:
        _, text = status_view.logs(cfg, alloc)
        typer.echo(text, nl=False)


def teardown(keep_infra: KeepInfraOpt = False, state_dir: StateDirOpt = None) -> None:
    """Stop the job and wait for its ECS task to stop, stop any ECS task the driver left, stop the agents ecsdemo started, destroy the infrastructure, stop the local endpoint and remove agent data. Safe to repeat, and works from any partial state."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    cfg = resolve_config(state_dir)   # no config saved: the defaults, to clean up whatever is recorded
    result = lifecycle.teardown(cfg, RichReporter(), keep_infra=keep_infra)
    infra_done = "" if keep_infra else (
        f", infrastructure {'destroyed' if result.infra_destroyed else 'already gone'}")
    console.print(f"[bold green]Torn down[/bold green]: "
                  f"{len(result.ecs_tasks_stopped)} ECS task(s) stopped, {len(result.agents)} agent(s) stopped"
                  + infra_done)


def print_nodes(nodes: list[dict], wide: bool = False) -> None:
    console.print(views.nodes_table(nodes, wide))


def print_status(data: dict, wide: bool = False) -> None:
    """The status layout `ecsdemo watch` also uses (ecsdemo.views), at any terminal width."""
    console.print(views.status_view(data, wide))
