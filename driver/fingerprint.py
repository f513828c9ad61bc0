"""Driver health: is the configured ECS cluster reachable and ACTIVE? (plain Python; the servicer maps it to proto)

`probe()` answers once; `fingerprints()` yields at once, then every `fingerprint_interval`, and also right
after a new SetConfig. It never raises: any failure becomes an UNHEALTHY result a person can act on,
and the next probe recovers by itself when AWS does.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import AsyncIterator

from driver import __version__, log
from driver.aws import AwsError
from driver.declaration import DRIVER_NAME
from driver.plugin import Plugin

UNDETECTED, UNHEALTHY, HEALTHY = "undetected", "unhealthy", "healthy"
DEFAULT_INTERVAL = 30.0
ATTRIBUTE = f"driver.{DRIVER_NAME}"   # Nomad detects the driver by this node attribute; details below it
_log = log.get_logger("fingerprint")


@dataclass(frozen=True)
class Fingerprint:
    health: str
    description: str
    attributes: dict[str, bool | str | int | float] = field(default_factory=dict)


def _timeout(interval: float) -> float:
    """How long one DescribeClusters may take before we call the endpoint unreachable."""
    return max(5.0, min(interval, 15.0))  # the first call also pays boto3's import on a busy host


async def probe(plugin: Plugin) -> Fingerprint:
    config = plugin.config
    if config is None:
        return Fingerprint(UNDETECTED, "not configured yet (waiting for SetConfig)")
    if not config.enabled:
        return Fingerprint(UNDETECTED, "disabled")
    unhealthy = {ATTRIBUTE: False}
    where = f"ECS cluster {config.cluster!r}" + (f" in {config.region}" if config.region else "")
    if plugin.ecs is None:
        return Fingerprint(UNHEALTHY, "the ECS client is not set up", unhealthy)
    try:
        cluster = await asyncio.wait_for(plugin.ecs.describe_cluster(), _timeout(config.fingerprint_interval))
    except asyncio.TimeoutError:
        target = config.endpoint or "the ECS endpoint"
        return Fingerprint(UNHEALTHY, f"no answer from {target} within {_timeout(config.fingerprint_interval):.0f}s "
                           "(endpoint unreachable? check the network, `endpoint` and `region`)", unhealthy)
    except AwsError as exc:
        return Fingerprint(UNHEALTHY, _describe_error(exc, config.endpoint), unhealthy)
    except Exception as exc:  # noqa: BLE001 - the stream must survive anything
        _log.error("fingerprint failed", exc_info=exc)
        return Fingerprint(UNHEALTHY, f"fingerprint failed: {type(exc).__name__}: {exc}", unhealthy)
    if cluster is None:
        return Fingerprint(UNHEALTHY, f"{where} not found: create it (for example `ecsdemo up`) or fix `cluster` "
                           "in the plugin config", unhealthy)
    status = cluster.get("status", "UNKNOWN")
    if status != "ACTIVE":
        hint = " (it was deleted: recreate it)" if status == "INACTIVE" else ""
        return Fingerprint(UNHEALTHY, f"{where} is {status}, not ACTIVE{hint}", unhealthy)
    attributes: dict[str, bool | str | int | float] = {
        ATTRIBUTE: True,
        f"{ATTRIBUTE}.cluster": config.cluster,
        f"{ATTRIBUTE}.version": __version__,
    }
    region = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        attributes[f"{ATTRIBUTE}.region"] = region
    return Fingerprint(HEALTHY, "Healthy", attributes)


def _describe_error(exc, endpoint: str | None) -> str:
    code = getattr(exc, "code", "")
    if code == "NoCredentials":
        return str(exc)
    if code in ("UnrecognizedClientException", "InvalidClientTokenId", "AccessDeniedException",
                "ExpiredTokenException", "InvalidSignatureException"):
        return (f"AWS rejected the credentials ({exc}): check the agent's AWS credentials and "
                "ecs:DescribeClusters permission")
    if code == "Unreachable":
        return f"{exc} (check `endpoint`{' ' + endpoint if endpoint else ''}, `region` and the network)"
    return f"DescribeClusters failed: {exc}"


async def fingerprints(plugin: Plugin) -> AsyncIterator[Fingerprint]:
    """Fingerprint at once, then every interval or right after a new config; runs until cancelled."""
    last: Fingerprint | None = None
    while True:
        changed = plugin.config_changed
        result = await probe(plugin)
        if result != last:
            _log.info("driver health changed", extra={"health": result.health, "description": result.description})
            last = result
        yield result
        interval = plugin.config.fingerprint_interval if plugin.config else DEFAULT_INTERVAL
        try:
            await asyncio.wait_for(changed.wait(), interval)
        except asyncio.TimeoutError:
            pass
