"""What the driver is, declared once as plain data: its names, plugin info, config specs and capabilities.

The servicers answer PluginInfo, ConfigSchema, TaskConfigSchema and Capabilities from these values
(`driver.servicer` builds the proto messages, including the hclspec form of the two schemas).

A schema (`CONFIG`, `TASK_CONFIG`) is a dict of name -> `Attr` | `Block`. `Attr.type` is an HCL type
expression in text (`string`, `bool`, `list(string)`, `map(string)`); `Attr.default` (a Python
str/bool/number) becomes an hclspec `Default` with a `Literal`, so Nomad fills it in before encoding.

Decision: the four ECS extras (`tags`, `platform_version`, `propagate_tags`, `enable_execute_command`)
sit inside the reference's `task {}` block, next to `launch_type`: that block mirrors ECS RunTask's
parameters, and these are RunTask parameters too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from driver import __version__

DRIVER_NAME = "ecs"                  # jobs say `driver = "ecs"`; Nomad's Node.Drivers key and attribute prefix
PLUGIN_BINARY = "nomad-driver-ecs"   # the executable's file name and the agent's `plugin "<label>"` block


@dataclass(frozen=True)
class PluginInfo:
    type: str                        # Nomad's plugin type ("driver")
    name: str
    plugin_version: str
    api_versions: tuple[str, ...]    # the driver API versions we speak
    accepted_api_versions: frozenset[str]  # what SetConfig's plugin_api_version may say


PLUGIN_INFO = PluginInfo(
    type="driver",
    name=DRIVER_NAME,
    plugin_version=__version__,
    api_versions=("v0.1.0",),                         # Nomad's drivers.ApiVersion010
    accepted_api_versions=frozenset({"v0.1.0", "0.1.0", ""}),
)


@dataclass(frozen=True)
class Capabilities:
    """Nomad's drivers.Capabilities for a remote task driver: nothing runs on the client node."""

    send_signals: bool = False
    exec: bool = False
    fs_isolation: str = "image"      # drivers.FSIsolationImage: the task's filesystem is not the client's
    must_create_network: bool = False
    mount_configs: str = "none"      # drivers.MountConfigSupportNone
    remote_tasks: bool = True


CAPABILITIES = Capabilities()


# --- the two HCL schemas ------------------------------------------------------------------------

@dataclass(frozen=True)
class Attr:
    type: str
    required: bool = False
    default: str | bool | int | float | None = None


@dataclass(frozen=True)
class Block:
    nested: dict = field(default_factory=dict)
    required: bool = False


Spec = Union[Attr, Block]
Object = dict  # dict[str, Spec]

DEFAULT_POLL_INTERVAL = "5s"
DEFAULT_FINGERPRINT_INTERVAL = "30s"

# plugin "nomad-driver-ecs" { config { ... } }
CONFIG: Object = {
    "enabled": Attr("bool"),                 # reference: false when unset
    "cluster": Attr("string"),               # the ECS cluster's name or ARN; required when enabled
    "region": Attr("string"),                # unset: the AWS SDK's default chain (AWS_REGION, profile)
    "endpoint": Attr("string"),              # optional ECS endpoint URL (local endpoint, VPC endpoint)
    "poll_interval": Attr("string", default=DEFAULT_POLL_INTERVAL),                # DescribeTasks polling
    "fingerprint_interval": Attr("string", default=DEFAULT_FINGERPRINT_INTERVAL),  # DescribeClusters
    "log_level": Attr("string"),             # trace|debug|info|warn|error; unset: env or info
}

# task "x" { driver = "ecs"  config { ... } }
TASK_CONFIG: Object = {
    "task": Block({
        "launch_type": Attr("string"),
        "task_definition": Attr("string"),
        "network_configuration": Block({
            "aws_vpc_configuration": Block({
                "assign_public_ip": Attr("string"),
                "security_groups": Attr("list(string)"),
                "subnets": Attr("list(string)"),
            }),
        }),
        "tags": Attr("map(string)"),
        "platform_version": Attr("string"),
        "propagate_tags": Attr("string"),
        "enable_execute_command": Attr("bool"),
    }),
}
