"""`ecsdemo doctor|up|run|status|logs|teardown`: parse options, call the workflow, print the result."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Optional

import typer
from rich.table import Table

from ecsdemo.commands.common import JsonOpt, StateDirOpt
from ecsdemo.console import RichReporter, console

LocalFlag = Annotated[Optional[bool], typer.Option(
    "--local/--aws", help="--local: the embedded AWS endpoint (a moto server; no account, no cost). --aws: real AWS. "
                          "[default: what the last `up` used, else --aws]", show_default=False)]
RegionOpt = Annotated[Optional[str], typer.Option("--region", help="AWS region. [default: us-east-1, or the last `up`'s]",
                                                  show_default=False)]
ClientsOpt = Annotated[Optional[int], typer.Option("--clients", min=1, max=9, help="Number of Nomad clients. "
                                                   "[default: 2, or the last `up`'s]", show_default=False)]


def _json(data) -> None:
    typer.echo(jsonlib.dumps(data, indent=2, default=str))


def print_checks(checks) -> None:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("", "check", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        mark = "[green]✓[/green]" if c.ok else ("[red]✗[/red]" if c.blocking else "[yellow]![/yellow]")
        table.add_row(mark, c.name, c.detail, c.hint or "")
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add this module's top-level commands to the main app."""

    @app.command()
    def doctor(local: LocalFlag = None, region: RegionOpt = None, clients: ClientsOpt = None,
               json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
        """Check what `up` needs: nomad 1.1-1.9, terraform and its aws provider, AWS credentials (not with
        --local), free agent ports, a writable plugin directory and a sane state directory. Exits 1 when
        something blocks `up`."""
        from ecsdemo import doctor as doc
        from ecsdemo import lifecycle

        cfg = lifecycle.resolve_config(state_dir, local=local, region=region, clients=clients)
        checks = doc.run_checks(cfg)
        blocking = doc.blocking_failures(checks)
        if json:
            _json({"ok": not blocking, "checks": [c.to_json() for c in checks]})
        else:
            print_checks(checks)
            if blocking:
                console.print(f"[red]{len(blocking)} problem(s) block `ecsdemo up`[/red]")
            else:
                console.print("[green]ready for `ecsdemo up" + (" --local" if cfg.local else "") + "`[/green]")
        if blocking:
            raise typer.Exit(1)
