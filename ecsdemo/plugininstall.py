"""Adapter: install the nomad-driver-ecs plugin where a Nomad client finds it.

`install_launcher` writes the executable `nomad-driver-ecs` launcher into a client's plugin_dir; it runs
the plugin (`driver.main`) with the Python environment ecsdemo is installed in. `ecsdemo driver install`
and `ecsdemo up` call it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ecsdemo.config import PLUGIN_NAME
from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic


def launcher_text(python: str | None = None) -> str:
    python = python or sys.executable
    # -P: the agent's working directory must not shadow the installed `driver` package.
    return ("#!/bin/sh\n"
            f"# {PLUGIN_NAME}: the ECS task driver plugin for Nomad, written by `ecsdemo driver install`.\n"
            "# It runs the plugin with the Python environment ecsdemo is installed in.\n"
            f"exec {shlex.quote(python)} -P -m driver.main \"$@\"\n")


def install_launcher(plugin_dir: Path) -> Path:
    """Write an executable `nomad-driver-ecs` into `plugin_dir` (idempotent; never overwrites another file)."""
    plugin_dir = Path(plugin_dir)
    target = plugin_dir / PLUGIN_NAME
    text = launcher_text()
    if target.exists() or target.is_symlink():
        try:
            same = target.is_file() and target.read_text() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise EcsdemoError(f"{target} exists and is not this ecsdemo's launcher; not overwriting it",
                               hint="remove it, or choose another directory with --plugin-dir")
        target.chmod(0o755)
        return target
    try:
        write_atomic(target, text, mode=0o755)
    except OSError as exc:
        raise EcsdemoError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target
