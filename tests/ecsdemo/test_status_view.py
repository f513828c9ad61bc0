"""ecsdemo.status: who owns each ECS task (task handle first, then tags/startedBy) and which are orphans."""

from __future__ import annotations

import base64
import json
import os

from rich.console import Console

from ecsdemo import status, views

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


# --- the layout `status` and `watch` share (ecsdemo.views) -----------------------------------------
def render(data: dict, width: int, wide: bool = False) -> str:
    con = Console(record=True, width=width, file=open(os.devnull, "w"), color_system=None)
    con.print(views.status_view(data, wide))
    return con.export_text()


def status_data(**over) -> dict:
    """A `status.collect`-shaped view: two nodes, a drained allocation and its replacement, a 32-hex ECS
    task (as real ECS names them), a second task nobody owns."""
    arn32 = "arn:aws:ecs:us-east-1:123456789012:task/nomad-remote-driver-demo/0123456789abcdef0123456789abcdef"
    other = arn32[:-32] + "fedcba9876543210fedcba9876543210"
    allocs = [status.alloc_summary({**alloc(A1, "stop", "complete", arn32), "JobVersion": 0}),
              status.alloc_summary({**alloc(A2, "run", "running", arn32), "NodeName": "nomad-client-2"})]
    nodes = [status.node_summary({"ID": "node-1-" + "0" * 29, "Name": "nomad-client-1", "Status": "ready",
                                  "SchedulingEligibility": "ineligible", "Drain": False,
                                  "Drivers": {"ecs": {"Detected": True, "Healthy": True}}}),
             status.node_summary({"ID": "node-2-" + "0" * 29, "Name": "nomad-client-2", "Status": "ready",
                                  "SchedulingEligibility": "eligible", "Drain": False,
                                  "Drivers": {"ecs": {"Detected": True, "Healthy": False, "HealthDescription":
                                                      "ECS cluster nomad-remote-driver-demo is INACTIVE"}}})]
    tasks = status.ecs_summary([task(arn32, A1), task(other, None)], allocs)
    data = {"state_dir": "/demo/.ecsdemo", "mode": "local", "region": "us-east-1",
            "nomad_address": "http://127.0.0.1:4646", "ui": "http://127.0.0.1:4646/ui",
            "agents": [{"name": "nomad-server", "role": "server", "pid": 4242, "status": "running",
                        "http": "http://127.0.0.1:4646", "log": "/demo/.ecsdemo/logs/nomad-server.log"}],
            "endpoint": {"url": "http://127.0.0.1:5000", "healthy": True},
            "nodes": nodes, "allocations": allocs, "nomad_error": None,
            "ecs_tasks": tasks, "ecs_error": None, "orphans": [t["arn"] for t in tasks if t["orphan"]]}
    return {**data, **over}


def test_status_at_80_columns_short_ids_and_task_ids():
    data = status_data()
    text = render(data, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    replacement = next(line for line in text.splitlines() if line.startswith(A2[:8]))
    assert "nomad-client-2" in replacement and "running" in replacement
    assert replacement.rstrip().endswith("0123456789abcdef0123456789abcdef")     # the task id, not the ARN
    assert "arn:aws:ecs" not in text and A2 not in text
    owned = next(line for line in text.splitlines() if line.startswith("0123456789abcdef"))
    assert "RUNNING" in owned and A2[:8] in owned and "ORPHAN" not in owned     # owned by the live holder
    orphan = next(line for line in text.splitlines() if line.startswith("fedcba98"))
    assert "ORPHAN" in orphan and "1 orphan ECS task(s)" in " ".join(text.split())
    # the unhealthy driver's reason is shown whole (folded), not cut
    assert "ECS cluster nomad-remote-driver-demo is INACTIVE" in " ".join(text.split())
    assert "agents: nomad-server running" in text


def test_status_wide_shows_full_values():
    data = status_data()
    flat = "".join(render(data, 200, wide=True).split())
    for value in (A1, A2, data["ecs_tasks"][0]["arn"], data["ecs_tasks"][1]["arn"], data["nodes"][0]["id"],
                  data["agents"][0]["log"]):
        assert value in flat


def test_status_with_parts_down_names_them():
    text = render(status_data(nomad_error="cannot reach Nomad at http://127.0.0.1:4646: connection refused",
                              nodes=[], allocations=None, ecs_error="the local AWS endpoint is not answering",
                              ecs_tasks=[], orphans=[]), 80)
    assert "Nomad: cannot reach Nomad at http://127.0.0.1:4646: connection refused" in text
    assert "ECS: the local AWS endpoint is not answering" in text
    assert "Nodes" not in text and "Allocations" not in text


def test_status_text_is_never_markup():
    data = status_data()
    data["nodes"][1]["ecs_driver"] = "[bold]AccessDenied[/bold] for ecs:DescribeClusters"
    assert "[bold]AccessDenied[/bold] for ecs:DescribeClusters" in " ".join(render(data, 120).split())
