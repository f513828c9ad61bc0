"""Driver state: what a Nomad TaskHandle's `driver_state` carries, and its three readable forms.

Enough to re-attach to the ECS task with no task config (cluster, region, task ARN, started-at), no
secrets. `DriverState.encode()` writes our form, a msgpack map (version 2) with the task ARN under
`ARN`; `DriverState.decode()` also reads our earlier JSON form (version 1) and the Go reference
driver's msgpack state. docs/driver.md ("Driver state") describes the forms.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import msgpack

STATE_VERSION = 2        # msgpack map (ours); version 1 was JSON, still accepted by RecoverTask
JSON_STATE_VERSION = 1


class DriverStateError(ValueError):
    pass


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class DriverState:
    """What a TaskHandle's `driver_state` carries: enough to re-attach with no task config. No secrets.

    Written as a msgpack map `{"ARN", "v": 2, "cluster", "region", "started_at", "task_id", "alloc_id",
    "task_name", "container"}`: `ARN` is the key the Go reference driver (and Nomad's e2e suite) reads."""

    cluster: str
    region: str | None
    task_arn: str
    started_at: datetime
    alloc_id: str = ""
    task_name: str = ""
    container: str | None = None
    task_id: str = ""
    form: str = "msgpack-v2"   # which form it was read from: msgpack-v2, json-v1 or reference

    def encode(self) -> bytes:
        doc = {"ARN": self.task_arn, "v": STATE_VERSION, "cluster": self.cluster, "region": self.region,
               "started_at": rfc3339(self.started_at), "task_id": self.task_id, "alloc_id": self.alloc_id,
               "task_name": self.task_name, "container": self.container}
        return msgpack.packb(doc, use_bin_type=False)  # classic msgpack: every Go msgpack decoder reads it

    @classmethod
    def decode(cls, data: bytes, cluster: str = "", region: str | None = None) -> "DriverState":
        """Read our msgpack state (v2), our earlier JSON state (v1), or the Go reference driver's state
        (msgpack `{TaskConfig, ContainerName, ARN, StartedAt}`; it names no cluster or region, so
        `cluster`/`region` (the plugin config's) are used)."""
        if not data:
            raise DriverStateError("the task handle has no driver state (nothing to re-attach to)")
        data = bytes(data)
        if data[:1] == b"{":
            return cls._from_json(data)
        try:
            doc = msgpack.unpackb(data, raw=True)  # raw: Go writes strings and times as raw bytes
        except Exception as exc:  # msgpack raises several unrelated types for garbage
            raise DriverStateError(f"driver state is neither this driver's msgpack or JSON state nor the "
                                   f"reference driver's ({type(exc).__name__}: {exc})") from None
        if not isinstance(doc, dict):
            raise DriverStateError(f"driver state must be a msgpack map, got {type(doc).__name__}")
        doc = {_text(k): v for k, v in doc.items()}
        if "v" in doc:
            return cls._from_ours(doc)
        if "ARN" in doc:
            return cls._from_reference(doc, cluster, region)
        raise DriverStateError("driver state has no ECS task ARN (no `ARN` key)")

    @classmethod
    def _from_ours(cls, doc: dict) -> "DriverState":
        if doc.get("v") != STATE_VERSION:
            raise DriverStateError(f"driver state version {doc.get('v')!r} is not supported "
                                   f"(expected {STATE_VERSION}, or JSON version {JSON_STATE_VERSION})")
        get = lambda key: _text(doc.get(key))  # noqa: E731
        return cls._checked(cluster=get("cluster"), region=get("region"), arn=get("ARN"),
                            started_at=get("started_at"), alloc_id=get("alloc_id"), task_name=get("task_name"),
                            container=get("container"), task_id=get("task_id"), form="msgpack-v2")

    @classmethod
    def _from_json(cls, data: bytes) -> "DriverState":
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DriverStateError(f"driver state is not JSON written by this driver: {exc}") from None
        if not isinstance(doc, dict):
            raise DriverStateError("driver state must be a JSON object")
        if doc.get("v") != JSON_STATE_VERSION:
            raise DriverStateError(f"driver state version {doc.get('v')!r} is not supported "
                                   f"(JSON state is version {JSON_STATE_VERSION})")
        return cls._checked(cluster=doc.get("cluster"), region=doc.get("region"), arn=doc.get("task_arn"),
                            started_at=doc.get("started_at"), alloc_id=doc.get("alloc_id"),
                            task_name=doc.get("task_name"), container=doc.get("container"), task_id="",
                            form="json-v1")

    @classmethod
    def _from_reference(cls, doc: dict, cluster: str, region: str | None) -> "DriverState":
        cfg = doc.get("TaskConfig")
        cfg = {_text(k): _text(v) for k, v in cfg.items()} if isinstance(cfg, dict) else {}
        started = doc.get("StartedAt")
        return cls._checked(cluster=cluster, region=region, arn=_text(doc.get("ARN")),
                            started_at=_go_time(started) if isinstance(started, bytes) else _text(started),
                            alloc_id=cfg.get("AllocID"), task_name=cfg.get("Name"),
                            container=_text(doc.get("ContainerName")), task_id=cfg.get("ID"), form="reference")

    @classmethod
    def _checked(cls, *, cluster, region, arn, started_at, alloc_id, task_name, container, task_id,
                 form) -> "DriverState":
        if not isinstance(arn, str) or not arn.startswith("arn:") or ":task/" not in arn:
            raise DriverStateError(f"driver state has no ECS task ARN (task ARN {arn!r})")
        if not isinstance(cluster, str) or not cluster:
            raise DriverStateError("driver state has no cluster" + (
                " (the reference driver's state names none and the plugin config has no cluster)"
                if form == "reference" else ""))
        if region is not None and not isinstance(region, str):
            raise DriverStateError("driver state region must be a string or null")
        started = started_at if isinstance(started_at, datetime) else parse_time(started_at)
        text = lambda v: v if isinstance(v, str) else ""  # noqa: E731
        return cls(cluster=cluster, region=region or None, task_arn=arn,
                   started_at=started or datetime.now(timezone.utc), alloc_id=text(alloc_id),
                   task_name=text(task_name), container=text(container) or None, task_id=text(task_id), form=form)


def _text(value: Any) -> Any:
    """Go msgpack's raw strings as str (left as bytes when they are not UTF-8, like a binary time)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


_GO_EPOCH_OFFSET = 62135596800  # seconds from 0001-01-01 (Go's time zero) to the Unix epoch


def _go_time(data: bytes) -> datetime | None:
    """A Go `time.Time` as `MarshalBinary` writes it (how Nomad's msgpack handle stores times)."""
    if len(data) not in (15, 16) or data[0] not in (1, 2):
        return None
    secs, nanos = struct.unpack(">qi", data[1:13])
    try:
        return datetime.fromtimestamp(secs - _GO_EPOCH_OFFSET + nanos / 1e9, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
