"""The gRPC servicers: Nomad's BasePlugin, the Driver's non-task RPCs, go-plugin's controller/stdio, health.

Servicers translate between proto messages and the plain Python domain (PluginConfig, Fingerprint,
TaskEvent); they hold no logic of their own beyond that. `Plugin` is the process-wide state they share.
Task RPCs come from `driver.task_servicer.TaskRpcs`, which `DriverServicer` inherits first: whatever it
does not define falls through to the generated base and answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from driver import __version__, log
from driver.aws import EcsApi, EcsTarget
from driver.events import EventBus, TaskEvent
from driver.fingerprint import HEALTHY, UNHEALTHY, Fingerprint, fingerprints
from driver.pb import attribute_pb2, base_pb2, base_pb2_grpc, driver_pb2, driver_pb2_grpc
from driver.pb import go_plugin_pb2, go_plugin_pb2_grpc
from driver.plugin_config import ConfigError, PluginConfig, decode_plugin_config
from driver.schema import CONFIG, TASK_CONFIG, to_proto
from driver.task_servicer import TaskRpcs

PLUGIN_NAME = "ecs"                 # the driver name jobs use: driver = "ecs"
API_VERSIONS = ["v0.1.0"]           # Nomad's drivers.ApiVersion010
_ACCEPTED_API_VERSIONS = {"v0.1.0", "0.1.0", ""}
_log = log.get_logger("plugin")


class Plugin:
    """Process-wide plugin state; lives as long as the process (a reattaching agent finds it configured)."""

    def __init__(self, stopping: asyncio.Event | None = None) -> None:
        self.config: PluginConfig | None = None
        self.events = EventBus()
        self.tasks = None                     # the task store; set up by on_config (lifecycle issue)
        self.ecs: EcsApi | None = None
        self.config_changed = asyncio.Event()  # set (and replaced) whenever a new config is applied
        self.stopping = stopping or asyncio.Event()  # set when the host asks us to exit (GRPCController/Shutdown)

    def apply_config(self, config: PluginConfig) -> None:
        """Keep `config` for the life of the process; rebuild the ECS client only when its target changes."""
        log.set_level(config.log_level)
        target = EcsTarget(config.cluster, config.region, config.endpoint) if config.enabled else None
        if (self.ecs.target if self.ecs else None) != target:
            # The old client is not closed: tasks tracked before the change may still be using it.
            self.ecs = EcsApi(target) if target else None
        changed = config != self.config
        self.config = config
        if changed:
            self.config_changed.set()
            self.config_changed = asyncio.Event()
        self.on_config(config)

    def on_config(self, config: PluginConfig) -> None:
        """Hook called after every successful SetConfig (the task lifecycle sets up `tasks` here)."""
        if self.ecs is None:
            return  # disabled: the task RPCs answer "disabled"; a tracked task keeps its old client
        if self.tasks is None:
            from driver.tasks import TaskManager

            def notify(handle, message, annotations):
                self.events.publish(TaskEvent(handle.task_id, handle.info.alloc_id, handle.info.name, message,
                                              dict(annotations)))
                log.get_logger("tasks").info(message, extra={"task_id": handle.task_id, **annotations})

            self.tasks = TaskManager(self.ecs, notify, poll_interval=config.poll_interval)
        else:
            self.tasks.reconfigure(self.ecs, config.poll_interval)

    def request_shutdown(self) -> None:
        self.stopping.set()


def _timestamp(dt) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _attribute(value) -> attribute_pb2.Attribute:
    if isinstance(value, bool):
        return attribute_pb2.Attribute(bool_val=value)
    if isinstance(value, int):
        return attribute_pb2.Attribute(int_val=value)
    if isinstance(value, float):
        return attribute_pb2.Attribute(float_val=value)
    return attribute_pb2.Attribute(string_val=str(value))


_HEALTH = {HEALTHY: driver_pb2.FingerprintResponse.HEALTHY, UNHEALTHY: driver_pb2.FingerprintResponse.UNHEALTHY}


def fingerprint_proto(fp: Fingerprint) -> driver_pb2.FingerprintResponse:
    return driver_pb2.FingerprintResponse(
        attributes={k: _attribute(v) for k, v in fp.attributes.items()},
        health=_HEALTH.get(fp.health, driver_pb2.FingerprintResponse.UNDETECTED),
        health_description=fp.description)


def event_proto(ev: TaskEvent) -> driver_pb2.DriverTaskEvent:
    return driver_pb2.DriverTaskEvent(task_id=ev.task_id, alloc_id=ev.alloc_id, task_name=ev.task_name,
                                      timestamp=_timestamp(ev.timestamp), message=ev.message,
                                      annotations={str(k): str(v) for k, v in ev.annotations.items()})


class BasePluginServicer(base_pb2_grpc.BasePluginServicer):
    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    async def PluginInfo(self, request, context):
        return base_pb2.PluginInfoResponse(type=base_pb2.DRIVER, plugin_api_versions=API_VERSIONS,
                                           plugin_version=__version__, name=PLUGIN_NAME)

    async def ConfigSchema(self, request, context):
        return base_pb2.ConfigSchemaResponse(spec=to_proto(CONFIG))

    async def SetConfig(self, request, context):
        if request.plugin_api_version not in _ACCEPTED_API_VERSIONS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"unsupported plugin_api_version {request.plugin_api_version!r} "
                                f"(this plugin speaks {', '.join(API_VERSIONS)})")
        try:
            config = decode_plugin_config(request.msgpack_config)
        except ConfigError as exc:
            _log.error("rejected plugin config", extra={"key": exc.key, "error": exc.message})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid plugin config: {exc}")
        self.plugin.apply_config(config)
        _log.info("plugin configured", extra={
            "enabled": config.enabled, "cluster": config.cluster, "region": config.region or "",
            "endpoint": config.endpoint or "", "poll_interval": config.poll_interval,
            "fingerprint_interval": config.fingerprint_interval, "agent": request.HasField("nomad_config")})
        return base_pb2.SetConfigResponse()


class DriverServicer(TaskRpcs, driver_pb2_grpc.DriverServicer):
    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    async def TaskConfigSchema(self, request, context):
        return driver_pb2.TaskConfigSchemaResponse(spec=to_proto(TASK_CONFIG))

    async def Capabilities(self, request, context):
        caps = driver_pb2.DriverCapabilities(
            send_signals=False, exec=False, fs_isolation=driver_pb2.DriverCapabilities.IMAGE,
            must_create_network=False, mount_configs=driver_pb2.DriverCapabilities.NO_MOUNTS, remote_tasks=True)
        return driver_pb2.CapabilitiesResponse(capabilities=caps)

    async def Fingerprint(self, request, context):
        async for fp in fingerprints(self.plugin):
            yield fingerprint_proto(fp)

    async def TaskEvents(self, request, context):
        async for ev in self.plugin.events.subscribe():
            yield event_proto(ev)


class ControllerServicer(go_plugin_pb2_grpc.GRPCControllerServicer):
    """go-plugin's Shutdown: stop serving and exit. Remote tasks are left alone (they keep running in ECS)."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    async def Shutdown(self, request, context):
        _log.info("shutdown requested by the host")
        self.plugin.request_shutdown()
        return go_plugin_pb2.Empty()


class StdioServicer(go_plugin_pb2_grpc.GRPCStdioServicer):
    """go-plugin's stdio forwarding: we never write to stdout, so the stream stays silent until cancelled."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    async def StreamStdio(self, request, context):
        await self.plugin.stopping.wait()
        return
        yield  # pragma: no cover - makes this a (silent) server stream


async def register(server, plugin: Plugin) -> None:
    """Add every service the host may call to `server` (a grpc.aio.Server); health says `plugin` SERVING."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(plugin), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(plugin), server)
    go_plugin_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerServicer(plugin), server)
    go_plugin_pb2_grpc.add_GRPCStdioServicer_to_server(StdioServicer(plugin), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
