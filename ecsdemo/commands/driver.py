"""`ecsdemo driver serve|install|check`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run, install and check the nomad-driver-ecs plugin.", no_args_is_help=True)
