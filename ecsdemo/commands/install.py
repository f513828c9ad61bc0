"""`ecsdemo install nomad|terraform`: a verified HashiCorp binary in ecsdemo's cache, with a download bar."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Optional

import typer

from ecsdemo import releases
from ecsdemo.commands.common import JsonOpt, ReleasesKeyOpt, ReleasesUrlOpt, download_bar
from ecsdemo.console import console
from ecsdemo.errors import EcsdemoError


def register(app: typer.Typer) -> None:
    """Add `install` to the main app."""
    app.command()(install)


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
    """Download a HashiCorp binary, verify it (OpenPGP signature of SHA256SUMS with HashiCorp's release key, the zip's SHA-256, `<binary> version`) and install it into ecsdemo's cache ($ECSDEMO_CACHE_DIR or the user cache directory), where `up` and `doctor` find it. Your own binaries are never touched; a verified one in the cache is reused without network."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
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
