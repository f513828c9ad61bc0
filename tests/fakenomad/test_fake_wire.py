"""The fake's wire fidelity (docs/nomad-notes.md, "The HTTP API ecsdemo uses"): encodings, key sets, error codes and
texts, indexes, blocking queries, logs framing, version differences."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import pytest
import requests

from tests.fakenomad import FakeNomad, Timings
from tests.fakenomad.scripted_client import add_node, report_running
from tests.fakenomad.wire import omitempty, parse_go_duration, rfc3339nano

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True

JOB = "nomad-ecs-demo"
TASK = "http-server"
UNKNOWN = "00000000-0000-0000-0000-000000000000"
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


# nomad/structs/structs.go `Node` at v1.6.0 / v1.9.7, and at v1.1.0 (no CgroupParent, HostNetworks, NodePool,
# LastMissedHeartbeatIndex, LastAllocUpdateIndex)
NODE_KEYS_1_1 = {"ID", "SecretID", "Datacenter", "Name", "HTTPAddr", "TLSEnabled", "Attributes", "NodeResources",
                 "ReservedResources", "Resources", "Reserved", "Links", "Meta", "NodeClass", "ComputedClass",
                 "DrainStrategy", "SchedulingEligibility", "Status", "StatusDescription", "StatusUpdatedAt", "Events",
                 "Drivers", "CSIControllerPlugins", "CSINodePlugins", "HostVolumes", "LastDrain", "CreateIndex",
                 "ModifyIndex"}
NODE_KEYS_1_6 = NODE_KEYS_1_1 | {"CgroupParent", "HostNetworks", "NodePool", "LastMissedHeartbeatIndex",
                                 "LastAllocUpdateIndex"}


@pytest.fixture
def bare():
    with FakeNomad(timings=Timings.fast()) as fake:
        yield fake


def get(fake, path, **params):
    return requests.get(fake.address + path, params=params, timeout=10)


def test_wire_helpers():
    assert parse_go_duration("1m30s") == 90 * 10**9 and parse_go_duration("250ms") == 250 * 10**6
    for bad in ("10", "", "1x", "s"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)
    stamp = rfc3339nano(1700000000.1)
    assert stamp == "2023-11-14T22:13:20.1Z" and RFC3339NANO.match(rfc3339nano(local=True))
    assert omitempty({"A": 0, "B": False, "C": None, "D": "", "E": {"M": None}, "F": [], "G": {"x": 1}, "H": 2}) == \
        {"G": {"x": 1}, "H": 2}


def test_error_codes_and_plain_text_bodies(bare):
    cases = [
        (get(bare, f"/v1/node/{UNKNOWN}"), 404, "node not found"),
        (get(bare, f"/v1/allocation/{UNKNOWN}"), 404, "alloc not found"),
        (get(bare, f"/v1/evaluation/{UNKNOWN}"), 404, "eval not found"),
        (get(bare, "/v1/job/nope"), 404, "job not found"),
        (get(bare, "/v1/nodes", wait="10", index="1"), 400, "Invalid wait time"),
        (get(bare, "/v1/nodes", index="x"), 400, "Invalid index"),
        (requests.post(f"{bare.address}/v1/node/{UNKNOWN}/drain", timeout=5), 400, "Request body is empty"),
        (requests.post(f"{bare.address}/v1/node/{UNKNOWN}/drain", json={"DrainSpec": None}, timeout=5), 500,
         "node not found"),
        (requests.delete(f"{bare.address}/v1/nodes", timeout=5), 405, "Invalid method"),
        (requests.post(f"{bare.address}/v1/jobs", json={}, timeout=5), 400, "Job must be specified"),
        (requests.post(f"{bare.address}/v1/jobs", json={"Job": {"Name": "x"}}, timeout=5), 400,
         "Job ID hasn't been provided"),
        (requests.post(f"{bare.address}/v1/job/other", json={"Job": {"ID": "x"}}, timeout=5), 400,
         "Job ID does not match name"),
        (requests.post(f"{bare.address}/v1/jobs/parse", json={"JobHCL": ""}, timeout=5), 400, "Job spec is empty"),
        (requests.delete(f"{bare.address}/v1/job/x", params={"purge": "maybe"}, timeout=5), 500, None),
        (get(bare, "/nothing/here"), 404, ""),
    ]
    for resp, status, text in cases:
        assert resp.status_code == status, (resp.url, resp.text)
        if text is not None:
            assert resp.text == text, resp.url
        assert not resp.headers["Content-Type"].startswith("application/json") or status == 200
    r = requests.post(f"{bare.address}/v1/jobs", json={"Job": {"ID": "x", "TaskGroups": []}}, timeout=5)
    assert r.status_code == 500 and r.text.startswith("2 errors occurred:\n\t* Missing job datacenters")
    assert get(bare, "/v1/job/nope/allocations").json() == []
    assert get(bare, "/v1/job/nope/deployment").text == "null"
    assert get(bare, "/v1/job/nope/deployments").json() == []


def test_indexes_headers_and_query_bools(bare):
    r = get(bare, "/v1/nodes")
    first = int(r.headers["X-Nomad-Index"])
    assert r.json() == [] and r.headers["X-Nomad-KnownLeader"] == "true" and "X-Nomad-LastContact" in r.headers
    n1 = bare.add_node("nomad-client-1", agent_port=None)
    bare.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
    r = get(bare, "/v1/nodes", resources="True")
    assert int(r.headers["X-Nomad-Index"]) > first and "NodeResources" in r.json()[0]
    assert "NodeResources" not in get(bare, "/v1/nodes", resources="0").json()[0]
    w = requests.post(f"{bare.address}/v1/node/{n1}/eligibility", json={"eligibility": "ineligible"}, timeout=5)
    assert int(w.headers["X-Nomad-Index"]) == w.json()["Index"] > int(r.headers["X-Nomad-Index"])
    assert get(bare, f"/v1/node/{n1}").json()["SchedulingEligibility"] == "ineligible"  # keys case-insensitive
    bad = requests.post(f"{bare.address}/v1/node/{n1}/eligibility", json={"Eligibility": "maybe"}, timeout=5)
    assert (bad.status_code, bad.text) == (500, 'invalid scheduling eligibility "maybe"')
    requests.put(f"{bare.address}/v1/node/{n1}/drain", json={"DrainSpec": {"Deadline": 0}}, timeout=5)
    bad = requests.post(f"{bare.address}/v1/node/{n1}/eligibility", json={"Eligibility": "eligible"}, timeout=5)
    assert (bad.status_code, bad.text) == (500, "can not set node's scheduling eligibility to eligible while it is "
                                                "draining")


def test_node_and_stub_shapes(bare):
    n1 = bare.add_node("nomad-client-1")
    bare.wait_for(lambda c: c.nodes[n1]["Status"] == "ready")
    node = get(bare, f"/v1/node/{n1}").json()
    assert set(node) == NODE_KEYS_1_6  # every key of structs.Node, and no `Drain` (only stubs have it)
    assert node["SecretID"] == "" and node["DrainStrategy"] is None and node["LastDrain"] is None
    assert node["Attributes"]["driver.ecs"] == "1" and isinstance(node["StatusUpdatedAt"], int)
    drv = node["Drivers"]["ecs"]
    assert drv["Detected"] and drv["Healthy"] and drv["HealthDescription"] == "Healthy"
    assert drv["Attributes"] == {"driver.ecs": "true"} and RFC3339NANO.match(drv["UpdateTime"])
    assert node["Events"][0]["Message"] == "Node registered"
    stub = get(bare, "/v1/nodes").json()[0]
    assert set(stub) >= {"Address", "ID", "Datacenter", "Name", "NodeClass", "NodePool", "Version", "Drain",
                         "SchedulingEligibility", "Status", "StatusDescription", "Drivers", "HostVolumes",
                         "LastDrain", "CreateIndex", "ModifyIndex"}
    assert stub["Address"] == "127.0.0.1" and stub["Version"] == "1.6.5"
    assert json.loads(get(bare, "/v1/status/leader").text) == "127.0.0.1:4647"
    me = get(bare, "/v1/agent/self").json()
    assert me["config"]["Version"]["Version"] == "1.6.5" and me["member"]["Tags"]["build"] == "1.6.5"
    assert "BuildDate" in me["config"]["Version"]
    client = requests.get(bare.client_address(n1) + "/v1/agent/self", timeout=5).json()
    assert client["stats"]["client"]["node_id"] == n1 and client["member"]["Tags"] is None
    r = requests.get(bare.client_address(n1) + "/v1/agent/health", params={"type": "client"}, timeout=5)
    assert r.status_code == 200 and r.json() == {"client": {"ok": True, "message": "ok"}}


@pytest.mark.slow
def test_version_switch_1_1(ecs_demo):
    with FakeNomad(version="1.1.0", timings=Timings.fast()) as fake:
        n1 = add_node(fake, "nomad-client-1")
        node = get(fake, f"/v1/node/{n1}").json()
        assert set(node) == NODE_KEYS_1_1
        assert "NodePool" not in get(fake, "/v1/nodes").json()[0]
        assert "BuildDate" not in get(fake, "/v1/agent/self").json()["config"]["Version"]
        r = requests.post(f"{fake.address}/v1/jobs/parse", json={"JobHCL": 'job "x" { a = }'}, timeout=5)
        assert r.status_code == 400 and not r.text.startswith("Failed to parse job: ")
        out = requests.delete(f"{fake.address}/v1/job/unknown", timeout=5).json()
        assert out["EvalID"] and "NextToken" not in out  # 1.1 creates an eval for an unknown job
        job = requests.post(f"{fake.address}/v1/jobs/parse", json={"JobHCL": ecs_demo.job_hcl(),
                                                                     "Canonicalize": True}, timeout=5).json()
        requests.post(f"{fake.address}/v1/jobs", json={"Job": job}, timeout=5)
        aid = fake.wait_for(lambda c: next(iter(c.allocs), None))
        report_running(fake, aid, "arn:aws:ecs:us-east-1:123456789012:task/demo/1")
        stub = get(fake, f"/v1/job/{JOB}/allocations").json()[0]
        assert "NextAllocation" not in stub and "NoShutdownDelay" not in stub["DesiredTransition"]
        assert "SigningKeyID" not in get(fake, f"/v1/allocation/{aid}").json()
    with FakeNomad(version="1.6.5", timings=Timings.fast()) as fake:
        out = requests.delete(f"{fake.address}/v1/job/unknown", timeout=5).json()
        assert out["EvalID"] == "" and out["NextToken"] == ""


def test_parse_shape(bare, ecs_demo):
    r = requests.post(f"{bare.address}/v1/jobs/parse", json={"JobHCL": ecs_demo.job_hcl(restarts=False),
                                                            "Canonicalize": True}, timeout=5)
    job = r.json()
    group = job["TaskGroups"][0]
    task = group["Tasks"][0]
    assert (job["ID"], job["Type"], job["Datacenters"], group["Count"]) == (JOB, "service", ["dc1"], 1)
    assert task["KillTimeout"] == 60 * 10**9 and task["Driver"] == "ecs"
    vpc = task["Config"]["task"][0]["network_configuration"][0]["aws_vpc_configuration"][0]
    assert vpc["subnets"] == [ecs_demo.subnet] and vpc["assign_public_ip"] == "ENABLED"
    assert group["Migrate"] == {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * 10**9,
                                "HealthyDeadline": 300 * 10**9}
    assert group["Update"]["MinHealthyTime"] == 10 * 10**9 and group["ReschedulePolicy"]["Delay"] == 5 * 10**9
    assert group["RestartPolicy"]["Attempts"] == 0 and group["RestartPolicy"]["Mode"] == "fail"
    raw = requests.post(f"{bare.address}/v1/jobs/parse", json={"JobHCL": ecs_demo.job_hcl()}, timeout=5).json()
    assert raw["TaskGroups"][0]["Migrate"] is None and raw["Priority"] is None


@pytest.mark.slow
def test_alloc_omitempty_and_stub_keys(nomad_cluster, ecs_demo):
    fake = nomad_cluster
    job = requests.post(f"{fake.address}/v1/jobs/parse", json={"JobHCL": ecs_demo.job_hcl(), "Canonicalize": True},
                        timeout=5).json()
    out = requests.post(f"{fake.address}/v1/jobs", json={"Job": job}, timeout=5).json()
    aid = fake.wait_for(lambda c: next(iter(c.allocs), None))
    alloc = get(fake, f"/v1/allocation/{aid}").json()
    for absent in ("PreviousAllocation", "NextAllocation", "FollowupEvalID", "DesiredDescription",
                   "DesiredTransition", "PreemptedAllocations"):
        assert absent not in alloc, absent
    assert alloc["Job"]["Stop"] is False  # nested structs keep zero values
    fake.wait_for(lambda c: c.allocs[aid]["ClientStatus"] == "running")
    stub = get(fake, f"/v1/job/{JOB}/allocations").json()[0]
    expected = {"ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID", "JobType", "JobVersion",
                "TaskGroup", "DesiredStatus", "DesiredDescription", "ClientStatus", "ClientDescription",
                "DesiredTransition", "TaskStates", "DeploymentStatus", "FollowupEvalID", "RescheduleTracker",
                "PreemptedAllocations", "PreemptedByAllocation", "CreateIndex", "ModifyIndex", "CreateTime",
                "ModifyTime", "NextAllocation"}
    assert set(stub) == expected
    assert stub["DesiredDescription"] == "" and stub["DesiredTransition"] == \
        {"Migrate": None, "Reschedule": None, "ForceReschedule": None, "NoShutdownDelay": None}
    ts = stub["TaskStates"][TASK]
    assert set(ts) == {"State", "Failed", "Restarts", "LastRestart", "StartedAt", "FinishedAt", "Events", "TaskHandle"}
    assert ts["LastRestart"] is None and RFC3339NANO.match(ts["StartedAt"])
    base64.b64decode(ts["TaskHandle"]["DriverState"], validate=True)
    ev = ts["Events"][0]
    assert ev["Type"] == "Received" and ev["DisplayMessage"] == "Task received by client" and ev["Details"] == {}
    assert isinstance(ev["Time"], int) and ev["Time"] > 10**18
    evaluation = get(fake, f"/v1/evaluation/{out['EvalID']}").json()
    assert "BlockedEval" not in evaluation and "FailedTGAllocs" not in evaluation
    assert evaluation["Status"] == "complete" and evaluation["TriggeredBy"] == "job-register"


def test_blocking_query_waits_and_wakes(bare):
    r = get(bare, "/v1/nodes")
    index = int(r.headers["X-Nomad-Index"])
    started = time.monotonic()
    r = get(bare, "/v1/nodes", index=index, wait="300ms")
    assert 0.29 <= time.monotonic() - started < 2 and int(r.headers["X-Nomad-Index"]) == index
    threading.Timer(0.2, bare.add_node, args=("nomad-client-1",), kwargs={"agent_port": None}).start()
    started = time.monotonic()
    r = get(bare, "/v1/nodes", index=index, wait="5s")
    assert time.monotonic() - started < 3 and int(r.headers["X-Nomad-Index"]) > index and r.json()


def test_no_leader_and_failure_injection(bare):
    bare.set_leader(False)
    r = get(bare, "/v1/status/leader")
    assert (r.status_code, r.text) == (500, "No cluster leader")
    h = get(bare, "/v1/agent/health", type="server")
    assert h.status_code == 500 and h.json() == {"server": {"ok": False, "message": "no leader"}}
    bare.set_leader(True)
    bare.fail_next("GET", r"/v1/nodes", 503, "try later", times=2)
    assert [get(bare, "/v1/nodes").status_code for _ in range(3)] == [503, 503, 200]
    assert [r.status for r in bare.requests_to("GET", "/v1/nodes")] == [503, 503, 200]
    address = bare.address
    bare.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(address + "/v1/nodes", timeout=2)


@pytest.mark.slow
def test_logs_framing_and_errors(bare, ecs_demo):
    fake = bare
    add_node(fake, "nomad-client-1")
    job = requests.post(f"{fake.address}/v1/jobs/parse", json={"JobHCL": ecs_demo.job_hcl(), "Canonicalize": True},
                        timeout=5).json()
    requests.post(f"{fake.address}/v1/jobs", json={"Job": job}, timeout=5)
    aid = fake.wait_for(lambda c: next(iter(c.allocs), None))
    path = f"/v1/client/fs/logs/{aid}"
    r = get(fake, path, task=TASK, type="stdout")
    assert (r.status_code, r.text) == (404, f'task "{TASK}" not started yet. No logs available')
    report_running(fake, aid, "arn:aws:ecs:us-east-1:123456789012:task/demo/1")
    with fake.cluster.cond:
        fake.cluster.append_log(aid, TASK, "stdout", "started ECS task\n" + "x" * 70000 + "\n")
    plain = get(fake, path, task=TASK, type="stdout", plain="true")
    assert plain.headers["Content-Type"].startswith("text/plain") and plain.text.startswith("started ECS task")
    assert get(fake, path, task=TASK, type="stdout", plain="true", origin="end", offset="3").text == "xx\n"
    framed = get(fake, path, task=TASK, type="stdout")
    assert framed.headers["Content-Type"] == "application/json"
    frames, text, decoder = [], framed.text, json.JSONDecoder()
    while text:
        frame, end = decoder.raw_decode(text)
        frames.append(frame)
        text = text[end:]
    assert len(frames) == 2 and set(frames[0]) == {"Offset", "Data", "File"} and frames[0]["Offset"] == 0
    assert frames[1]["Offset"] == 64 * 1024  # at most 64 KiB of data per frame
    assert frames[0]["File"] == f"alloc/logs/{TASK}.stdout.0"
    assert b"".join(base64.b64decode(f["Data"]) for f in frames).decode() == plain.text
    with requests.get(fake.address + path, params={"task": TASK, "type": "stderr", "follow": "true"}, stream=True,
                      timeout=5) as r:
        first = next(r.iter_content(chunk_size=None))
    assert first == b"{}"  # idle heartbeat frame
    for params, status, text in (
            ({"type": "stdout"}, 400, "must provide task name"),
            ({"task": TASK}, 400, "must provide log type (stdout/stderr)"),
            ({"task": TASK, "type": "stdout", "origin": "middle"}, 400, "origin must be start or end"),
            ({"task": "x", "type": "stdout"}, 400, 'unknown task name "x"')):
        r = get(fake, path, **params)
        assert (r.status_code, r.text) == (status, text)
    r = get(fake, f"/v1/client/fs/logs/{UNKNOWN}", task=TASK, type="stdout")
    assert (r.status_code, r.text) == (404, f'Unknown allocation "{UNKNOWN}"')
