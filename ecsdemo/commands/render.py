"""`ecsdemo render`: the Nomad agent configs and the demo job, from the last apply's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ecsdemo import render
from ecsdemo.commands.common import JsonOpt, StateDirOpt, echo_json
from ecsdemo.console import console
from ecsdemo.errors import EcsdemoError
from ecsdemo.outputs import recorded
from ecsdemo.resolve import resolve_config

RenderDirOpt = Annotated[Optional[Path], typer.Option(
    "--render-dir", file_okay=False, help="Where to write the Nomad files. (default: ./nomad, or the saved one)",
    show_default=False)]
ClientsOpt = Annotated[Optional[int], typer.Option("--clients", min=1, max=9,
                                                   help="Number of client configs. (default: 2, or the saved number)",
                                                   show_default=False)]


def register(app: typer.Typer) -> None:
    """Add `render` to the main app."""
    app.command("render")(render_cmd)


def render_cmd(render_dir: RenderDirOpt = None, clients: ClientsOpt = None, json: JsonOpt = False,
               state_dir: StateDirOpt = None) -> None:
    """Write the Nomad server and client configs and the demo job from the last apply's outputs.

    Re-run it after the task definition changes: the job then names the new revision.
    """
    cfg = resolve_config(state_dir, render_dir=render_dir, clients=clients)
    outputs = recorded(cfg.state)
    if outputs is None:
        raise EcsdemoError("there are no Terraform outputs to render from", hint="run `ecsdemo infra apply` first")
    paths = render.render_all(cfg, outputs, outputs.endpoint)
    if render_dir is not None or clients is not None:
        cfg.save()
    if json:
        echo_json([str(p) for p in paths])
    else:
        for p in paths:
            console.print(f"wrote {p}")
