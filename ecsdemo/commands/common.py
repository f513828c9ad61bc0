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
ModeOpt = Annotated[Optional[bool], typer.Option(
    "--local/--aws", help="--local: the embedded AWS endpoint (a moto server; no account, no cost). --aws: real AWS. "
                          "(default: the saved configuration's, else --aws)", show_default=False)]
RegionOpt = Annotated[Optional[str], typer.Option("--region", help="AWS region. (default: us-east-1, or the saved one)",
                                                  show_default=False)]
TfPluginDirOpt = Annotated[Optional[Path], typer.Option(
    "--tf-plugin-dir", envvar="ECSDEMO_TF_PLUGIN_DIR", file_okay=False,
    help="A local Terraform provider mirror holding hashicorp/aws (e.g. /opt/tf-plugins), for machines without "
         "registry access: `terraform init` then never contacts the registry.", show_default=False)]
