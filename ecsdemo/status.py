"""`ecsdemo status` and `ecsdemo logs`: one view of the demo, gathered as plain data.

`collect` never fails because one part is down: an unreachable Nomad or AWS endpoint becomes an
`*_error` entry and the rest is still shown. ECS tasks that no live allocation owns are orphans: a live
allocation owns a task when its TaskHandle names the task's ARN (after a drain or a lost node the
replacement holds the *same* task, whose tags still name the first allocation), or when the task's
`nomad:alloc_id` tag / `nomad-<id>` startedBy names it.
"""

from __future__ import annotations

from typing import Any, Iterator

from ecsdemo import agents, aws
from ecsdemo.config import JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError


def _client(cfg: DemoConfig, timeout: float):
    from ecsdemo.nomad import NomadClient

    return NomadClient(cfg.server_address, timeout=timeout)


def node_summary(node: dict) -> dict:
    """One node (stub) as ecsdemo shows it."""
    from ecsdemo.nomad import node_draining, node_ecs_driver

    detected, healthy, description = node_ecs_driver(node)
    return {"id": node.get("ID"), "name": node.get("Name"), "status": node.get("Status"),
            "eligibility": node.get("SchedulingEligibility"), "drain": node_draining(node),
            "ecs_driver": "healthy" if (detected and healthy) else (description or "not detected")}


def alloc_summary(alloc: dict) -> dict:
    from ecsdemo.nomad import is_live, task_arn

    return {"id": alloc.get("ID"), "node": alloc.get("NodeName"), "node_id": alloc.get("NodeID"),
            "desired_status": alloc.get("DesiredStatus"), "client_status": alloc.get("ClientStatus"),
            "job_version": alloc.get("JobVersion", 0), "task_arn": task_arn(alloc, TASK_NAME),
            "live": is_live(alloc)}


def ecs_summary(tasks: list[dict], allocs: list[dict] | None) -> list[dict]:
    """The cluster's tasks with their owner; `orphan` is None when the allocations are unknown."""
    live = [a for a in allocs or [] if a["live"]]
    by_arn = {a["task_arn"]: a["id"] for a in live if a["task_arn"]}
    out = []
    for t in tasks:
        arn = t.get("taskArn")
        tagged = aws.task_owner(t)
        holder = by_arn.get(arn)
        if holder is None and tagged:
            holder = next((a["id"] for a in live if a["id"].startswith(tagged)), None)
        out.append({"arn": arn, "last_status": t.get("lastStatus"), "desired_status": t.get("desiredStatus"),
                    "task_definition": aws.task_revision(t), "started_by": t.get("startedBy"),
                    "owner": holder or tagged, "live_owner": holder,
                    "orphan": None if allocs is None else (holder is None and t.get("lastStatus") != "STOPPED")})
    return out


def collect(cfg: DemoConfig, timeout: float = 5.0, ecs_client: Any = None) -> dict:
    """Everything `status` shows, as JSON-ready data."""
    from ecsdemo.nomad import NomadAPIError, NomadUnavailable

    data: dict[str, Any] = {"state_dir": str(cfg.state_dir), "mode": "local" if cfg.local else "aws",
                            "region": cfg.region, "nomad_address": cfg.server_address,
                            "ui": f"{cfg.server_address}/ui"}
    data["agents"] = [{"name": r.name, "role": r.role, "pid": r.pid, "status": agents.status(r),
                       "http": r.http_addr, "log": r.log} for r in agents.load(cfg).values()]
    if cfg.local:
        from ecsdemo import local

        data["endpoint"] = local.local_endpoint_status(cfg.state)

    data["nodes"], data["allocations"], data["nomad_error"] = [], None, None
    try:
        api = _client(cfg, timeout)
        data["nodes"] = [node_summary(n) for n in sorted(api.nodes(), key=lambda n: n.get("Name") or "")]
        data["allocations"] = [alloc_summary(a) for a in api.job_allocations(JOB_ID)]
    except (NomadUnavailable, NomadAPIError) as exc:
        data["nomad_error"] = exc.message

    data["ecs_tasks"], data["ecs_error"] = [], None
    endpoint = data.get("endpoint")
    if not aws.reachable(cfg):
        data["ecs_error"] = ("the local AWS endpoint is not answering" + (f" at {endpoint['url']}" if endpoint else "")
                             + ": run `ecsdemo up --local` (or `ecsdemo local start`)")
        data["orphans"] = []
        return data
    try:
        tasks = aws.cluster_tasks(cfg, "RUNNING", client=ecs_client) + \
            [t for t in aws.cluster_tasks(cfg, "STOPPED", client=ecs_client) if t.get("lastStatus") != "STOPPED"]
        data["ecs_tasks"] = ecs_summary(tasks, data["allocations"])
    except EcsdemoError as exc:
        data["ecs_error"] = exc.message
    data["orphans"] = [t["arn"] for t in data["ecs_tasks"] if t["orphan"]]
    return data


# --- logs -----------------------------------------------------------------------------------------
def resolve_alloc(cfg: DemoConfig, alloc: str | None, timeout: float = 5.0) -> str:
    """The full allocation ID for `alloc` (a full ID or a unique prefix), or the job's live allocation."""
    from ecsdemo.nomad import live_allocation

    api = _client(cfg, timeout)
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
    return alloc_id, _client(cfg, timeout).read_logs(alloc_id, TASK_NAME, "stdout")


def follow(cfg: DemoConfig, alloc_id: str, timeout: float = 5.0, idle_timeout: float = 30.0) -> Iterator[str]:
    """The task's stdout as it arrives (from the start), until Nomad ends the stream."""
    return _client(cfg, timeout).follow_logs(alloc_id, TASK_NAME, "stdout", idle_timeout=idle_timeout)
