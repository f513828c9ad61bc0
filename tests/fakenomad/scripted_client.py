"""A scripted Nomad client for tests of the fake's SERVER side (scheduler, drainer, reschedules, shapes).

The test plays the client: it registers nodes and sends the client-authoritative alloc fields itself
(`report_*`), so a test decides exactly what the servers see and when, with no task runtime. Updates are
applied the way the server applies a client's Node.UpdateAlloc: only ClientStatus, ClientDescription,
TaskStates and DeploymentStatus change (nomad/state/state_store.go nestedUpdateAllocFromClient).
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid

from tests.fakenomad.model import new_task_state, task_event
from tests.fakenomad.scheduler import set_job_status, unblock
from tests.fakenomad.wire import rfc3339nano

TASK = "http-server"


def add_node(fake, name: str, healthy: bool = True) -> str:
    """Register a ready node that never misses a heartbeat until `stop_heartbeats`."""
    node_id = str(uuid.uuid4())
    driver = {"Attributes": {"driver.ecs": "true"}, "Detected": True, "Healthy": healthy,
              "HealthDescription": "Healthy" if healthy else "unhealthy", "UpdateTime": rfc3339nano(local=True)}
    cl = fake.cluster
    with cl.cond:
        node = cl.new_node(node_id, name, "127.0.0.1:4646", driver)
        node.update(Status="ready", _last_heartbeat=math.inf)
        cl.stamp(node, cl.bump("nodes"), "nodes")
        unblock(cl)
    return node_id


def stop_heartbeats(fake, node_id: str) -> None:
    """The agent died: the server marks the node down on its next heartbeat check."""
    with fake.cluster.cond:
        fake.cluster.nodes[node_id]["_last_heartbeat"] = -math.inf


def heartbeat_again(fake, node_id: str) -> None:
    """The agent is back: a heartbeat from a down node makes it ready again (nomad/node_endpoint.go
    UpdateStatus), and capacity changes unblock blocked evals."""
    cl = fake.cluster
    with cl.cond:
        node = cl.nodes[node_id]
        index = cl.bump("nodes")
        node.update(Status="ready", StatusUpdatedAt=int(time.time()), _last_heartbeat=math.inf)
        cl.node_event(node, "Node reregistered by heartbeat", "Cluster", index)
        cl.stamp(node, index, "nodes")
        unblock(cl)


def handle(arn: str) -> dict:
    return {"Version": 1, "DriverState": base64.b64encode(json.dumps({"task_arn": arn}).encode()).decode()}


def _report(fake, alloc_id: str, client_status: str, description: str, state: dict, event: dict) -> None:
    cl = fake.cluster
    with cl.cond:
        a = cl.allocs[alloc_id]
        index = cl.bump("allocs")
        ts = (a.get("TaskStates") or {}).get(TASK) or new_task_state()
        ts.update(state)
        ts["Events"] = ((ts["Events"] or []) + [event])[-10:]
        a["TaskStates"] = dict(a.get("TaskStates") or {}, **{TASK: ts})
        a.update(ClientStatus=client_status, ClientDescription=description, ModifyTime=time.time_ns())
        if client_status == "running":
            a.setdefault("_running_since", time.monotonic())
        cl.stamp(a, index, "allocs")
        if a["JobID"] in cl.jobs:
            set_job_status(cl, cl.jobs[a["JobID"]], index)


def report_running(fake, alloc_id: str, arn: str) -> None:
    _report(fake, alloc_id, "running", "Tasks are running",
            {"State": "running", "StartedAt": rfc3339nano(), "TaskHandle": handle(arn)},
            task_event("Started", "Task started by client"))


def report_failed(fake, alloc_id: str) -> None:
    """The task died and the restart policy gave up (mode "fail")."""
    _report(fake, alloc_id, "failed", "Failed tasks",
            {"State": "dead", "Failed": True, "FinishedAt": rfc3339nano()},
            task_event("Not Restarting", "Exceeded allowed attempts 0 in interval 30m0s and mode is \"fail\"",
                       FailsTask=True))


def report_dead(fake, alloc_id: str) -> None:
    """The client finished a kill (stop or DETACH)."""
    _report(fake, alloc_id, "complete", "All tasks have completed",
            {"State": "dead", "FinishedAt": rfc3339nano()}, task_event("Killed", "Task successfully killed"))
