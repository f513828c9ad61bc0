"""Task runtimes for the simulated clients: what the ECS driver does on StartTask / RecoverTask / StopTask.

`EcsRuntime` acts on ECS for real through boto3 (in tests: the moto server), the way ecsdemo's driver
does: RunTask with startedBy ``"nomad-" + alloc_id[:30]`` and ``nomad:*`` tags, a DriverState of base64
UTF-8 JSON ``{"v":1,"cluster","region","task_arn","started_at"}`` (TaskHandle Version 1); DETACH leaves
the ECS task alone; a normal kill is StopTask with reason ``"Stopped by Nomad: allocation <id> task <t>"``
and a wait until STOPPED; recovery keeps the same ARN.

Misbehaviour switches for tests: `recover_starts_new=True` makes recovery fail so the client starts a NEW
task (as Nomad does when RecoverTask fails); `start_error="..."` makes StartTask fail.
"""

from __future__ import annotations

import base64
import json
import threading
import time

from tests.fakenomad.wire import rfc3339nano


class RuntimeError_(Exception):
    """A driver-side failure; the text becomes the `Driver Failure` event's message."""


def encode_driver_state(cluster: str, region: str, task_arn: str, started_at: str) -> str:
    raw = json.dumps({"v": 1, "cluster": cluster, "region": region, "task_arn": task_arn,
                      "started_at": started_at}, sort_keys=True).encode()
    return base64.b64encode(raw).decode()


def decode_driver_state(b64: str) -> dict:
    return json.loads(base64.b64decode(b64))


def run_task_params(config: dict | None) -> dict:
    """The driver's `config { task { ... } }` (lists of objects, as Nomad stores it) -> RunTask keywords."""
    blocks = (config or {}).get("task") or []
    if not blocks:
        raise RuntimeError_("failed to start ECS task: missing task block in driver config")
    t = blocks[0]
    params = {"taskDefinition": t.get("task_definition", "")}
    if t.get("launch_type"):
        params["launchType"] = t["launch_type"]
    net = (t.get("network_configuration") or [{}])[0].get("aws_vpc_configuration")
    if net:
        n = net[0]
        vpc = {"subnets": list(n.get("subnets") or []), "securityGroups": list(n.get("security_groups") or [])}
        if n.get("assign_public_ip"):
            vpc["assignPublicIp"] = n["assign_public_ip"]
        params["networkConfiguration"] = {"awsvpcConfiguration": vpc}
    return params


class EcsRuntime:
    """Runs a simulated client's tasks on ECS (endpoint, cluster, region as in the plugin config)."""

    def __init__(self, endpoint: str | None, cluster: str, region: str = "us-east-1",
                 recover_starts_new: bool = False, start_error: str | None = None, stop_wait: float = 10.0):
        self.endpoint = endpoint
        self.cluster = cluster
        self.region = region
        self.recover_starts_new = recover_starts_new
        self.start_error = start_error
        self.stop_wait = stop_wait
        self._client = None
        self._lock = threading.Lock()

    def _ecs(self):
        with self._lock:  # boto3's default session is not thread-safe while creating clients
            if self._client is None:
                import boto3

                self._client = boto3.session.Session().client("ecs", region_name=self.region,
                                                              endpoint_url=self.endpoint)
            return self._client

    def start(self, alloc: dict, task: dict) -> tuple[dict, str]:
        """Run the ECS task. Returns (TaskHandle, task ARN)."""
        if self.start_error:
            raise RuntimeError_(self.start_error)
        params = run_task_params(task.get("Config"))
        try:
            out = self._ecs().run_task(
                cluster=self.cluster, count=1, startedBy="nomad-" + alloc["ID"][:30],
                tags=[{"key": "nomad:alloc_id", "value": alloc["ID"]}, {"key": "nomad:job", "value": alloc["JobID"]},
                      {"key": "nomad:group", "value": alloc["TaskGroup"]}, {"key": "nomad:task", "value": task["Name"]}],
                **params)
        except Exception as exc:  # botocore errors of any kind become a driver failure
            raise RuntimeError_(f"failed to start ECS task: {exc}") from None
        if out.get("failures") or not out.get("tasks"):
            raise RuntimeError_(f"failed to start ECS task: {out.get('failures')}")
        arn = out["tasks"][0]["taskArn"]
        state = encode_driver_state(self.cluster, self.region, arn, rfc3339nano())
        return {"Version": 1, "DriverState": state}, arn

    def status(self, handle: dict) -> str | None:
        """lastStatus of the handle's ECS task, or None when ECS does not know it."""
        arn = decode_driver_state(handle["DriverState"])["task_arn"]
        tasks = self._ecs().describe_tasks(cluster=self.cluster, tasks=[arn]).get("tasks") or []
        return tasks[0].get("lastStatus") if tasks else None

    def recover(self, handle: dict, alloc: dict | None = None, task: dict | None = None) -> str | None:
        """Re-attach to the handle's task for (the replacement) `alloc`'s `task`; its ARN, or None when it
        cannot (the client then starts anew)."""
        if self.recover_starts_new:
            return None
        try:
            arn = decode_driver_state(handle["DriverState"])["task_arn"]
            status = self.status(handle)
        except Exception:
            return None
        return arn if status not in (None, "STOPPED") else None

    def detach(self, handle: dict, alloc_id: str, task_name: str) -> None:
        """DETACH kill (drain, lost alloc): the driver forgets the task and leaves ECS alone; nothing to do here."""

    def stop(self, handle: dict, alloc_id: str, task_name: str) -> None:
        """Normal kill: StopTask, then wait for STOPPED."""
        arn = decode_driver_state(handle["DriverState"])["task_arn"]
        self._ecs().stop_task(cluster=self.cluster, task=arn,
                              reason=f"Stopped by Nomad: allocation {alloc_id} task {task_name}")
        deadline = time.monotonic() + self.stop_wait
        while time.monotonic() < deadline and self.status(handle) not in (None, "STOPPED"):
            time.sleep(0.05)
