"""The task's `config {}` block: decoded from Nomad's cty msgpack and validated before any AWS call.

Shape (see driver/declaration.py for the schema Nomad sees):

    task {
      task_definition = "family:rev"            # required
      launch_type     = "FARGATE"               # FARGATE | EC2 | EXTERNAL, any case
      platform_version, propagate_tags, enable_execute_command, tags = {...}
      network_configuration {
        aws_vpc_configuration { subnets = [...]  security_groups = [...]  assign_public_ip = "ENABLED" }
      }
    }

Errors are `TaskConfigError`s naming the field (dotted path) and, where there is a closed set, the
allowed values. Nothing here talks to AWS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

LAUNCH_TYPES = ("FARGATE", "EC2", "EXTERNAL")
PUBLIC_IP = ("ENABLED", "DISABLED")
PROPAGATE_TAGS = ("TASK_DEFINITION", "SERVICE", "NONE")
NOMAD_TAG_PREFIX = "nomad:"
MAX_USER_TAGS = 43  # ECS allows 50 tags per resource; up to seven are ours (driver.handle's ownership tags too)
_TAG_KEY_MAX, _TAG_VALUE_MAX = 128, 256
_TASK_DEF_RE = re.compile(r"^[A-Za-z0-9_:/.\-]{1,1600}$")

_TASK_KEYS = {"task_definition", "launch_type", "platform_version", "propagate_tags", "enable_execute_command",
              "tags", "network_configuration"}
_NET_KEYS = {"aws_vpc_configuration"}
_VPC_KEYS = {"subnets", "security_groups", "assign_public_ip"}


class TaskConfigError(ValueError):
    """The task config is invalid. `field` is the dotted path of the offending key."""

    def __init__(self, field_path: str, message: str):
        super().__init__(f"invalid task config: {field_path}: {message}")
        self.field = field_path


@dataclass(frozen=True)
class EcsTaskConfig:
    task_definition: str
    launch_type: str | None = None
    platform_version: str | None = None
    propagate_tags: str | None = None
    enable_execute_command: bool | None = None
    tags: dict[str, str] = field(default_factory=dict)
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: str | None = None

    @property
    def awsvpc(self) -> bool:
        return bool(self.subnets or self.security_groups or self.assign_public_ip) or self.launch_type == "FARGATE"


def decode_task_config(data: bytes) -> EcsTaskConfig:
    """Decode `msgpack_driver_config` bytes and validate them."""
    if not data:
        raise TaskConfigError("task", "the task has no driver config (a `config { task { ... } }` block is required)")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for bad input
        raise TaskConfigError("config", f"not valid msgpack: {exc}") from None
    return validate_task_config(value)


def validate_task_config(value: Any) -> EcsTaskConfig:
    """Validate the decoded config object (a dict as Nomad's cty encoding produces it)."""
    root = _object(value, "config", {"task"})
    task = _object(_block(root.get("task"), "task"), "task", _TASK_KEYS, required=True)
    net = _object(_block(task.get("network_configuration"), "task.network_configuration"),
                  "task.network_configuration", _NET_KEYS)
    vpc = _object(_block(net.get("aws_vpc_configuration"), "task.network_configuration.aws_vpc_configuration"),
                  "task.network_configuration.aws_vpc_configuration", _VPC_KEYS)
    vpc_path = "task.network_configuration.aws_vpc_configuration"

    task_definition = _string(task.get("task_definition"), "task.task_definition")
    if not task_definition:
        raise TaskConfigError("task.task_definition",
                              "required: a task definition family, family:revision or ARN")
    if not _TASK_DEF_RE.match(task_definition):
        raise TaskConfigError("task.task_definition",
                              f"{task_definition!r} is not a task definition family, family:revision or ARN")
    cfg = EcsTaskConfig(
        task_definition=task_definition,
        launch_type=_choice(task.get("launch_type"), "task.launch_type", LAUNCH_TYPES),
        platform_version=_string(task.get("platform_version"), "task.platform_version") or None,
        propagate_tags=_choice(task.get("propagate_tags"), "task.propagate_tags", PROPAGATE_TAGS),
        enable_execute_command=_bool(task.get("enable_execute_command"), "task.enable_execute_command"),
        tags=_tags(task.get("tags"), "task.tags"),
        subnets=_strings(vpc.get("subnets"), f"{vpc_path}.subnets"),
        security_groups=_strings(vpc.get("security_groups"), f"{vpc_path}.security_groups"),
        assign_public_ip=_choice(vpc.get("assign_public_ip"), f"{vpc_path}.assign_public_ip", PUBLIC_IP),
    )
    if cfg.awsvpc:
        why = "launch_type FARGATE uses awsvpc networking" if cfg.launch_type == "FARGATE" else "awsvpc networking"
        if not cfg.subnets:
            raise TaskConfigError(f"{vpc_path}.subnets", f"required for {why}: give at least one subnet ID")
        if not cfg.security_groups:
            raise TaskConfigError(f"{vpc_path}.security_groups",
                                  f"required for {why}: give at least one security group ID")
    if cfg.platform_version and cfg.launch_type not in (None, "FARGATE"):
        raise TaskConfigError("task.platform_version", "only applies to launch_type FARGATE")
    return cfg


def run_task_params(cfg: EcsTaskConfig, *, alloc_id: str, job: str, group: str, task: str,
                    client_token: str, owner_tags: dict[str, str] | None = None) -> dict[str, Any]:
    """The RunTask parameters for one Nomad task (the cluster is the adapter's); `owner_tags` are the
    ownership tags of driver.handle (who may stop the task)."""
    tags = {**cfg.tags, "nomad:alloc_id": alloc_id, "nomad:job": job, "nomad:group": group, "nomad:task": task,
            **(owner_tags or {})}
    params: dict[str, Any] = {
        "taskDefinition": cfg.task_definition,
        "count": 1,
        "startedBy": started_by(alloc_id),
        "clientToken": client_token,
        "tags": [{"key": k, "value": v[:_TAG_VALUE_MAX]} for k, v in tags.items()],
    }
    if cfg.launch_type:
        params["launchType"] = cfg.launch_type
    if cfg.platform_version:
        params["platformVersion"] = cfg.platform_version
    if cfg.propagate_tags:
        params["propagateTags"] = cfg.propagate_tags
    if cfg.enable_execute_command is not None:
        params["enableExecuteCommand"] = cfg.enable_execute_command
    if cfg.awsvpc:
        vpc: dict[str, Any] = {"subnets": list(cfg.subnets), "securityGroups": list(cfg.security_groups)}
        if cfg.assign_public_ip:
            vpc["assignPublicIp"] = cfg.assign_public_ip
        params["networkConfiguration"] = {"awsvpcConfiguration": vpc}
    return params


def started_by(alloc_id: str) -> str:
    """ECS `startedBy` (at most 36 characters): Nomad and the allocation."""
    return ("nomad-" + alloc_id[:30])[:36]


# --- field helpers -------------------------------------------------------------------------------

def _type_name(value: Any) -> str:
    return {str: "string", bool: "bool", int: "number", float: "number", list: "list", dict: "object",
            bytes: "bytes"}.get(type(value), type(value).__name__)


def _block(value: Any, path: str) -> Any:
    # A Block spec gives an object; a BlockList of one item gives a one-element list. Accept both.
    if isinstance(value, list):
        if len(value) > 1:
            raise TaskConfigError(path, f"give one block, not {len(value)}")
        return value[0] if value else None
    return value


def _object(value: Any, path: str, keys: set[str], required: bool = False) -> dict:
    if value is None:
        if required:
            raise TaskConfigError(path, "required block is missing")
        return {}
    if not isinstance(value, dict):
        raise TaskConfigError(path, f"must be a block, got {_type_name(value)}")
    for k, v in value.items():
        if not isinstance(k, str):
            raise TaskConfigError(path, f"keys must be strings, got {_type_name(k)}")
        if k not in keys and v is not None:
            name = k if k.strip() else repr(k)
            raise TaskConfigError(f"{path}.{name}" if path != "config" else name,
                                  f"unknown key; allowed: {', '.join(sorted(keys))}")
    return value


def _string(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TaskConfigError(path, f"must be a string, got {_type_name(value)}")
    if "\x00" in value:
        raise TaskConfigError(path, "must not contain NUL characters")
    return value.strip()


def _choice(value: Any, path: str, allowed: tuple[str, ...]) -> str | None:
    text = _string(value, path)
    if not text:
        return None
    if text.upper() not in allowed:
        raise TaskConfigError(path, f"{text!r} is not allowed; use one of {', '.join(allowed)} (any case)")
    return text.upper()


def _bool(value: Any, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise TaskConfigError(path, f"must be true or false, got {_type_name(value)}")


def _strings(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise TaskConfigError(path, f"must be a list of strings, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        text = _string(item, f"{path}[{i}]")
        if not text:
            raise TaskConfigError(f"{path}[{i}]", "must be a non-empty string")
        out.append(text)
    return tuple(out)


def _tags(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TaskConfigError(path, f"must be a map of strings, got {_type_name(value)}")
    if len(value) > MAX_USER_TAGS:
        raise TaskConfigError(path, f"at most {MAX_USER_TAGS} tags (ECS allows 50; the driver adds up to 7)")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip():
            raise TaskConfigError(path, "tag keys must be non-empty strings")
        if k.lower().startswith(("aws:", NOMAD_TAG_PREFIX)):
            raise TaskConfigError(f"{path}.{k}", "tag keys starting with aws: or nomad: are reserved")
        if len(k) > _TAG_KEY_MAX:
            raise TaskConfigError(f"{path}.{k[:20]}...", f"tag keys are at most {_TAG_KEY_MAX} characters")
        text = _string(v, f"{path}.{k}")
        if text is None:
            raise TaskConfigError(f"{path}.{k}", "tag values must be strings")
        if len(text) > _TAG_VALUE_MAX:
            raise TaskConfigError(f"{path}.{k}", f"tag values are at most {_TAG_VALUE_MAX} characters")
        out[k] = text
    return out
