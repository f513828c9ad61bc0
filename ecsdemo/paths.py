"""Where the data files shipped with ecsdemo live (`templates/`, `terraform/`).

In an installed wheel they sit in `ecsdemo/_share/`; in a source checkout (editable install or running
from the tree) they sit at the repository root, next to the `ecsdemo` package.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def share_dir(name: str) -> Path:
    """Return the directory of shipped data called `name` ("templates" or "terraform")."""
    for candidate in (_PKG / "_share" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"ecsdemo's '{name}' directory is missing from this installation ({_PKG})")


def templates_dir() -> Path:
    return share_dir("templates")


def terraform_dir() -> Path:
    return share_dir("terraform")
