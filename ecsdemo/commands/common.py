"""Options and terminal helpers shared by several commands."""

from __future__ import annotations

import contextlib
import json as jsonlib
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from ecsdemo.console import err_console

StateDirOpt = Annotated[
    Optional[Path],
    typer.Option("--state-dir", envvar="ECSDEMO_STATE_DIR", file_okay=False,
                 help="Where ecsdemo keeps its state, logs and pids. (default: ./.ecsdemo)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
LocalOpt = Annotated[bool, typer.Option(
    "--local", help="Use the embedded AWS endpoint (a moto server): no AWS account, no cost.")]
ModeOpt = Annotated[Optional[bool], typer.Option(
    "--local/--aws", help="--local: the embedded AWS endpoint (a moto server; no account, no cost). --aws: real AWS. "
                          "(default: the saved configuration's, else --aws)", show_default=False)]
RegionOpt = Annotated[Optional[str], typer.Option("--region", help="AWS region. (default: us-east-1, or the saved one)",
                                                  show_default=False)]
TfPluginDirOpt = Annotated[Optional[Path], typer.Option(
    "--tf-plugin-dir", envvar="ECSDEMO_TF_PLUGIN_DIR", file_okay=False,
    help="A local Terraform provider mirror holding hashicorp/aws (e.g. /opt/tf-plugins), for machines without "
         "registry access: `terraform init` then never contacts the registry.", show_default=False)]
WideOpt = Annotated[bool, typer.Option("--wide", help="Full IDs and ECS task ARNs (wider than 80 columns).")]
ReleasesUrlOpt = Annotated[Optional[str], typer.Option(
    "--releases-url", envvar="ECSDEMO_RELEASES_URL", show_default=False,
    help="Where HashiCorp binaries come from: a mirror laid out like releases.hashicorp.com, http(s):// or "
         "file:// (for machines without internet). (default: https://releases.hashicorp.com)")]
ReleasesKeyOpt = Annotated[Optional[Path], typer.Option(
    "--releases-key", envvar="ECSDEMO_RELEASES_KEY", dir_okay=False, show_default=False,
    help="The armored OpenPGP public key that signs the mirror's SHA256SUMS files. (default: HashiCorp's "
         "release key, shipped with ecsdemo)")]
NoInstallOpt = Annotated[bool, typer.Option(
    "--no-install", help="Never download nomad or terraform: use only ECSDEMO_NOMAD_BIN / ECSDEMO_TERRAFORM, "
                         "PATH and binaries already in ecsdemo's cache.")]


@contextlib.contextmanager
def download_bar() -> Iterator:
    """An `on_bytes(name, done, total)` callback drawing a Rich bar (bytes, speed) on stderr for each
    download, shown only while that download runs (so `up`'s own spinners never overlap it)."""
    state: dict = {}

    def on_bytes(name: str, done: int, total: int | None) -> None:
        if state.get("name") == name and "progress" not in state:
            return                  # this download's bar is finished
        if state.get("name") != name:
            _stop(state)
            progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=err_console)
            progress.start()
            state.update(name=name, progress=progress, task=progress.add_task(name, total=total))
        state["progress"].update(state["task"], completed=done, total=total)
        if total is not None and done >= total:
            _stop(state)

    try:
        yield on_bytes
    finally:
        _stop(state)


def _stop(state: dict) -> None:
    progress = state.pop("progress", None)
    if progress is not None:
        progress.stop()


def echo_json(data: Any) -> None:
    """Print `data` as indented JSON with sorted keys (the `--json` output of infra, local, render and
    driver check)."""
    typer.echo(jsonlib.dumps(data, indent=2, sort_keys=True))


def key_value_table(rows: Iterable[tuple[str, str]]) -> Table:
    """Settings as two borderless columns: the key in bold, the value folded when long (infra outputs,
    local status)."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    return table
