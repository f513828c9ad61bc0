"""`ecsdemo status` and `ecsdemo logs`: one view of the demo, gathered as plain data.

`collect` never fails because one part is down: an unreachable Nomad or AWS endpoint becomes an
`*_error` entry and the rest is still shown. ECS tasks that no live allocation owns are orphans: a live
allocation owns a task when its TaskHandle names the task's ARN (after a drain or a lost node the
replacement holds the *same* task, whose tags still name the first allocation), or when the task's
`nomad:alloc_id` tag / `nomad-<id>` startedBy names it.
"""

from __future__ import annotations

from typing import Any, Iterator

from ecsdemo import agents, aws, local
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.nomad import NomadClient, NomadError, is_live, live_allocation, node_draining, node_ecs_driver, task_arn


def node_summary(node: dict) -> dict:
    """One node (stub) as ecsdemo shows it."""
    detected, healthy, description = node_ecs_driver(node)
    return {"id": node.get("ID"), "name": node.get("Name"), "status": node.get("Status"),
            "eligibility": node.get("SchedulingEligibility"), "drain": node_draining(node),
            "ecs_driver": "healthy" if (detected and healthy) else (description or "not detected")}


def alloc_summary(alloc: dict) -> dict:
    return {"id": alloc.get("ID"), "node": alloc.get("NodeName"), "node_id": alloc.get("NodeID"),
            "desired_status": alloc.get("DesiredStatus"), "client_status": alloc.get("ClientStatus"),
            "job_version": alloc.get("JobVersion", 0), "task_arn": task_arn(alloc, TASK_NAME),
            "live": is_live(alloc)}


OWNER_TAG = "nomad:owner"       # the plugin's record of the Nomad task (`<alloc id>/<task>/...`) that owns it


def _owner_tag(task: dict) -> str | None:
    """The allocation the plugin's `nomad:owner` tag names (it follows hand-overs), when it names one."""
    value = next((t.get("value") for t in task.get("tags") or [] if t.get("key") == OWNER_TAG), None) or ""
    alloc = value.split("/", 1)[0]
    return alloc if len(alloc) == 36 and all(c in "0123456789abcdef-" for c in alloc) else None


def ecs_summary(tasks: list[dict], allocs: list[dict] | None) -> list[dict]:
    """The cluster's tasks with their owner; `orphan` is None when the allocations are unknown."""
    live = [a for a in allocs or [] if a["live"]]
    by_arn = {a["task_arn"]: a["id"] for a in live if a["task_arn"]}
    out = []
    for t in tasks:
        arn = t.get("taskArn")
        tagged = _owner_tag(t) or aws.task_owner(t)
        holder = by_arn.get(arn)
        if holder is None and tagged:
            holder = next((a["id"] for a in live if a["id"].startswith(tagged)), None)
        out.append({"arn": arn, "last_status": t.get("lastStatus"), "desired_status": t.get("desiredStatus"),
                    "task_definition": aws.task_revision(t), "started_by": t.get("startedBy"),
                    "owner": holder or tagged, "live_owner": holder,
                    "orphan": None if allocs is None else (holder is None and t.get("lastStatus") != "STOPPED")})
    return out


def describe_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Where the demo is and which agents ecsdemo started (no network call but the local endpoint's health)."""
    data: dict[str, Any] = {"state_dir": str(cfg.state_dir), "mode": "local" if cfg.local else "aws",
                            "region": cfg.region, "nomad_address": cfg.server_address,
                            "ui": f"{cfg.server_address}/ui"}
    data["agents"] = [{"name": r.name, "role": r.role, "pid": r.pid, "status": agents.status(r),
                       "http": r.http_addr, "log": r.log} for r in agents.load(cfg).values()]
    if cfg.local:
        data["endpoint"] = local.local_endpoint_status(cfg.state)
    return data


def nomad_part(nodes: list[dict] | None, allocs: list[dict] | None, error: str | None) -> dict[str, Any]:
    """The Nomad side of the view from raw node stubs and the job's allocation stubs."""
    if error:
        return {"nodes": [], "allocations": None, "nomad_error": error}
    return {"nodes": [node_summary(n) for n in sorted(nodes or [], key=lambda n: n.get("Name") or "")],
            "allocations": [alloc_summary(a) for a in allocs or []], "nomad_error": None}


def ecs_unreachable(cfg: DemoConfig, endpoint: dict | None) -> str | None:
    """Why ECS cannot be asked at all (local endpoint down), else None."""
    if aws.reachable(cfg):
        return None
    return ("the local AWS endpoint is not answering" + (f" at {endpoint['url']}" if endpoint else "")
            + ": run `ecsdemo up --local` (or `ecsdemo local start`)")


def fetch_ecs_tasks(cfg: DemoConfig, client: Any = None, also: Any = ()) -> list[dict]:
    """The cluster's tasks that run or are stopping, plus those named in `also` whatever their status
    (one ListTasks per desired status, then DescribeTasks in batches of 100)."""
    client = client or aws.ecs_client(cfg)
    tasks = aws.cluster_tasks(cfg, None, client=client)
    listed = {t.get("taskArn") for t in tasks}
    missing = [a for a in also if a and a not in listed]
    if missing:
        tasks += aws.describe(client, aws.cluster_name(cfg), missing)
    keep = set(also)
    return [t for t in tasks if t.get("desiredStatus") == "RUNNING" or t.get("lastStatus") != "STOPPED"
            or t.get("taskArn") in keep]


def ecs_part(tasks: list[dict] | None, error: str | None, allocs: list[dict] | None) -> dict[str, Any]:
    """The ECS side of the view; orphans are tasks no live allocation owns."""
    rows = [] if error else ecs_summary(tasks or [], allocs)
    return {"ecs_tasks": rows, "ecs_error": error, "orphans": [t["arn"] for t in rows if t["orphan"]]}


def collect(cfg: DemoConfig, timeout: float = 5.0, ecs_client: Any = None) -> dict:
    """Everything `status` shows, as JSON-ready data."""
    data = describe_demo(cfg)
    nodes = allocs = error = None
    try:
        api = NomadClient.from_config(cfg, timeout)
        nodes, allocs = api.nodes(), api.job_allocations(JOB_ID)
    except NomadError as exc:
        error = exc.message
    data.update(nomad_part(nodes, allocs, error))

    tasks, ecs_error = None, ecs_unreachable(cfg, data.get("endpoint"))
    if ecs_error is None:
        try:
            tasks = fetch_ecs_tasks(cfg, ecs_client)
        except EcsdemoError as exc:
            ecs_error = exc.message
    data.update(ecs_part(tasks, ecs_error, data["allocations"]))
    return data


# --- logs -----------------------------------------------------------------------------------------
def resolve_alloc(cfg: DemoConfig, alloc: str | None, timeout: float = 5.0) -> str:
    """The full allocation ID for `alloc` (a full ID or a unique prefix), or the job's live allocation."""
    api = NomadClient.from_config(cfg, timeout)
    allocs = api.job_allocations(JOB_ID)
    if alloc is None:
        chosen = live_allocation(allocs)
        if chosen is None:
            raise EcsdemoError(f"the job {JOB_ID} has no running allocation",
                               hint="run `ecsdemo run` first, or pass an allocation ID (`ecsdemo status` lists them)")
        return chosen["ID"]
    if not alloc or not all(c in "0123456789abcdef-" for c in alloc.lower()):
        raise EcsdemoError(f"{alloc!r} is not an allocation ID", hint="`ecsdemo status` lists the allocations")
    matches = [a["ID"] for a in allocs if a["ID"].startswith(alloc.lower())]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise EcsdemoError(f"allocation prefix {alloc!r} is ambiguous ({len(matches)} matches)",
                           hint="give more characters")
    if len(alloc) == 36 and api.allocation(alloc) is not None:
        return alloc
    raise EcsdemoError(f"no allocation {alloc!r} in the job {JOB_ID}", hint="`ecsdemo status` lists the allocations")


def logs(cfg: DemoConfig, alloc: str | None = None, timeout: float = 5.0) -> tuple[str, str]:
    """(allocation ID, the task's stdout so far)."""
    alloc_id = resolve_alloc(cfg, alloc, timeout)
    return alloc_id, NomadClient.from_config(cfg, timeout).read_logs(alloc_id, TASK_NAME, "stdout")


def follow(cfg: DemoConfig, alloc_id: str, timeout: float = 5.0, idle_timeout: float = 30.0) -> Iterator[str]:
    """The task's stdout as it arrives (from the start), until Nomad ends the stream."""
    return NomadClient.from_config(cfg, timeout).follow_logs(alloc_id, TASK_NAME, "stdout", idle_timeout=idle_timeout)
