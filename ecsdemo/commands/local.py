"""`ecsdemo local start|stop|status`: the embedded AWS endpoint (a moto server) of a state directory."""

from __future__ import annotations

import typer

from ecsdemo import local
from ecsdemo.commands.common import JsonOpt, StateDirOpt, echo_json, key_value_table
from ecsdemo.console import RichReporter, console
from ecsdemo.errors import EcsdemoError
from ecsdemo.state import StateDir


def register(app: typer.Typer) -> None:
    """Add the `local` command group to the main app."""
    group = typer.Typer(help="Manage the embedded AWS endpoint (a local moto server).", no_args_is_help=True)
    group.command("start")(local_start)
    group.command("stop")(local_stop)
    group.command("status")(local_status)
    app.add_typer(group, name="local")


def local_start(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Start the embedded AWS endpoint on a free port of 127.0.0.1 (or reuse the running one)."""
    state = StateDir(state_dir)
    url = local.ensure_local_endpoint(state, RichReporter(quiet=json))
    if json:
        echo_json(local.local_endpoint_status(state))
    else:
        console.print(url)


def local_stop(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Stop the embedded AWS endpoint (its resources go with it). Fine when it is not running."""
    stopped = local.stop_local_endpoint(StateDir(state_dir))
    if json:
        echo_json({"stopped": stopped})
    else:
        console.print("local AWS endpoint stopped" if stopped else "the local AWS endpoint was not running")


def local_status(json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """Show the embedded AWS endpoint (URL, pid, port, log); exit code 1 when it is not running and healthy."""
    status = local.local_endpoint_status(StateDir(state_dir))
    if json:
        echo_json(status)
    elif status is not None:
        state_text = "[green]healthy[/green]" if status["healthy"] else (
            "[yellow]running but not answering[/yellow]" if status["running"] else "[red]not running[/red]")
        rows = [(key, str(status.get(key))) for key in ("url", "pid", "port", "log", "started_at")]
        console.print(key_value_table([("status", state_text), *rows]))
    if status is None:
        raise EcsdemoError("no local AWS endpoint was started in this state directory",
                           hint="`ecsdemo local start` starts one")
    if not status["healthy"]:
        what = "does not answer" if status["running"] else "is not running"
        raise EcsdemoError(f"the local AWS endpoint (pid {status['pid']}) {what}",
                           hint="`ecsdemo local start` replaces it")
