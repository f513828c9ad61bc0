"""The fake cluster's state: nodes, jobs, allocations, evaluations, deployments, logs, one global index.

Objects are dicts keyed by Nomad's Go field names, mutated in place under ``Cluster.cond`` (a
``threading.Condition``; every mutation notifies it so blocking queries wake up). Keys starting with ``_``
are private bookkeeping and never leave the process. ``views`` turns these dicts into the exact JSON
shapes of each endpoint.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from dataclasses import dataclass

from tests.fakenomad.wire import rfc3339nano

TABLES = ("nodes", "jobs", "allocs", "evals", "deployment")
TERMINAL_CLIENT = ("complete", "failed", "lost")
MAX_EVENTS = 10


@dataclass
class Timings:
    """How fast the simulated cluster moves (seconds). `fast()` makes a whole scenario take a few seconds.

    `min_healthy_time=None` uses the job's own update/migrate `min_healthy_time` (10 s by default).
    """

    tick: float = 0.05                 # scheduler / drainer / heartbeat-checker period
    heartbeat_ttl: float = 10.0        # a client heartbeats every ttl/2
    heartbeat_grace: float = 10.0      # down after ttl + grace without a heartbeat
    client_step: float = 0.2           # delay between a client's task events (Received, Task Setup, Started)
    client_tick: float = 0.1           # how often a client looks at its allocations
    min_healthy_time: float | None = None
    drainer_batch: float = 1.0         # the drainer marks allocs for migration at most this often
    no_leader_hold: float = 5.0        # how long requests hang before `No cluster leader`
    log_heartbeat: float = 1.0         # `{}` frames while following idle logs
    max_kill_timeout: float = 30.0     # the client's max_kill_timeout (caps a task's kill_timeout)
    restart_delay_scale: float = 1.0   # factor on the restart policy's delays (client.py RestartTracker)
    kill_backoff_scale: float = 1.0    # factor on Nomad's StopTask retry backoff (5 s, 20 s, 80 s, 2 min)
    reschedule_scale: float = 1.0      # factor on the job's reschedule delay/max_delay/interval as waited

    @classmethod
    def fast(cls, **overrides) -> "Timings":
        base = dict(tick=0.02, heartbeat_ttl=0.4, heartbeat_grace=0.4, client_step=0.03, client_tick=0.03,
                    min_healthy_time=0.3, drainer_batch=0.05, no_leader_hold=0.2, log_heartbeat=0.2,
                    reschedule_scale=0.1, restart_delay_scale=0.01, kill_backoff_scale=0.01)
        base.update(overrides)
        return cls(**base)


def new_id() -> str:
    return str(uuid.uuid4())


def version_tuple(version: str) -> tuple[int, int, int]:
    parts = (version.split("-")[0].split(".") + ["0", "0"])[:3]
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def task_event(type_: str, display: str, details: dict | None = None, **fields) -> dict:
    """A TaskEvent with every key present (doc 4.5)."""
    ev = {"Type": type_, "Time": time.time_ns(), "Message": "", "DisplayMessage": display,
          "Details": details or {}, "FailsTask": False, "RestartReason": "", "SetupError": "",
          "DriverError": "", "ExitCode": 0, "Signal": 0, "KillTimeout": 0, "KillError": "", "KillReason": "",
          "StartDelay": 0, "DownloadError": "", "ValidationError": "", "DiskLimit": 0, "FailedSibling": "",
          "VaultError": "", "TaskSignalReason": "", "TaskSignal": "", "DriverMessage": "", "GenericSource": ""}
    ev.update(fields)
    return ev


def new_task_state(handle: dict | None = None) -> dict:
    return {"State": "pending", "Failed": False, "Restarts": 0, "LastRestart": None, "StartedAt": None,
            "FinishedAt": None, "Events": None, "TaskHandle": copy.deepcopy(handle)}


class Cluster:
    """All state of the fake Nomad region. Callers hold ``cond`` while reading or mutating."""

    def __init__(self, version: str, timings: Timings):
        self.version = version
        self.vt = version_tuple(version)
        self.timings = timings
        self.cond = threading.Condition(threading.RLock())
        self.index = 1
        self.tables = {t: 1 for t in TABLES}
        self.nodes: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.job_versions: dict[str, list[dict]] = {}
        self.allocs: dict[str, dict] = {}
        self.evals: dict[str, dict] = {}
        self.deployments: dict[str, dict] = {}
        self.logs: dict[tuple[str, str, str], bytearray] = {}
        self.leader = True
        self.closed = False

    # --- indexes ----------------------------------------------------------------------------------
    def bump(self, *tables: str) -> int:
        """Start one write: a new global index, stamped on the given tables. Wakes blocking queries."""
        self.index += 1
        for t in tables:
            self.tables[t] = self.index
        self.cond.notify_all()
        return self.index

    def stamp(self, obj: dict, index: int, *tables: str) -> None:
        obj["ModifyIndex"] = index
        for t in tables:
            self.tables[t] = max(self.tables[t], index)
        self.cond.notify_all()

    # --- nodes ------------------------------------------------------------------------------------
    def node_event(self, node: dict, message: str, subsystem: str, index: int, details: dict | None = None) -> None:
        events = node["Events"] or []
        events.append({"Message": message, "Subsystem": subsystem, "Details": details,
                       "Timestamp": rfc3339nano(local=True), "CreateIndex": index})
        node["Events"] = events[-MAX_EVENTS:]

    def new_node(self, node_id: str, name: str, http_addr: str, driver: dict, datacenter: str = "dc1") -> dict:
        idx = self.bump("nodes")
        node = {
            "ID": node_id, "SecretID": "", "Datacenter": datacenter, "Name": name, "HTTPAddr": http_addr,
            "TLSEnabled": False,
            "Attributes": {"driver.ecs": "1" if driver["Detected"] else None,
                           "nomad.version": self.version.split("+")[0],
                           "kernel.name": "linux", "os.name": "debian", "unique.hostname": name,
                           "cpu.arch": "amd64", "nomad.advertise.address": http_addr},
            "NodeResources": {"Cpu": {"CpuShares": 4000}, "Memory": {"MemoryMB": 4096}, "Disk": {"DiskMB": 10000},
                              "Networks": None, "Devices": None},
            "ReservedResources": {"Cpu": {"CpuShares": 0}, "Memory": {"MemoryMB": 0}, "Disk": {"DiskMB": 0},
                                  "Networks": {"ReservedHostPorts": ""}},
            "Resources": {"CPU": 4000, "MemoryMB": 4096, "DiskMB": 10000},
            "Reserved": {"CPU": 0, "MemoryMB": 0, "DiskMB": 0}, "Links": None, "Meta": {}, "NodeClass": "",
            "ComputedClass": "v1:" + str(abs(hash(name)) % 10**19), "DrainStrategy": None,
            "SchedulingEligibility": "eligible", "Status": "initializing", "StatusDescription": "",
            "StatusUpdatedAt": int(time.time()), "Events": None, "Drivers": {"ecs": driver},
            "CSIControllerPlugins": None, "CSINodePlugins": None, "HostVolumes": None, "HostNetworks": None,
            "LastDrain": None, "CgroupParent": "", "NodePool": "default", "LastMissedHeartbeatIndex": 0,
            "LastAllocUpdateIndex": 0, "CreateIndex": idx, "ModifyIndex": idx,
            "_last_heartbeat": time.monotonic(),
        }
        if node["Attributes"]["driver.ecs"] is None:
            del node["Attributes"]["driver.ecs"]
        self.node_event(node, "Node registered", "Cluster", idx)
        self.nodes[node_id] = node
        return node

    # --- jobs, evals, deployments -------------------------------------------------------------------
    def new_eval(self, job: dict | None, job_id: str, triggered_by: str, index: int, node_id: str = "",
                 status: str = "pending", **extra) -> dict:
        now = time.time_ns()
        ev = {"ID": new_id(), "Namespace": "default", "Priority": (job or {}).get("Priority", 50),
              "Type": (job or {}).get("Type", "service"), "TriggeredBy": triggered_by, "JobID": job_id,
              "JobModifyIndex": (job or {}).get("JobModifyIndex", 0), "NodeID": node_id,
              "NodeModifyIndex": self.nodes[node_id]["ModifyIndex"] if node_id in self.nodes else 0,
              "DeploymentID": "", "Status": status, "StatusDescription": "", "Wait": 0, "WaitUntil": None,
              "NextEval": "", "PreviousEval": "", "BlockedEval": "", "FailedTGAllocs": None,
              "ClassEligibility": None, "QuotaLimitReached": "", "EscapedComputedClass": False,
              "AnnotatePlan": False, "QueuedAllocations": None, "LeaderACL": "", "SnapshotIndex": 0,
              "CreateIndex": index, "ModifyIndex": index, "CreateTime": now, "ModifyTime": now}
        ev.update(extra)
        self.evals[ev["ID"]] = ev
        self.tables["evals"] = index
        return ev

    def new_deployment(self, job: dict, index: int) -> dict:
        groups = {}
        for g in job["TaskGroups"]:
            upd = g.get("Update") or {}
            groups[g["Name"]] = {"AutoRevert": upd.get("AutoRevert", False),
                                 "AutoPromote": upd.get("AutoPromote", False),
                                 "ProgressDeadline": upd.get("ProgressDeadline", 0),
                                 "RequireProgressBy": None, "Promoted": False, "PlacedCanaries": None,
                                 "DesiredCanaries": 0, "DesiredTotal": g["Count"], "PlacedAllocs": 0,
                                 "HealthyAllocs": 0, "UnhealthyAllocs": 0}
        d = {"ID": new_id(), "Namespace": "default", "JobID": job["ID"], "JobVersion": job["Version"],
             "JobModifyIndex": job["JobModifyIndex"], "JobSpecModifyIndex": job["JobModifyIndex"],
             "JobCreateIndex": job["CreateIndex"], "IsMultiregion": False, "TaskGroups": groups,
             "Status": "running", "StatusDescription": "Deployment is running", "EvalPriority": job["Priority"],
             "CreateIndex": index, "ModifyIndex": index}
        self.deployments[d["ID"]] = d
        self.tables["deployment"] = index
        return d

    def latest_deployment(self, job_id: str) -> dict | None:
        ds = [d for d in self.deployments.values() if d["JobID"] == job_id]
        return max(ds, key=lambda d: d["CreateIndex"]) if ds else None

    # --- allocations ------------------------------------------------------------------------------
    def job_allocs(self, job_id: str) -> list[dict]:
        return sorted((a for a in self.allocs.values() if a["JobID"] == job_id), key=lambda a: a["CreateIndex"])

    def node_allocs(self, node_id: str) -> list[dict]:
        return sorted((a for a in self.allocs.values() if a["NodeID"] == node_id), key=lambda a: a["CreateIndex"])

    def append_log(self, alloc_id: str, task: str, kind: str, text: str) -> None:
        self.logs.setdefault((alloc_id, task, kind), bytearray()).extend(text.encode())
        self.cond.notify_all()
