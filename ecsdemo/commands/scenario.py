"""`ecsdemo run-scenario drain|lost-node|update|stop|all`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `run-scenario` to the main app."""
