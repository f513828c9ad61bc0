"""The Nomad HTTP API adapter: the only module of ecsdemo that talks to Nomad.

Built on python-nomad 2.1.0 for the calls it gets right, and on its generic `Requester.request` where it
falls short (see docs/nomad-notes.md): drain always posts a body, blocking
queries pass `index`/`wait` with a read timeout above `wait * 17/16`, logs are followed as a stream of
concatenated JSON frames, and agent health is read even from its 500 answer.

Address and token: `NomadClient(address)` uses `address`, else `NOMAD_ADDR`, else http://127.0.0.1:4646.
The ACL token comes from `token` or `NOMAD_TOKEN`; it is sent as `X-Nomad-Token` and never appears in an
error message. This module never prints.

Errors are `NomadError`s (an `EcsdemoError`; catch this one type): `NomadUnavailable` (nothing answers
at the address; carries the address and a hint) and `NomadAPIError` (Nomad answered with an error status;
carries the status, Nomad's plain-text message and the path). `NomadClient._error` is the one translation
of python-nomad's and requests' exceptions into them. Reads of a single object (node, job, allocation,
evaluation) return None on 404 (`_read_or_none`).

Pure helpers for Nomad's JSON: `short`, `task_arn`, `decode_driver_state`, `node_draining`,
`node_ecs_driver`, `live_allocation`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from typing import Any, Callable, Iterator

import msgpack
import nomad
import requests
from nomad.api import exceptions as nex

from ecsdemo.config import DRIVER_NAME
from ecsdemo.errors import EcsdemoError

DEFAULT_ADDRESS = "http://127.0.0.1:4646"
TERMINAL_CLIENT_STATUSES = ("complete", "failed", "lost")
REMOTE_TASKS_FROM = (1, 1, 0)    # remote task handles (drain / lost-node hand-over) arrived in Nomad 1.1.0 ...
REMOTE_TASKS_UNTIL = (1, 10, 0)  # ... and were removed in 1.10.0 (exclusive)
SHORT_ID = 8                     # Nomad's CLI shows 8-character IDs
# What python-nomad and requests raise when Nomad cannot be asked or answers with an error status
# (python-nomad's TimeoutNomadException is a requests.RequestException).
_FAILURES = (nex.BaseNomadException, requests.RequestException)


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """The first `X.Y[.Z]` version in `text` ("Nomad v1.6.5 (...)", "1.1.0-beta1"), or None."""
    m = re.search(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def supports_remote_tasks(version_text: str | None) -> bool:
    """True for the Nomad versions whose clients hand a remote task over on drain or a lost node."""
    v = parse_version(version_text)
    return v is not None and REMOTE_TASKS_FROM <= v < REMOTE_TASKS_UNTIL


class NomadError(EcsdemoError):
    """Nomad could not be asked (`NomadUnavailable`) or answered with an error (`NomadAPIError`)."""


class NomadUnavailable(NomadError):
    """Nothing answers at the Nomad address (connection refused, timeout, DNS)."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"cannot reach Nomad at {address}: {reason}",
                         hint="is the Nomad agent running? (`ecsdemo up` starts one; NOMAD_ADDR selects another)")
        self.address = address
        self.reason = reason


class NomadAPIError(NomadError):
    """Nomad answered with an error status; `text` is its plain-text message."""

    def __init__(self, status: int, text: str, path: str):
        text = (text or "").strip()
        hint = "set NOMAD_TOKEN to a token with the needed ACL policy" if status == 403 else None
        super().__init__(f"Nomad answered {status} to {path}: {text or '(empty body)'}", hint=hint)
        self.status = status
        self.text = text
        self.path = path


# --- pure helpers on Nomad's JSON --------------------------------------------------------------------

def short(ident: str | None, missing: str = "") -> str:
    """An ID as Nomad's CLI shows it (its first 8 characters); `missing` when there is none."""
    return ident[:SHORT_ID] if ident else missing


def decode_driver_state(b64: str | None) -> dict | None:
    """A TaskHandle's DriverState as a dict, or None when absent or unreadable. Every form the plugin writes
    or recovers is read:

    * ours since state version 2: msgpack `{"ARN", "v": 2, "cluster", "region", "started_at", "task_id", ...}`;
    * ours before: UTF-8 JSON `{"v": 1, "cluster", "region", "task_arn", "started_at", ...}`;
    * the Go reference driver's: go-msgpack `{TaskConfig, ContainerName, ARN, StartedAt}`, whose time value
      is not UTF-8, so msgpack is read with raw=True and byte keys/values (nested ones too) are decoded
      leniently.

    `task_arn(...)` gives the ARN whichever form it is.
    """
    if not b64:
        return None
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:1] == b"{":
        try:
            data = json.loads(raw.decode("utf-8"))
            return data if isinstance(data, dict) else None
        except (UnicodeDecodeError, ValueError):
            return None
    try:
        data = msgpack.unpackb(raw, raw=True)
    except Exception:
        return None
    if not isinstance(data, dict):
        return None

    def text(v):
        if isinstance(v, bytes):
            return v.decode("utf-8", "surrogateescape")
        if isinstance(v, dict):
            return {text(k): text(x) for k, x in v.items()}
        if isinstance(v, list):
            return [text(x) for x in v]
        return v
    return text(data)


def task_arn(alloc_or_stub: dict, task_name: str) -> str | None:
    """The ECS task ARN recorded in an allocation's (or stub's) TaskHandle for `task_name`, if any
    (`ARN` in the msgpack forms, `task_arn` in the JSON one)."""
    state = ((alloc_or_stub.get("TaskStates") or {}).get(task_name) or {})
    handle = state.get("TaskHandle") or {}
    decoded = decode_driver_state(handle.get("DriverState"))
    if not decoded:
        return None
    arn = decoded.get("ARN") or decoded.get("task_arn")
    return arn if isinstance(arn, str) and arn else None


def node_draining(node_or_stub: dict) -> bool:
    """True while a drain is in force. The full node (`GET /v1/node/:id`) carries only `DrainStrategy` (null when
    not draining); the list stubs (`GET /v1/nodes`) carry the `Drain` bool. Either shape works here."""
    return node_or_stub.get("DrainStrategy") is not None or bool(node_or_stub.get("Drain"))


def node_ecs_driver(node_or_stub: dict, driver: str = DRIVER_NAME) -> tuple[bool, bool, str]:
    """(detected, healthy, description) of the `ecs` driver on a node or node stub."""
    info = (node_or_stub.get("Drivers") or {}).get(driver)
    if not info:
        return False, False, f"driver {driver!r} not reported by the node"
    return bool(info.get("Detected")), bool(info.get("Healthy")), str(info.get("HealthDescription") or "")


def is_live(alloc: dict) -> bool:
    """Nomad wants the allocation running and its client has not finished it (non-terminal ClientStatus)."""
    return alloc.get("DesiredStatus") == "run" and alloc.get("ClientStatus") not in TERMINAL_CLIENT_STATUSES


def live_allocation(allocs: list[dict]) -> dict | None:
    """The allocation that should be running: the newest live one (see `is_live`)."""
    live = [a for a in allocs if is_live(a)]
    return max(live, key=lambda a: a.get("CreateIndex", 0)) if live else None


def iter_log_frames(chunks: Iterator[bytes]) -> Iterator[dict]:
    """Split Nomad's concatenated JSON log frames (`{..}{..}{}`) arriving in arbitrary chunks."""
    decoder = json.JSONDecoder()
    buf = ""
    pending = b""
    for chunk in chunks:
        pending += chunk
        try:
            buf += pending.decode("utf-8")
            pending = b""
        except UnicodeDecodeError:
            continue  # a multi-byte character is split across chunks; wait for the rest
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                frame, end = decoder.raw_decode(buf)
            except ValueError:
                break  # incomplete frame
            buf = buf[end:]
            if isinstance(frame, dict):
                yield frame


# --- the client ------------------------------------------------------------------------------------

class NomadClient:
    """What ecsdemo needs from one Nomad agent's HTTP API. `timeout` is the per-request timeout (s)."""

    def __init__(self, address: str | None = None, timeout: float = 10, token: str | None = None):
        self.address = (address or os.environ.get("NOMAD_ADDR") or DEFAULT_ADDRESS).rstrip("/")
        self.timeout = timeout
        self._token = token if token is not None else os.environ.get("NOMAD_TOKEN") or None
        self._api = nomad.Nomad(address=self.address, timeout=timeout, token=self._token)

    @classmethod
    def from_config(cls, cfg, timeout: float = 10) -> "NomadClient":
        """A client for the demo's server agent (`DemoConfig.server_address`)."""
        return cls(cfg.server_address, timeout=timeout)

    def __repr__(self) -> str:  # never shows the token
        return f"NomadClient({self.address!r})"

    # --- error translation ---------------------------------------------------------------------------
    def _error(self, exc: Exception, path: str) -> NomadError:
        """The one translation of a python-nomad or requests exception (one of `_FAILURES`) into ours: an
        answer with an error status is a NomadAPIError, anything else means Nomad could not be asked."""
        resp = exc.nomad_resp if isinstance(exc, nex.BaseNomadException) else exc
        if isinstance(resp, requests.Response):
            return NomadAPIError(resp.status_code, resp.text, path)
        return NomadUnavailable(self.address, _reason(resp))

    def _call(self, path: str, fn: Callable[..., Any], *args, **kwargs):
        """Run a python-nomad call, translating its exceptions into ours."""
        try:
            return fn(*args, **kwargs)
        except _FAILURES as exc:
            raise self._error(exc, path) from None
        except ValueError as exc:  # a 2xx answer whose body is not JSON
            raise NomadAPIError(200, f"answer is not JSON: {exc}", path) from None

    def _read_or_none(self, path: str, fn: Callable[..., Any], *args):
        """A read of one object (`_call`); None when Nomad answers 404: it does not know the object."""
        try:
            return self._call(path, fn, *args)
        except NomadAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def _request(self, requester, *parts: str, method: str = "get", params: dict | None = None,
                 json_body: Any = None, timeout: float | None = None, stream: bool = False, ok_statuses=()):
        """A raw `Requester.request` (the Response); statuses in `ok_statuses` are returned, not raised."""
        path = "/v1/" + "/".join(p for p in (requester.ENDPOINT, *parts) if p)
        try:
            return requester.request(*parts, method=method, params=params, json=json_body,
                                     timeout=timeout or self.timeout, stream=stream)
        except _FAILURES as exc:
            error = self._error(exc, path)
            if isinstance(error, NomadAPIError) and error.status in ok_statuses:
                return exc.nomad_resp
            raise error from None

    @staticmethod
    def _json(resp, path: str):
        try:
            return resp.json()
        except ValueError as exc:
            raise NomadAPIError(resp.status_code, f"answer is not JSON: {exc}", path) from None

    # --- agent and status ---------------------------------------------------------------------------
    def leader(self) -> str | None:
        """The leader's RPC address, or None while the cluster has no leader (500 `No cluster leader`)."""
        try:
            out = self._call("/v1/status/leader", self._api.status.leader.get_leader)
        except NomadAPIError as exc:
            if exc.status == 500 and "leader" in exc.text.lower():
                return None
            raise
        return out or None

    def agent_self(self) -> dict:
        return self._call("/v1/agent/self", self._api.agent.get_agent)

    def version(self) -> str:
        """The agent's Nomad version, e.g. "1.6.5" (from /v1/agent/self config.Version)."""
        me = self.agent_self()
        v = (me.get("config") or {}).get("Version")
        if isinstance(v, dict) and v.get("Version"):
            return str(v["Version"])
        build = ((me.get("member") or {}).get("Tags") or {}).get("build")
        if build:
            return str(build)
        raise NomadAPIError(200, "/v1/agent/self has no config.Version", "/v1/agent/self")

    def agent_health(self, kind: str = "server") -> tuple[bool, str]:
        """(ok, message) of `GET /v1/agent/health?type=<kind>`; Nomad answers 500 with the same JSON when not ok."""
        if kind not in ("server", "client"):
            raise ValueError(f"health kind must be 'server' or 'client', got {kind!r}")
        resp = self._request(self._api.agent, "health", params={"type": kind}, ok_statuses=(500,))
        try:
            body = resp.json()
        except ValueError:
            return False, (resp.text or "").strip() or f"HTTP {resp.status_code}"
        part = (body or {}).get(kind) or {}
        return bool(part.get("ok")) and resp.status_code == 200, str(part.get("message", ""))

    @staticmethod
    def client_node_id(client_address: str, timeout: float = 5) -> str | None:
        """The node ID a client agent reports on its own HTTP port (`stats.client.node_id`), None if not yet."""
        stats = NomadClient(client_address, timeout=timeout).agent_self().get("stats") or {}
        return (stats.get("client") or {}).get("node_id") or None

    # --- nodes ---------------------------------------------------------------------------------------
    def nodes(self) -> list[dict]:
        return self._call("/v1/nodes", self._api.nodes.get_nodes)

    def wait_nodes(self, index: int, wait_s: float = 10) -> tuple[list[dict], int]:
        """Blocking query on the node list: (stubs, X-Nomad-Index) once the nodes table changes after
        `index`, or after about `wait_s` seconds (index=0 returns at once)."""
        wait_s = max(1, int(round(wait_s)))
        resp = self._request(self._api.nodes, params={"index": int(index), "wait": f"{wait_s}s"},
                             timeout=wait_s * 17 / 16 + self.timeout)
        return self._json(resp, "/v1/nodes") or [], int(resp.headers.get("X-Nomad-Index", 0))

    def node(self, node_id: str) -> dict | None:
        """The full node, or None when Nomad does not know it."""
        return self._read_or_none(f"/v1/node/{node_id}", self._api.node.get_node, node_id)

    def drain(self, node_id: str, deadline_s: float, ignore_system_jobs: bool = False) -> dict:
        """Start draining a node. `deadline_s` > 0: force-migrate what is left after it; 0: no deadline;
        < 0: force now. (Always posts a DrainSpec body: python-nomad's `drain_node` posts none.)"""
        deadline_ns = -1 if deadline_s < 0 else int(deadline_s * 1_000_000_000)
        return self._call(f"/v1/node/{node_id}/drain", self._api.node.drain_node_with_spec, node_id,
                          {"Deadline": deadline_ns, "IgnoreSystemJobs": ignore_system_jobs})

    def undrain(self, node_id: str) -> dict:
        """Cancel any drain and make the node eligible again (DrainSpec null, MarkEligible true)."""
        return self._call(f"/v1/node/{node_id}/drain", self._api.node.drain_node_with_spec, node_id, None,
                          mark_eligible=True)

    def set_eligibility(self, node_id: str, eligible: bool) -> dict:
        if eligible:
            fn = lambda: self._api.node.eligible_node(node_id, eligible=True)  # noqa: E731
        else:
            fn = lambda: self._api.node.eligible_node(node_id, ineligible=True)  # noqa: E731
        return self._call(f"/v1/node/{node_id}/eligibility", fn)

    def node_allocations(self, node_id: str) -> list[dict]:
        return self._call(f"/v1/node/{node_id}/allocations", self._api.node.get_allocations, node_id)

    # --- jobs ----------------------------------------------------------------------------------------
    def parse_job(self, hcl: str) -> dict:
        """HCL2 job text -> canonical api.Job JSON, parsed by the agent itself."""
        return self._call("/v1/jobs/parse", self._api.jobs.parse, hcl, canonicalize=True)

    def register_job(self, job: dict) -> dict:
        """Submit a job (the api.Job from `parse_job`); returns Nomad's answer with `EvalID`."""
        return self._call("/v1/jobs", self._api.jobs.register_job, {"Job": job})

    def job(self, job_id: str) -> dict | None:
        """The job, or None when Nomad does not know it (never registered, or purged)."""
        return self._read_or_none(f"/v1/job/{job_id}", self._api.job.get_job, job_id)

    def job_allocations(self, job_id: str, all_: bool = True) -> list[dict]:
        """Allocation stubs of a job (oldest first by CreateIndex); [] for an unknown job."""
        allocs = self._call(f"/v1/job/{job_id}/allocations", self._api.job.get_allocations, job_id, all_=all_)
        return sorted(allocs or [], key=lambda a: a.get("CreateIndex", 0))

    def job_deployment(self, job_id: str) -> dict | None:
        """The job's latest deployment, or None."""
        return self._call(f"/v1/job/{job_id}/deployment", self._api.job.get_deployment, job_id)

    def stop_job(self, job_id: str, purge: bool = False) -> dict:
        """Deregister (stop) a job; `purge` also deletes it. Stopping an unknown job is not an error."""
        return self._call(f"/v1/job/{job_id}", self._api.job.deregister_job, job_id, purge=purge)

    def wait_job_allocations(self, job_id: str, index: int, wait_s: float = 10) -> tuple[list[dict], int]:
        """Blocking query on the job's allocations: returns (stubs, X-Nomad-Index) as soon as any
        allocation in the cluster changes after `index`, or after about `wait_s` seconds.
        index=0 returns at once. A return does not guarantee a change: compare the stubs."""
        wait_s = max(1, int(round(wait_s)))
        resp = self._request(self._api.job, job_id, "allocations",
                             params={"index": int(index), "wait": f"{wait_s}s", "all": "true"},
                             timeout=wait_s * 17 / 16 + self.timeout)
        allocs = self._json(resp, f"/v1/job/{job_id}/allocations")
        return sorted(allocs or [], key=lambda a: a.get("CreateIndex", 0)), int(resp.headers.get("X-Nomad-Index", 0))

    # --- allocations and evaluations -------------------------------------------------------------
    def allocation(self, alloc_id: str) -> dict | None:
        """The full allocation (zero-valued fields omitted by Nomad: use .get()), or None if unknown."""
        return self._read_or_none(f"/v1/allocation/{alloc_id}", self._api.allocation.get_allocation, alloc_id)

    def evaluation(self, eval_id: str) -> dict | None:
        """The evaluation, or None if unknown."""
        return self._read_or_none(f"/v1/evaluation/{eval_id}", self._api.evaluation.get_evaluation, eval_id)

    # --- logs ----------------------------------------------------------------------------------------
    def read_logs(self, alloc_id: str, task: str, kind: str = "stdout", origin: str = "start",
                  offset: int = 0) -> str:
        """The task's log so far (plain text). Nomad's 400/404 texts come back as NomadAPIError."""
        _check_log_args(kind, origin)
        resp = self._request(self._api.client.stream_logs, alloc_id,
                             params={"task": task, "type": kind, "origin": origin, "offset": int(offset),
                                     "plain": "true", "follow": "false"})
        return resp.text

    def follow_logs(self, alloc_id: str, task: str, kind: str = "stdout", origin: str = "start",
                    offset: int = 0, idle_timeout: float = 30) -> Iterator[str]:
        """Yield log text as it arrives (framed stream; `{}` heartbeats are skipped) until Nomad ends the
        stream or the caller stops iterating. Raises NomadUnavailable when nothing arrives (not even a
        heartbeat) for `idle_timeout` seconds."""
        _check_log_args(kind, origin)
        resp = self._request(self._api.client.stream_logs, alloc_id,
                             params={"task": task, "type": kind, "origin": origin, "offset": int(offset),
                                     "plain": "false", "follow": "true"},
                             timeout=idle_timeout, stream=True)
        try:
            for frame in iter_log_frames(resp.iter_content(chunk_size=None)):
                data = frame.get("Data")
                if data:
                    yield base64.b64decode(data).decode("utf-8", "replace")
        except requests.RequestException as exc:
            raise self._error(exc, f"/v1/client/fs/logs/{alloc_id}") from None
        finally:
            resp.close()


def _check_log_args(kind: str, origin: str) -> None:
    if kind not in ("stdout", "stderr"):
        raise EcsdemoError(f"log type must be stdout or stderr, got {kind!r}")
    if origin not in ("start", "end"):
        raise EcsdemoError(f"log origin must be start or end, got {origin!r}")


def _reason(exc: Any) -> str:
    """A short reason for a connection failure, without URLs' query strings or headers."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer (read timed out)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Connection refused" in text or "Errno 111" in text:
            return "connection refused"
        return "connection failed"
    return type(exc).__name__ if not str(exc) else str(exc).splitlines()[0][:200]
