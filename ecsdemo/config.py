"""The one configuration object every ecsdemo step reads its values from.

`up` saves it in the state directory (`config.json`), so later commands (`run`, `status`, `teardown`,
`run-scenario`) act on the same demo without repeating flags. Nothing downstream hard-codes a name, a
region or a port: it comes from here or from Terraform's outputs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecsdemo.errors import EcsdemoError
from ecsdemo.state import StateDir

CONFIG_FILE = "config.json"

JOB_ID = "nomad-ecs-demo"
GROUP_NAME = "ecs-remote-task-demo"
TASK_NAME = "http-server"
DRIVER_NAME = "ecs"                # the driver name jobs use (`driver = "ecs"`)
PLUGIN_NAME = "nomad-driver-ecs"   # the plugin executable's file name and the agent's `plugin "<label>"`


@dataclass
class DemoConfig:
    state_dir: Path = field(default_factory=lambda: StateDir().root)
    local: bool = False
    region: str = "us-east-1"
    name: str = "nomad-remote-driver-demo"
    vpc_cidr: str = "10.0.0.0/24"
    clients: int = 2
    render_dir: Path = field(default_factory=lambda: Path.cwd() / "nomad")
    tf_plugin_dir: Path | None = field(default_factory=lambda: Path(os.environ["ECSDEMO_TF_PLUGIN_DIR"])
                                       if os.environ.get("ECSDEMO_TF_PLUGIN_DIR") else None)
    # Nomad ports: the server uses http/rpc/serf; client i (1-based) uses
    # http = client_http_base + (i-1)*client_http_step.
    server_http_port: int = 4646
    server_rpc_port: int = 4647
    server_serf_port: int = 4648
    client_http_base: int = 5656
    client_http_step: int = 1000

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.render_dir = Path(self.render_dir)
        if self.tf_plugin_dir is not None:
            self.tf_plugin_dir = Path(self.tf_plugin_dir)
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.clients, int) or not 1 <= self.clients <= 9:
            raise EcsdemoError(f"--clients must be between 1 and 9, got {self.clients!r}")
        if not self.region or not all(c.isalnum() or c == "-" for c in self.region):
            raise EcsdemoError(f"invalid AWS region {self.region!r}", hint="for example us-east-1")
        for port_field in ("server_http_port", "server_rpc_port", "server_serf_port", "client_http_base"):
            port = getattr(self, port_field)
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise EcsdemoError(f"{port_field} must be a TCP port, got {port!r}")

    # --- derived values -------------------------------------------------------------------------
    @property
    def state(self) -> StateDir:
        return StateDir(self.state_dir)

    @property
    def plugin_dir(self) -> Path:
        return self.render_dir / "plugins"

    @property
    def server_address(self) -> str:
        return f"http://127.0.0.1:{self.server_http_port}"

    def client_names(self) -> list[str]:
        return [f"nomad-client-{i}" for i in range(1, self.clients + 1)]

    def client_http_port(self, index: int) -> int:
        """HTTP port of client `index` (1-based): 5656, 6656, ... as in the upstream demo."""
        return self.client_http_base + (index - 1) * self.client_http_step

    # --- persistence ----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "DemoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise EcsdemoError(f"{CONFIG_FILE} has unknown keys: {', '.join(sorted(unknown))}",
                               hint="it was written by another ecsdemo version; "
                                    "run `ecsdemo teardown` with that version")
        try:
            return cls(**data)
        except TypeError as exc:
            raise EcsdemoError(f"{CONFIG_FILE} is not valid: {exc}") from exc

    def save(self) -> None:
        self.state.write_json(CONFIG_FILE, self.to_json())

    @classmethod
    def load(cls, state: StateDir) -> "DemoConfig | None":
        """The configuration saved by `up`, or None when there is none."""
        data = state.read_json(CONFIG_FILE)
        if data is None:
            return None
        if not isinstance(data, dict):
            raise EcsdemoError(f"state file {state.path(CONFIG_FILE)} is corrupt (not a JSON object)")
        return cls.from_json(data)
