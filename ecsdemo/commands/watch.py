"""`ecsdemo watch`: a full-screen live view of the demo (or one frame with --once)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.live import Live

from ecsdemo import views
from ecsdemo.commands.common import StateDirOpt, WideOpt
from ecsdemo.console import console
from ecsdemo.errors import EcsdemoError
from ecsdemo.resolve import resolve_config
from ecsdemo.watch import Watcher


def register(app: typer.Typer) -> None:
    """Add `watch` to the main app."""
    app.command()(watch)


def watch(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit (for scripts).")] = False,
    wide: WideOpt = False,
    interval: Annotated[float, typer.Option("--interval", min=0.5, max=60,
                                            help="Seconds between ECS DescribeTasks polls.")] = 2.0,
    state_dir: StateDirOpt = None,
) -> None:
    """Follow the demo live, full screen: nodes (status, eligibility, drain, ecs driver health and why),
    the demo job's allocations (node, desired/client status, version, the ECS task each holds), the
    cluster's ECS tasks (status, task definition, owner, orphan flag) and an event strip (allocation
    placed, task detached, recovered, ECS status and driver health changes). Nomad is followed with
    blocking queries, ECS with batched DescribeTasks; a part that is down is shown as such. Ctrl-C exits.
    Run it in one terminal while `ecsdemo run-scenario all` runs in another."""
    cfg = resolve_config(state_dir, required=True)
    if not once and not console.is_terminal:
        raise EcsdemoError("`ecsdemo watch` needs a terminal (its output is not one)",
                           hint="use `ecsdemo watch --once` to print one frame", exit_code=2)
    watcher = Watcher(cfg, ecs_interval=interval)
    if once:
        console.print(views.watch_view(watcher.refresh(), wide))
        return
    try:
        with Live(console=console, screen=True, auto_refresh=False, redirect_stdout=False,
                  redirect_stderr=False) as live:
            for frame in watcher.frames():
                live.update(views.fit_watch_view(console, frame, wide), refresh=True)
    except KeyboardInterrupt:
        pass                    # Live has restored the screen; nothing was started, nothing to clean up
    finally:
        watcher.close()
