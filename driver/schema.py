"""The plugin's HCL schemas, declared once as plain data, and their hclspec form (ConfigSchema/TaskConfigSchema).

An `Object` is a dict of name -> `Attr` | `Block`. `Attr.type` is an HCL type expression in text
(`string`, `bool`, `list(string)`, `map(string)`); `Attr.default` (a Python str/bool/number) becomes an
hclspec `Default` with a `Literal`, so Nomad fills it in before encoding. `to_proto()` builds the
`hashicorp.nomad.plugins.shared.hclspec.Spec` messages the servicers return.

Decision: the four ECS extras (`tags`, `platform_version`, `propagate_tags`, `enable_execute_command`)
sit inside the reference's `task {}` block, next to `launch_type`: that block mirrors ECS RunTask's
parameters, and these are RunTask parameters too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union


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


def to_proto(obj: Object):
    """The hclspec `Spec` (an Object) for a schema declared above."""
    from driver.pb import hclspec_pb2 as hs

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
