"""ecsdemo.status: who owns each ECS task (task handle first, then tags/startedBy) and which are orphans."""

from __future__ import annotations

import base64
import json

from ecsdemo import status

A1 = "11111111-aaaa-4bbb-8ccc-000000000001"
A2 = "22222222-aaaa-4bbb-8ccc-000000000002"
ARN = "arn:aws:ecs:us-east-1:123456789012:task/demo/abc"
OTHER = "arn:aws:ecs:us-east-1:123456789012:task/demo/def"


def handle(arn: str) -> dict:
    state = base64.b64encode(json.dumps({"v": 1, "task_arn": arn}).encode()).decode()
    return {"http-server": {"State": "running", "TaskHandle": {"Version": 1, "DriverState": state}}}


def alloc(alloc_id: str, desired: str, client: str, arn: str | None) -> dict:
    a = {"ID": alloc_id, "NodeName": "nomad-client-1", "DesiredStatus": desired, "ClientStatus": client}
    if arn:
        a["TaskStates"] = handle(arn)   # a first alloc without task states has no TaskStates key at all
    return a


def task(arn: str, owner: str | None, last: str = "RUNNING") -> dict:
    t = {"taskArn": arn, "lastStatus": last, "desiredStatus": "RUNNING",
         "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/demo:3"}
    if owner:
        t["tags"] = [{"key": "nomad:alloc_id", "value": owner}]
        t["startedBy"] = "nomad-" + owner[:30]
    return t


def test_after_a_drain_the_replacement_owns_the_same_task():
    allocs = [status.alloc_summary(a) for a in (alloc(A1, "stop", "complete", ARN), alloc(A2, "run", "running", ARN))]
    assert [a["live"] for a in allocs] == [False, True] and allocs[1]["task_arn"] == ARN
    (row,) = status.ecs_summary([task(ARN, A1)], allocs)     # the tag still names the first allocation
    assert row["live_owner"] == A2 and row["orphan"] is False and row["task_definition"] == "demo:3"


def test_tasks_no_live_allocation_owns_are_orphans():
    allocs = [status.alloc_summary(alloc(A1, "stop", "complete", ARN))]
    rows = status.ecs_summary([task(ARN, A1), task(OTHER, None)], allocs)
    assert [r["orphan"] for r in rows] == [True, True]
    assert rows[0]["owner"] == A1 and rows[0]["live_owner"] is None
    stopped = status.ecs_summary([task(ARN, A1, last="STOPPED")], allocs)
    assert stopped[0]["orphan"] is False


def test_owner_by_started_by_prefix_while_the_handle_is_not_reported_yet():
    allocs = [status.alloc_summary(alloc(A2, "run", "pending", None))]
    t = task(ARN, None)
    t["startedBy"] = "nomad-" + A2[:30]
    (row,) = status.ecs_summary([t], allocs)
    assert row["live_owner"] == A2 and row["orphan"] is False


def test_orphan_is_unknown_without_nomad():
    (row,) = status.ecs_summary([task(ARN, A1)], None)
    assert row["orphan"] is None and row["owner"] == A1


def test_node_summary_reads_the_ecs_driver():
    node = {"ID": "n1", "Name": "nomad-client-1", "Status": "ready", "SchedulingEligibility": "ineligible",
            "Drain": True, "Drivers": {"ecs": {"Detected": True, "Healthy": False,
                                               "HealthDescription": "ECS cluster status: INACTIVE"}}}
    assert status.node_summary(node) == {"id": "n1", "name": "nomad-client-1", "status": "ready",
                                         "eligibility": "ineligible", "drain": True,
                                         "ecs_driver": "ECS cluster status: INACTIVE"}
    assert status.node_summary({"ID": "n2", "Drivers": None})["ecs_driver"].startswith("driver 'ecs' not reported")
