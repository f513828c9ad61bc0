"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

StateDirOpt = Annotated[
    Optional[Path],
    typer.Option("--state-dir", envvar="ECSDEMO_STATE_DIR", file_okay=False,
                 help="Where ecsdemo keeps its state, logs and pids. (default: ./.ecsdemo)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
LocalOpt = Annotated[bool, typer.Option("--local", help="Use the embedded AWS endpoint (a moto server): no AWS account, no cost.")]
