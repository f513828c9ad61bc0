"""The gRPC servicers: Nomad's BasePlugin, the Driver's non-task RPCs, go-plugin's controller/stdio, health.

Servicers translate between proto messages and the plain Python domain (the declaration, PluginConfig,
Fingerprint, TaskEvent); they hold no logic of their own beyond that. The process-wide state they share
is a `driver.plugin.Plugin`. Task RPCs come from `driver.task_servicer.TaskRpcs`, which `DriverServicer`
inherits first: whatever it does not define falls through to the generated base and answers UNIMPLEMENTED.
"""

from __future__ import annotations

import json

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from driver import log
from driver.declaration import CAPABILITIES, CONFIG, PLUGIN_INFO, TASK_CONFIG, Block, Object, Spec
from driver.events import TaskEvent
from driver.fingerprint import HEALTHY, UNHEALTHY, Fingerprint, fingerprints
from driver.pb import (
    attribute_pb2,
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    go_plugin_pb2,
    go_plugin_pb2_grpc,
    hclspec_pb2,
)
from driver.plugin import Plugin
from driver.plugin_config import ConfigError, decode_plugin_config
from driver.task_servicer import TaskRpcs

_log = log.get_logger("plugin")


def hclspec_proto(obj: Object) -> hclspec_pb2.Spec:
    """The hclspec `Spec` (an Object) for a schema of driver.declaration (CONFIG, TASK_CONFIG)."""
    hs = hclspec_pb2

    def one(name: str, spec: Spec) -> hs.Spec:
        if isinstance(spec, Block):
            return hs.Spec(block_value=hs.Block(name=name, required=spec.required, nested=obj_spec(spec.nested)))
        attr = hs.Spec(Attr=hs.Attr(name=name, type=spec.type, required=spec.required))
        if spec.default is None:
            return attr
        literal = hs.Spec(literal=hs.Literal(value=json.dumps(spec.default)))  # JSON scalars are HCL literals
        return hs.Spec(default=hs.Default(primary=attr, default=literal))

    def obj_spec(o: Object) -> hs.Spec:
        return hs.Spec(object=hs.Object(attributes={k: one(k, v) for k, v in o.items()}))

    return obj_spec(obj)


_PLUGIN_TYPES = {"driver": base_pb2.DRIVER}
_FS_ISOLATION = {"image": driver_pb2.DriverCapabilities.IMAGE}
_MOUNT_CONFIGS = {"none": driver_pb2.DriverCapabilities.NO_MOUNTS}


def plugin_info_proto() -> base_pb2.PluginInfoResponse:
    return base_pb2.PluginInfoResponse(type=_PLUGIN_TYPES[PLUGIN_INFO.type],
                                       plugin_api_versions=list(PLUGIN_INFO.api_versions),
                                       plugin_version=PLUGIN_INFO.plugin_version, name=PLUGIN_INFO.name)


def capabilities_proto() -> driver_pb2.DriverCapabilities:
    caps = CAPABILITIES
    return driver_pb2.DriverCapabilities(
        send_signals=caps.send_signals, exec=caps.exec, fs_isolation=_FS_ISOLATION[caps.fs_isolation],
        must_create_network=caps.must_create_network, mount_configs=_MOUNT_CONFIGS[caps.mount_configs],
        remote_tasks=caps.remote_tasks)


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
        return plugin_info_proto()

    async def ConfigSchema(self, request, context):
        return base_pb2.ConfigSchemaResponse(spec=hclspec_proto(CONFIG))

    async def SetConfig(self, request, context):
        if request.plugin_api_version not in PLUGIN_INFO.accepted_api_versions:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"unsupported plugin_api_version {request.plugin_api_version!r} "
                                f"(this plugin speaks {', '.join(PLUGIN_INFO.api_versions)})")
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
        return driver_pb2.TaskConfigSchemaResponse(spec=hclspec_proto(TASK_CONFIG))

    async def Capabilities(self, request, context):
        return driver_pb2.CapabilitiesResponse(capabilities=capabilities_proto())

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
    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(plugin), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(plugin), server)
    go_plugin_pb2_grpc.add_GRPCControllerServicer_to_server(ControllerServicer(plugin), server)
    go_plugin_pb2_grpc.add_GRPCStdioServicer_to_server(StdioServicer(plugin), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
