"""The plugin's own configuration (the agent's `plugin "nomad-driver-ecs" { config { ... } }` block).

Nomad encodes the block as cty msgpack against our ConfigSchema (driver.declaration.CONFIG): a map with every
schema key present, nulls for the missing ones, defaults already applied by the `Default` specs. This
module decodes and validates those bytes into a `PluginConfig`; every failure is a `ConfigError` that
names the key and the bad value.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

import msgpack

from driver import log
from driver.declaration import CONFIG, DEFAULT_FINGERPRINT_INTERVAL, DEFAULT_POLL_INTERVAL

# Intervals outside these bounds are almost certainly typos ("5ms" for "5m").
MIN_INTERVAL_S = 0.05
MAX_INTERVAL_S = 3600.0
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_CLUSTER = re.compile(r"^[A-Za-z0-9_-]{1,255}$|^arn:aws[a-z-]*:ecs:[^:]+:\d+:cluster/[A-Za-z0-9_-]{1,255}$")


class ConfigError(ValueError):
    """The plugin config is not acceptable; `key` is the offending key ('' for the whole document)."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class PluginConfig:
    enabled: bool = False
    cluster: str = ""
    region: str | None = None
    endpoint: str | None = None
    poll_interval: float = 5.0          # seconds between ECS DescribeTasks polls of tracked tasks
    fingerprint_interval: float = 30.0  # seconds between fingerprints
    log_level: str = "info"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """A Go duration string ("5s", "200ms", "1m30s", "1.5h") in seconds; ValueError when it is not one."""
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign, s = (-1.0 if s[0] == "-" else 1.0), s[1:]
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"{text!r} is not a duration (examples: \"5s\", \"200ms\", \"1m30s\")")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"{text!r} is not a duration (examples: \"5s\", \"200ms\", \"1m30s\")")
    return sign * total


def _typed(doc: dict, key: str, kind: type, kind_name: str):
    value = doc[key]
    if value is None or isinstance(value, kind):
        return value
    raise ConfigError(key, f"must be a {kind_name}, got {type(value).__name__} {value!r}")


def _interval(doc: dict, key: str, default: str) -> float:
    text = _typed(doc, key, str, "duration string")
    text = default if text is None else text
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if not math.isfinite(seconds) or not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ConfigError(key, f"{text!r} is out of range (between {MIN_INTERVAL_S * 1000:.0f}ms and 1h)")
    return seconds


def decode_plugin_config(data: bytes) -> PluginConfig:
    """Decode and validate SetConfig's `msgpack_config`. Raises ConfigError naming the bad key and value."""
    if not data:
        raise ConfigError("", "msgpack_config is empty: the host must send the config encoded against ConfigSchema")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ConfigError("", f"msgpack_config is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError("", f"msgpack_config must be a map of the schema's keys, got {type(doc).__name__}")
    keys = set(CONFIG)
    unknown = sorted(str(k) for k in doc if k not in keys)
    if unknown:
        raise ConfigError(unknown[0], f"unknown key (known keys: {', '.join(sorted(keys))})")
    missing = sorted(keys - set(doc))
    if missing:
        raise ConfigError(missing[0], "missing: the host must send every schema key (null when not set)")

    enabled = _typed(doc, "enabled", bool, "bool")
    cluster = _typed(doc, "cluster", str, "string") or ""
    region = _typed(doc, "region", str, "string") or None
    endpoint = _typed(doc, "endpoint", str, "string") or None
    level = _typed(doc, "log_level", str, "string") or _env_level()
    config = PluginConfig(
        enabled=bool(enabled), cluster=cluster.strip(), region=region, endpoint=endpoint,
        poll_interval=_interval(doc, "poll_interval", DEFAULT_POLL_INTERVAL),
        fingerprint_interval=_interval(doc, "fingerprint_interval", DEFAULT_FINGERPRINT_INTERVAL),
        log_level=level.strip().lower(),
    )
    _validate(config)
    return config


def _env_level() -> str:
    """The level to keep when the config sets none: the environment's when valid, else info."""
    text = os.environ.get(log.LEVEL_ENV, "")
    try:
        log.parse_level(text)
        return text
    except ValueError:
        return "info"


def _validate(c: PluginConfig) -> None:
    if c.enabled and not c.cluster:
        raise ConfigError("cluster", "is required when enabled = true (the ECS cluster's name or ARN)")
    if c.cluster and not _CLUSTER.match(c.cluster):
        raise ConfigError("cluster", f"{c.cluster!r} is not an ECS cluster name (letters, digits, - and _) or ARN")
    if c.region is not None and not _REGION.match(c.region):
        raise ConfigError("region", f"{c.region!r} is not an AWS region (for example \"us-east-1\")")
    if c.endpoint is not None:
        url = urlparse(c.endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError("endpoint", f"{c.endpoint!r} is not an http(s) URL (for example \"http://127.0.0.1:5000\")")
    try:
        log.parse_level(c.log_level)
    except ValueError as exc:
        raise ConfigError("log_level", str(exc)) from None
