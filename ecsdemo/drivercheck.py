"""Workflow: `ecsdemo driver check`, the installed plugin launched and exercised as a Nomad client would.

`check_installed` finds the launcher of a demo's plugin dir, picks the AWS endpoint (an embedded one it
starts with the cluster for `--local`, the running demo's in local mode, else AWS or the one given) and
runs `check_plugin`: handshake, plugin info, schemas, SetConfig (the loader's call, then the driver
manager's), capabilities, the first fingerprint and shutdown, each step a `Check` in the report.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from driver.pb import base_pb2, driver_pb2
from ecsdemo import aws, local
from ecsdemo.check import Check
from ecsdemo.config import PLUGIN_NAME, DemoConfig
from ecsdemo.cty import CtyError
from ecsdemo.errors import EcsdemoError
from ecsdemo.pluginclient import API_VERSION, KILL_WAIT_S, PluginError, PluginProcess
from ecsdemo.progress import Reporter

LOG_NAME = "driver-check.log"
MOTO_LOG_NAME = "driver-check-moto.log"


@dataclass
class CheckReport:
    launcher: str
    steps: list[Check] = field(default_factory=list)
    health: str = ""
    health_description: str = ""
    log_path: Path | None = None   # the plugin's stderr (not in the JSON)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_json(self) -> dict:
        return {"launcher": self.launcher, "ok": self.ok, "health": self.health,
                "health_description": self.health_description,
                "steps": [s.summary_json() for s in self.steps]}


def check_installed(cfg: DemoConfig, reporter: Reporter, plugin_dir: Path | None = None, local_endpoint: bool = False,
                    cluster: str | None = None, region: str | None = None,
                    endpoint: str | None = None) -> CheckReport:
    """Check the plugin installed in `plugin_dir` (default: the demo's) with a plugin config for `cluster`
    and `region` (default: the demo's). `local_endpoint` starts an embedded AWS endpoint holding the
    cluster for the check; without it, a demo in local mode is checked against its running endpoint."""
    launcher = (plugin_dir or cfg.plugin_dir) / PLUGIN_NAME
    if not launcher.exists():
        raise EcsdemoError(f"no plugin at {launcher}", hint="run `ecsdemo driver install` (or pass --plugin-dir)")
    state = cfg.state.ensure()
    cluster, region = cluster or cfg.name, region or cfg.region
    env = dict(os.environ)
    moto = None
    try:
        if local_endpoint:
            with reporter.step("start the embedded AWS endpoint"):
                moto = local.start_moto(state.logs / MOTO_LOG_NAME)
                env.update(local.LOCAL_CREDENTIALS)
                env["AWS_EC2_METADATA_DISABLED"] = "true"
                ecs = aws.ecs_client(dataclasses.replace(cfg, local=True, region=region), url=moto.url)
                ecs.create_cluster(clusterName=cluster)
            endpoint = moto.url
        elif cfg.local and not endpoint:  # the saved demo runs on the embedded endpoint: check against it
            endpoint = aws.endpoint_url(cfg)
            env.update(local.LOCAL_CREDENTIALS)
        config = {"enabled": True, "cluster": cluster, "region": region}
        if endpoint:
            config["endpoint"] = endpoint
        return check_plugin(launcher, config, reporter, env=env, log_path=state.logs / LOG_NAME)
    finally:
        if moto is not None:
            moto.stop()


class _Failed(Exception):
    pass


def _run_step(report: CheckReport, reporter: Reporter, title: str, fn: Callable[[], str]) -> bool:
    try:
        with reporter.step(title):
            detail = fn()
    except (_Failed, PluginError) as exc:   # a failure worded for the user
        report.steps.append(Check(title, False, str(exc)))
        reporter.warn(f"{title}: {exc}")
        return False
    except Exception as exc:  # grpc.RpcError and friends: report, don't crash the CLI
        details = exc.details() if hasattr(exc, "details") else str(exc)
        report.steps.append(Check(title, False, f"{type(exc).__name__}: {details}"))
        reporter.warn(f"{title}: {details}")
        return False
    report.steps.append(Check(title, True, detail))
    return True


def check_plugin(launcher: Path, config: dict, reporter: Reporter, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, fingerprint_timeout: float = 30.0) -> CheckReport:
    """Launch the installed plugin as Nomad would and exercise it: handshake, info, schemas, config, health."""
    launcher = Path(launcher)
    report = CheckReport(launcher=str(launcher), log_path=log_path)
    if not launcher.is_file() or not os.access(launcher, os.X_OK):
        report.steps.append(Check("find the plugin", False, f"{launcher} is not an executable file"))
        return report
    if log_path is None:
        log_path = report.log_path = Path(tempfile.mkdtemp(prefix="ecsdemo-check-")) / "plugin.log"
    proc = PluginProcess([str(launcher)], log_path, env=env)
    try:
        def handshake() -> str:
            hs = proc.start(timeout=60.0)
            return f"{hs.line} ({proc.handshake_s:.2f}s)"

        def info() -> str:
            r = proc.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=10)
            if r.type != base_pb2.DRIVER or API_VERSION not in r.plugin_api_versions:
                raise _Failed(f"not a Nomad driver speaking {API_VERSION}: type={r.type}, "
                              f"api versions={list(r.plugin_api_versions)}")
            return f"driver {r.name!r} version {r.plugin_version}, API {', '.join(r.plugin_api_versions)}"

        def schemas() -> str:
            cfg = proc.config_schema()
            task = proc.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest(), timeout=10).spec
            return (f"plugin config keys: {', '.join(sorted(cfg.object.attributes))}; "
                    f"task config keys: {', '.join(sorted(task.object.attributes))}")

        def set_config() -> str:
            try:
                proc.set_config(config, agent=False)   # the loader's validation call ...
                proc.set_config(config, agent=True)    # ... and the driver manager's
            except CtyError as exc:
                raise _Failed(f"the config does not fit the plugin's schema: {exc}") from None
            return "accepted: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items()))

        def capabilities() -> str:
            c = proc.driver.Capabilities(driver_pb2.CapabilitiesRequest(), timeout=10).capabilities
            if not c.remote_tasks:
                raise _Failed("remote_tasks is false: Nomad would not hand ECS tasks over on drain")
            return "remote tasks, no signals, no exec"

        def fingerprint() -> str:
            stream = proc.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=fingerprint_timeout)
            try:
                first = next(stream)
            finally:
                stream.cancel()
            report.health = driver_pb2.FingerprintResponse.HealthState.Name(first.health).lower()
            report.health_description = first.health_description
            if first.health != driver_pb2.FingerprintResponse.HEALTHY:
                raise _Failed(f"{report.health}: {first.health_description}")
            attrs = {k: v.WhichOneof("value") and getattr(v, v.WhichOneof("value"))
                     for k, v in first.attributes.items()}
            return "healthy: " + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs))

        def shutdown() -> str:
            started = time.monotonic()
            code = proc.shutdown()
            took = time.monotonic() - started
            if code != 0 or took > KILL_WAIT_S:
                raise _Failed(f"did not exit cleanly on Shutdown (code {code}, {took:.1f}s)")
            return f"exited in {took:.2f}s"

        for title, fn in (("launch and handshake", handshake), ("plugin info", info), ("schemas", schemas),
                          ("SetConfig", set_config), ("capabilities", capabilities),
                          ("fingerprint", fingerprint), ("shutdown", shutdown)):
            if not _run_step(report, reporter, title, fn) and title in ("launch and handshake", "plugin info",
                                                                       "SetConfig"):
                break
    finally:
        if proc.alive():
            proc.kill()
    return report
