"""The state directory: one place for everything ecsdemo remembers between commands.

Default `.ecsdemo/` in the working directory (`--state-dir` or `ECSDEMO_STATE_DIR` change it). It holds
JSON documents (written atomically), logs, pids and the Terraform working copy. A document that exists
but cannot be read is an `EcsdemoError` naming the file, never a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ecsdemo.errors import EcsdemoError
from ecsdemo.files import write_atomic

DEFAULT_DIRNAME = ".ecsdemo"


def default_state_dir() -> Path:
    env = os.environ.get("ECSDEMO_STATE_DIR")
    return Path(env) if env else Path.cwd() / DEFAULT_DIRNAME


class StateDir:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).resolve() if root is not None else default_state_dir().resolve()

    def ensure(self) -> "StateDir":
        if self.root.exists() and not self.root.is_dir():
            raise EcsdemoError(f"state directory {self.root} exists but is not a directory",
                               hint="remove it or choose another with --state-dir")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
        except OSError as exc:
            raise EcsdemoError(f"cannot create state directory {self.root}: {exc.strerror}") from exc
        return self

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def read_json(self, name: str, default: Any = None) -> Any:
        """Read document `name` (e.g. "local.json"); `default` if it does not exist."""
        p = self.path(name)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return default
        except OSError as exc:
            raise EcsdemoError(f"cannot read state file {p}: {exc.strerror}") from exc
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise EcsdemoError(
                f"state file {p} is corrupt ({exc.msg} at line {exc.lineno})",
                hint="if nothing is running, remove the state directory; otherwise fix or delete that file",
            ) from exc

    def write_json(self, name: str, data: Any) -> Path:
        """Write document `name` atomically (a reader sees the old document or the new one, never half)."""
        self.ensure()
        return write_atomic(self.path(name), json.dumps(data, indent=2, sort_keys=True) + "\n")

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass
