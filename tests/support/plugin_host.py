"""A Nomad-like host for the plugin: launches it as a subprocess the way Nomad's client does.

    host = PluginHost(workdir)            # the installed `nomad-driver-ecs` console script
    host.start()                          # env = os.environ + go-plugin vars, handshake line parsed
    host.set_config({"enabled": True, "cluster": "c", "endpoint": url, "fingerprint_interval": "200ms"})
    next(host.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=10))
    host.start_task(task_id, alloc_id, task_name, body)   # TaskConfig with msgpack_driver_config like Nomad's
    host.shutdown()                       # GRPCController/Shutdown, wait 2 s, SIGKILL
    host.kill()                           # SIGKILL (a crash)
    host.logs()                           # the plugin's stderr, parsed as hclog JSON lines

`cty_msgpack(spec, body)` encodes an HCL body (as a dict) against an hclspec Spec as Nomad does; the
spec comes from the plugin itself (ConfigSchema / TaskConfigSchema), as it does in Nomad. `agent_start`
runs the three launches a Nomad client agent makes at start (docs/nomad-notes.md). The launching and
encoding code is ecsdemo's own go-plugin host (`ecsdemo.pluginclient`, `ecsdemo.cty`), which `ecsdemo driver
check` also uses: one implementation, tested here.
"""

from __future__ import annotations

import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from driver.pb import base_pb2, driver_pb2
from ecsdemo.cty import cty_msgpack
from ecsdemo.pluginclient import PluginProcess

PLUGIN_EXE = Path(sys.executable).parent / "nomad-driver-ecs"   # the installed console script
# Keep the AWS SDK from probing the EC2 metadata service (1 s timeouts) when a test has no credentials.
TEST_ENV = {"AWS_EC2_METADATA_DISABLED": "true"}
_serial = itertools.count(1)


class PluginHost(PluginProcess):
    def __init__(self, workdir: Path, argv: list[str] | None = None, env: Mapping[str, str] | None = None,
                 extra_env: Mapping[str, str] | None = None, **kwargs):
        n = next(_serial)
        merged = dict(TEST_ENV)
        merged.update(extra_env or {})
        super().__init__(argv or [str(PLUGIN_EXE)], Path(workdir) / f"plugin-{n}.stderr", env=env,
                         extra_env=merged, **kwargs)

    # --- logs ------------------------------------------------------------------------------------
    def stderr_lines(self) -> list[str]:
        try:
            return self.stderr_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def logs(self, strict: bool = True) -> list[dict]:
        """Every stderr line parsed as JSON. A non-JSON line raises (Nomad would lose its level) unless
        `strict` is False, which skips such lines."""
        out = []
        for line in self.stderr_lines():
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                if strict:
                    raise
        return out

    # --- Nomad-shaped calls ----------------------------------------------------------------------
    def plugin_info(self, timeout: float = 10.0):
        return self.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=timeout)

    def task_config_schema(self, timeout: float = 10.0):
        return self.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest(), timeout=timeout).spec

    def encode_task_config(self, body: dict | None) -> bytes:
        """A task's `config {}` body as Nomad's msgpack_driver_config (against the plugin's TaskConfigSchema)."""
        return cty_msgpack(self.task_config_schema(), body)

    def task_config(self, task_id: str, alloc_id: str, name: str, body: dict | None, **fields) -> driver_pb2.TaskConfig:
        """A TaskConfig as Nomad 1.1 builds it for StartTask (`fields` adds e.g. stdout_path, env)."""
        return driver_pb2.TaskConfig(id=task_id, name=name, alloc_id=alloc_id,
                                     msgpack_driver_config=self.encode_task_config(body), **fields)

    def start_task(self, task_id: str, alloc_id: str, name: str, body: dict | None, timeout: float = 30.0,
                   **fields) -> driver_pb2.StartTaskResponse:
        req = driver_pb2.StartTaskRequest(task=self.task_config(task_id, alloc_id, name, body, **fields))
        return self.driver.StartTask(req, timeout=timeout)


@dataclass
class AgentStart:
    info: base_pb2.PluginInfoResponse
    config_schema: object              # hclspec Spec from process #1
    launches: list[PluginHost]         # processes #1, #2, #3
    host: PluginHost                   # process #3, configured and serving (the driver manager's instance)


def agent_start(launch: Callable[[], PluginHost], config: dict | None) -> AgentStart:
    """Contract F.1: #1 PluginInfo+ConfigSchema+Kill; #2 SetConfig twice (no nomad_config)+Kill;
    #3 SetConfig with nomad_config, left running. The caller then opens Fingerprint and TaskEvents."""
    first = launch()
    info = first.plugin_info()
    schema = first.config_schema()
    first.shutdown()
    second = launch()
    second.set_config(config, agent=False)
    second.set_config(config, agent=False)
    second.shutdown()
    third = launch()
    third.set_config(config, agent=True)
    return AgentStart(info=info, config_schema=schema, launches=[first, second, third], host=third)
