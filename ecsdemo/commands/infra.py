"""`ecsdemo infra apply|destroy|outputs`, `ecsdemo render` and `ecsdemo local start|stop|status`."""

from __future__ import annotations

import typer

infra_app = typer.Typer(help="Build or remove the AWS side with Terraform.", no_args_is_help=True)
local_app = typer.Typer(help="Manage the embedded AWS endpoint (a local moto server).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the top-level commands of this module (e.g. `render`) to the main app."""
