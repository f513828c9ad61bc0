"""The write endpoints' effects on the model: job register/deregister, node drain/eligibility.

Each function runs under the cluster lock, raises `ApiError(status, text)` with Nomad's plain-text
message on bad input, and returns the JSON body of the answer.
"""

from __future__ import annotations

import copy
import time

from tests.fakenomad.jobspec import canonicalize_submitted, format_errors, validate
from tests.fakenomad.model import Cluster
from tests.fakenomad.scheduler import set_job_status, unblock
from tests.fakenomad.wire import NS, rfc3339nano


class ApiError(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text


def _query_meta(cl: Cluster, index: int) -> dict:
    meta = {"Index": index, "LastContact": 0, "KnownLeader": False}
    if cl.vt >= (1, 3, 0):
        meta["NextToken"] = ""
    return meta


def _spec(job: dict) -> dict:
    """The parts of a job whose change makes a new version."""
    ignore = {"Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex", "ModifyIndex",
              "JobModifyIndex"}
    return {k: v for k, v in job.items() if k not in ignore}


def register_job(cl: Cluster, body: dict, path_id: str | None = None) -> dict:
    job = body.get("Job") if isinstance(body, dict) else None
    if not job:
        raise ApiError(400, "Job must be specified")
    if not job.get("ID"):
        raise ApiError(400, "Job ID hasn't been provided")
    if path_id is not None and job["ID"] != path_id:
        raise ApiError(400, "Job ID does not match name")
    job = canonicalize_submitted(job)
    errors = validate(job)
    if errors:
        raise ApiError(500, format_errors(errors))
    index = cl.bump("jobs", "evals")
    existing = cl.jobs.get(job["ID"])
    job.update(Stop=bool(job.get("Stop")), Status="pending", StatusDescription="", Stable=False,
               SubmitTime=time.time_ns(), ModifyIndex=index)
    if existing is None:
        job.update(Version=0, CreateIndex=index, JobModifyIndex=index)
    elif _spec(existing) == _spec(job):
        job = existing
    else:
        job.update(Version=existing["Version"] + 1, CreateIndex=existing["CreateIndex"], JobModifyIndex=index,
                   Status=existing["Status"])
    cl.jobs[job["ID"]] = job
    versions = cl.job_versions.setdefault(job["ID"], [])
    if not versions or versions[-1]["Version"] != job["Version"]:
        versions.append(copy.deepcopy(job))
    ev = cl.new_eval(job, job["ID"], "job-register", index)
    set_job_status(cl, job, index)
    return dict(_query_meta(cl, index), EvalID=ev["ID"], EvalCreateIndex=index, JobModifyIndex=job["JobModifyIndex"],
                Warnings="")


def deregister_job(cl: Cluster, job_id: str, purge: bool) -> dict:
    index = cl.bump("jobs", "evals")
    job = cl.jobs.get(job_id)
    eval_id = ""
    if job is not None or cl.vt < (1, 6, 0):
        if job is not None:
            if purge:
                del cl.jobs[job_id]
            elif not job["Stop"]:
                job.update(Stop=True, Version=job["Version"] + 1, JobModifyIndex=index, SubmitTime=time.time_ns())
                cl.job_versions.setdefault(job_id, []).append(copy.deepcopy(job))
                cl.stamp(job, index, "jobs")
        ev = cl.new_eval(job, job_id, "job-deregister", index)
        eval_id = ev["ID"]
    return dict(_query_meta(cl, index), EvalID=eval_id, EvalCreateIndex=index if eval_id else 0,
                JobModifyIndex=index if job is not None else 0, VolumeEvalID="", VolumeEvalIndex=0)


def _node(cl: Cluster, node_id: str) -> dict:
    node = cl.nodes.get(node_id)
    if node is None:
        raise ApiError(500, "node not found")
    return node


def _node_update_answer(index: int, eval_ids: list[str] | None) -> dict:
    return {"EvalCreateIndex": index if eval_ids else 0, "EvalIDs": eval_ids or None, "Index": index,
            "NodeModifyIndex": index}


def drain(cl: Cluster, node_id: str, body: dict) -> dict:
    node = _node(cl, node_id)
    spec = body.get("DrainSpec")
    mark_eligible = bool(body.get("MarkEligible"))
    meta = body.get("Meta")
    index = cl.bump("nodes")
    now = rfc3339nano(local=True)
    eval_ids = None
    if spec is not None:
        deadline = int(spec.get("Deadline") or 0)
        was_draining = node["DrainStrategy"] is not None
        node["DrainStrategy"] = {
            "Deadline": deadline, "IgnoreSystemJobs": bool(spec.get("IgnoreSystemJobs")),
            "ForceDeadline": rfc3339nano(time.time() + deadline / NS) if deadline > 0 else None,
            "StartedAt": rfc3339nano(),
            "_force_at": time.monotonic() + deadline / NS if deadline > 0 else None,
        }
        node["SchedulingEligibility"] = "ineligible"
        if was_draining:
            msg = "Node drain stategy updated" if cl.vt < (1, 3, 0) else "Node drain strategy updated"
            node["LastDrain"].update(UpdatedAt=now, Meta=meta)
        else:
            msg = "Node drain strategy set"
            node["LastDrain"] = {"StartedAt": now, "UpdatedAt": now, "Status": "draining", "AccessorID": "",
                                 "Meta": meta}
        cl.node_event(node, msg, "Drain", index)
    else:
        if node["DrainStrategy"] is not None:
            node["DrainStrategy"] = None
            if node["LastDrain"]:
                node["LastDrain"].update(Status="canceled", UpdatedAt=now)
            cl.node_event(node, "Node drain disabled", "Drain", index)
        if mark_eligible and node["SchedulingEligibility"] != "eligible":
            node["SchedulingEligibility"] = "eligible"
            ev = cl.new_eval(None, "", "node-update", index, node_id=node_id)
            ev["Status"] = "complete"  # node evals only matter for system jobs here
            eval_ids = [ev["ID"]]
            unblock(cl)
    cl.stamp(node, index, "nodes")
    return _node_update_answer(index, eval_ids)


def set_eligibility(cl: Cluster, node_id: str, body: dict) -> dict:
    node = _node(cl, node_id)
    value = body.get("Eligibility")
    if value not in ("eligible", "ineligible"):
        raise ApiError(500, f'invalid scheduling eligibility "{value}"')
    if value == "eligible" and node["DrainStrategy"] is not None:
        raise ApiError(500, "can not set node's scheduling eligibility to eligible while it is draining")
    index = cl.bump("nodes")
    eval_ids = None
    if node["SchedulingEligibility"] != value:
        node["SchedulingEligibility"] = value
        cl.node_event(node, f"Node marked as {value} for scheduling", "Cluster", index)
        if value == "eligible":
            unblock(cl)
    cl.stamp(node, index, "nodes")
    return _node_update_answer(index, eval_ids)
