"""The JSON shape of each endpoint, per emulated version (docs/nomad-notes.md, "The HTTP API ecsdemo uses").

Pure functions from the model's dicts to what Nomad would send; private ``_`` keys are dropped
everywhere, ``Allocation``/``Evaluation`` get top-level omitempty, stubs keep every key.
"""

from __future__ import annotations

from tests.fakenomad.model import Cluster
from tests.fakenomad.wire import omitempty

STUB_ALLOC_KEYS = ("ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID", "TaskGroup",
                   "DesiredStatus", "DesiredDescription", "ClientStatus", "ClientDescription", "DesiredTransition",
                   "TaskStates", "DeploymentStatus", "FollowupEvalID", "RescheduleTracker", "PreemptedAllocations",
                   "PreemptedByAllocation", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime")


def public(obj):
    """A deep copy without private `_` keys."""
    if isinstance(obj, dict):
        return {k: public(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [public(v) for v in obj]
    return obj


def _task_states(cl: Cluster, states: dict | None) -> dict | None:
    if states is None:
        return None
    out = public(states)
    for ts in out.values():
        if cl.vt >= (1, 8, 0):
            ts.setdefault("Paused", "")
        if cl.vt >= (1, 10, 0):
            ts["TaskHandle"] = None  # remote task handles were removed in 1.10
    return out


def _transition(cl: Cluster, t: dict) -> dict:
    out = dict(t)
    if cl.vt < (1, 3, 0):
        out.pop("NoShutdownDelay", None)
    return out


# Node fields by the version that added them (nomad/structs/structs.go `Node` at each tag).
_NODE_FIELDS_SINCE = {"HostNetworks": (1, 2, 0), "CgroupParent": (1, 3, 0), "LastMissedHeartbeatIndex": (1, 5, 0),
                      "LastAllocUpdateIndex": (1, 5, 0), "NodePool": (1, 6, 0)}


def node_full(cl: Cluster, node: dict) -> dict:
    """`GET /v1/node/:id`: the `Node` struct. It has `DrainStrategy` (null unless draining) and no `Drain`
    key: only the list stub derives `Drain` (structs.go `Node.Stub`, command/agent/node_endpoint.go)."""
    out = public(node)
    out.pop("Drain", None)
    for key, since in _NODE_FIELDS_SINCE.items():
        if cl.vt < since:
            out.pop(key, None)
    return out


def node_stub(cl: Cluster, node: dict, resources: bool = False) -> dict:
    out = {"Address": node["HTTPAddr"].rsplit(":", 1)[0], "ID": node["ID"], "Datacenter": node["Datacenter"],
           "Name": node["Name"], "NodeClass": node["NodeClass"], "Version": node["Attributes"].get("nomad.version", ""),
           "Drain": node["DrainStrategy"] is not None, "SchedulingEligibility": node["SchedulingEligibility"],
           "Status": node["Status"], "StatusDescription": node["StatusDescription"],
           "Drivers": public(node["Drivers"]), "HostVolumes": None, "LastDrain": public(node["LastDrain"]),
           "CreateIndex": node["CreateIndex"], "ModifyIndex": node["ModifyIndex"]}
    if cl.vt >= (1, 6, 0):
        out["NodePool"] = node["NodePool"]
    if resources:
        out["NodeResources"] = public(node["NodeResources"])
        out["ReservedResources"] = public(node["ReservedResources"])
    return out


def _tracker(cl: Cluster, t: dict | None) -> dict | None:
    """RescheduleTracker {Events: [{RescheduleTime ns, PrevAllocID, PrevNodeID, Delay ns}]}; 1.9 adds
    `LastReschedule` ("ok" / "no placement")."""
    if t is None:
        return None
    out = public(t)
    if cl.vt < (1, 9, 0):
        out.pop("LastReschedule", None)
    else:
        out.setdefault("LastReschedule", "")
    return out


def alloc_stub(cl: Cluster, a: dict) -> dict:
    """AllocListStub (structs.go `Allocation.Stub`): every key, no PreviousAllocation, NextAllocation from 1.6."""
    out = {k: public(a[k]) for k in STUB_ALLOC_KEYS}
    out["JobType"] = a["Job"]["Type"]
    out["JobVersion"] = a["Job"]["Version"]
    out["TaskStates"] = _task_states(cl, a["TaskStates"])
    out["DesiredTransition"] = _transition(cl, out["DesiredTransition"])
    out["RescheduleTracker"] = _tracker(cl, a["RescheduleTracker"])
    if cl.vt >= (1, 6, 0):
        out["NextAllocation"] = a["NextAllocation"]
    return out


def alloc_full(cl: Cluster, a: dict) -> dict:
    """`Allocation` with top-level omitempty (its `_struct` codec tag): zero fields are left out."""
    out = public(a)
    out["TaskStates"] = _task_states(cl, a["TaskStates"])
    out["DesiredTransition"] = _transition(cl, out["DesiredTransition"])
    out["RescheduleTracker"] = _tracker(cl, a["RescheduleTracker"])
    if cl.vt < (1, 5, 0):
        out.pop("SigningKeyID", None)
    return omitempty(out)


def eval_full(cl: Cluster, ev: dict) -> dict:
    return omitempty(public(ev))


def job_view(cl: Cluster, job: dict) -> dict:
    out = public(job)
    if cl.vt < (1, 6, 0):
        out.pop("NodePool", None)
    return out


def deployment_view(cl: Cluster, d: dict) -> dict:
    out = public(d)
    if cl.vt < (1, 3, 0):
        out.pop("EvalPriority", None)
    return out


def version_info(cl: Cluster) -> dict:
    out = {"Revision": "f" * 40, "Version": cl.version.split("-")[0], "VersionPrerelease": "", "VersionMetadata": ""}
    if cl.vt >= (1, 5, 0):
        out["BuildDate"] = "2023-10-03T00:00:00Z"
    return out


def agent_self_server(cl: Cluster, http_port: int) -> dict:
    leader = "true" if cl.leader else "false"
    return {
        "config": {"Region": "global", "Datacenter": "dc1", "NodeName": "nomad-server-1",
                   "DataDir": "/tmp/nomad-server-1", "PluginDir": "", "Version": version_info(cl),
                   "Ports": {"HTTP": http_port, "RPC": 4647, "Serf": 4648},
                   "Client": {"Enabled": False, "Servers": None}, "Server": {"Enabled": True, "BootstrapExpect": 1}},
        "member": {"Name": "nomad-server-1.global", "Addr": "127.0.0.1", "Port": 4648, "Status": "alive",
                   "Tags": {"build": cl.version.split("-")[0], "region": "global", "dc": "dc1", "role": "nomad",
                            "port": "4647", "bootstrap": "1"}},
        "stats": {"nomad": {"server": "true", "leader": leader, "leader_addr": "127.0.0.1:4647" if cl.leader else "",
                            "bootstrap": "true", "known_regions": "1"},
                  "runtime": {"goroutines": "100", "arch": "amd64", "version": "go1.21"}},
    }


def agent_self_client(cl: Cluster, node: dict, http_port: int) -> dict:
    return {
        "config": {"Region": "global", "Datacenter": node["Datacenter"], "NodeName": node["Name"],
                   "DataDir": f"/tmp/{node['Name']}", "Version": version_info(cl),
                   "Ports": {"HTTP": http_port, "RPC": 4647, "Serf": 4648},
                   "Client": {"Enabled": True, "Servers": ["127.0.0.1:4647"]}, "Server": {"Enabled": False}},
        "member": {"Name": "", "Addr": None, "Port": 0, "Status": "", "Tags": None},
        "stats": {"client": {"node_id": node["ID"], "known_servers": "127.0.0.1:4647",
                             "num_allocations": str(sum(1 for a in cl.allocs.values() if a["NodeID"] == node["ID"]
                                                        and a["DesiredStatus"] == "run")),
                             "last_heartbeat": "1.5s", "heartbeat_ttl": "10s"},
                  "runtime": {"goroutines": "80", "arch": "amd64", "version": "go1.21"}},
    }

