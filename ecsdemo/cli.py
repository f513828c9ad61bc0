"""The `ecsdemo` command: wires the command modules into one Typer app and turns failures into messages."""

from __future__ import annotations

import os
import sys

import typer
from rich.markup import escape

from ecsdemo import __version__
from ecsdemo.commands import driver, infra, install, lifecycle, local, render, scenario, watch
from ecsdemo.console import err_console
from ecsdemo.errors import EcsdemoError

app = typer.Typer(
    name="ecsdemo",
    help=(
        "Nomad's ECS remote task driver demo in one command.\n\n"
        "Quick start (no AWS account needed):  ecsdemo up --local ; ecsdemo run ; ecsdemo status ; "
        "ecsdemo run-scenario all ; ecsdemo teardown"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ecsdemo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    pass


# Each command module adds its commands (or its command group) to the app; --help lists them in this order.
for module in (lifecycle, scenario, watch, install, render, infra, local, driver):
    module.register(app)


def main() -> None:
    """Console-script entry: clean messages for known failures and for Ctrl-C, never a traceback."""
    try:
        # Without standalone mode Typer returns (not raises) the code of a `typer.Exit` raised in a command.
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except EcsdemoError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]hint:[/dim] {escape(exc.hint)}", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        # Only the commands that start agents, endpoints or infrastructure leave something for teardown.
        starts_things = next((a for a in sys.argv[1:] if not a.startswith("-")), "") in (
            "up", "run", "run-scenario", "infra", "local")
        err_console.print("[yellow]interrupted[/yellow]" + (": what was started is recorded in the state directory; "
                                                          "`ecsdemo teardown` cleans it up" if starts_things else ""))
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("[yellow]aborted[/yellow]")
        sys.exit(1)
    except typer.TyperException as exc:  # usage errors (unknown command, bad option value): click's own message
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # a bug: a short message, not a traceback
        err_console.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
        err_console.print("[dim]please report this with the command you ran; set ECSDEMO_DEBUG=1 for a traceback[/dim]")
        if os.environ.get("ECSDEMO_DEBUG"):
            raise
        sys.exit(70)
