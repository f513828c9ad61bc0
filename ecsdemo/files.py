"""Writing files atomically: a reader (a Nomad agent, a browser, a second ecsdemo) never sees half a file.

`write_atomic` writes to a temporary file in the target's directory and renames it over the target, so
the target is either the old content or the new one. On any failure, Ctrl-C included, the temporary file
is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int | None = None) -> Path:
    """Write `text` (UTF-8) to `path` atomically; `mode` sets the permission bits (e.g. 0o755).

    Raises OSError as the file system reports it: callers turn it into an EcsdemoError naming what to do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
