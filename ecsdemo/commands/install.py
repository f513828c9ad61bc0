"""`ecsdemo install nomad|terraform`: a verified HashiCorp binary in ecsdemo's cache, with a download bar."""

from __future__ import annotations

import contextlib
from typing import Annotated, Iterator, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from ecsdemo.commands.common import JsonOpt, ReleasesKeyOpt, ReleasesUrlOpt
from ecsdemo.console import console, err_console


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


def register(app: typer.Typer) -> None:
    @app.command()
    def install(
        product: Annotated[str, typer.Argument(help="nomad or terraform.", metavar="nomad|terraform",
                                               show_default=False)],
        version: Annotated[Optional[str], typer.Option("--version", help="Version to install. (default: Nomad "
                                                        "1.9.7, the last with remote task drivers; Terraform: the "
                                                        "newest 1.x in the index)", show_default=False)] = None,
        releases_url: ReleasesUrlOpt = None,
        releases_key: ReleasesKeyOpt = None,
        json: JsonOpt = False,
    ) -> None:
        """Download a HashiCorp binary, verify it (OpenPGP signature of SHA256SUMS with HashiCorp's release key, the zip's SHA-256, `<binary> version`) and install it into ecsdemo's cache ($ECSDEMO_CACHE_DIR or the user cache directory), where `up` and `doctor` find it. Your own binaries are never touched; a verified one in the cache is reused without network."""
        import json as jsonlib

        from ecsdemo import releases
        from ecsdemo.errors import EcsdemoError

        if product not in releases.PRODUCTS:
            raise EcsdemoError(f"unknown product {product!r}: choose nomad or terraform",
                               hint="e.g. `ecsdemo install nomad`")
        src = releases.source(releases_url, releases_key)
        with download_bar() as on_bytes:
            done = releases.install(product, version, src, on_bytes=on_bytes)
        if json:
            typer.echo(jsonlib.dumps(done.to_json(), indent=2))
            return
        name = "Nomad" if product == "nomad" else "Terraform"
        if done.reused:
            console.print(f"{name} {done.version} is already installed (verified): {done.path}", soft_wrap=True)
        else:
            console.print(f"[green]✓[/green] {name} {done.version} verified and installed: {done.path}", soft_wrap=True)
