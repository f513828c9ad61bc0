"""ecsdemo.nomad against the fake Nomad: the requests it makes, what it returns, how it fails."""

from __future__ import annotations

import base64
import threading
import time
from datetime import datetime, timezone

import pytest

from driver.state import DriverState
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import free_port
from ecsdemo.nomad import (
    NomadAPIError,
    NomadClient,
    NomadUnavailable,
    decode_driver_state,
    iter_log_frames,
    live_allocation,
    node_draining,
    node_ecs_driver,
    task_arn,
)
from tests.fakenomad import FakeNomad, Timings
from tests.support.plugin_calls import json_v1_state, reference_state

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True

JOB = "nomad-ecs-demo"
TASK = "http-server"


def _run_job(fake, demo, client=None):
    client = client or NomadClient(fake.address)
    job = client.parse_job(demo.job_hcl())
    out = client.register_job(job)
    fake.wait_for(lambda c: any(a["ClientStatus"] == "running" and (a.get("DeploymentStatus") or {}).get("Healthy")
                                for a in c.allocs.values()), message="a healthy running alloc")
    return client, out


# --- pure helpers ----------------------------------------------------------------------------------

def test_decode_driver_state_reads_every_form_the_plugin_writes_or_recovers():
    def stub(blob: bytes) -> dict:
        return {"TaskStates": {TASK: {"TaskHandle": {"Version": 1, "DriverState": base64.b64encode(blob).decode()}}}}

    now = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    v2 = DriverState(cluster="c", region="us-west-2", task_arn="arn:aws:ecs:x:1:task/c/v2", started_at=now,
                     task_id="a/http-server/1").encode()
    decoded = decode_driver_state(base64.b64encode(v2).decode())
    assert (decoded["v"], decoded["cluster"], decoded["region"], decoded["task_id"]) == \
        (2, "c", "us-west-2", "a/http-server/1")
    assert task_arn(stub(v2), TASK) == "arn:aws:ecs:x:1:task/c/v2"
    old = json_v1_state("arn:aws:ecs:x:1:task/c/abc", "c", "us-east-1")
    assert decode_driver_state(base64.b64encode(old).decode())["task_arn"] == "arn:aws:ecs:x:1:task/c/abc"
    assert task_arn(stub(old), TASK) == "arn:aws:ecs:x:1:task/c/abc"
    # go-msgpack writes time.Time as a non-UTF-8 str; raw=True keeps that from failing, nested maps too
    go = reference_state("arn:aws:ecs:x:1:task/c/go", now, "a/http-server/2", "a")
    assert task_arn(stub(go), TASK) == "arn:aws:ecs:x:1:task/c/go"
    assert decode_driver_state(base64.b64encode(go).decode())["TaskConfig"]["AllocID"] == "a"
    assert decode_driver_state("not base64!") is None
    assert decode_driver_state(base64.b64encode(b"{broken").decode()) is None
    assert decode_driver_state(base64.b64encode(b"\xc1").decode()) is None
    assert decode_driver_state(None) is None
    assert task_arn({"TaskStates": None}, TASK) is None
    assert task_arn({"TaskStates": {TASK: {"TaskHandle": None}}}, TASK) is None


def test_live_allocation_and_node_driver_helpers():
    allocs = [{"ID": "a", "DesiredStatus": "run", "ClientStatus": "running", "CreateIndex": 5},
              {"ID": "b", "DesiredStatus": "run", "ClientStatus": "pending", "CreateIndex": 9},
              {"ID": "c", "DesiredStatus": "stop", "ClientStatus": "running", "CreateIndex": 12},
              {"ID": "d", "DesiredStatus": "run", "ClientStatus": "lost", "CreateIndex": 20}]
    assert live_allocation(allocs)["ID"] == "b"
    assert live_allocation(allocs[2:]) is None
    node = {"Drivers": {"ecs": {"Detected": True, "Healthy": False, "HealthDescription": "no credentials"}}}
    assert node_ecs_driver(node) == (True, False, "no credentials")
    assert node_ecs_driver({"Drivers": {}})[0] is False


def test_node_draining_reads_the_full_node_and_the_stub():
    # GET /v1/node/:id has DrainStrategy and no Drain key; GET /v1/nodes stubs have the Drain bool.
    assert node_draining({"DrainStrategy": {"Deadline": 3600, "ForceDeadline": None}}) is True
    assert node_draining({"DrainStrategy": None}) is False
    assert node_draining({"Drain": True}) is True
    assert node_draining({"Drain": False}) is False


def test_iter_log_frames_handles_split_frames_and_heartbeats():
    frames = b'{"Offset":0,"Data":"aGk=","File":"f"}{}{"Offset":2,"Data":"IQ==","File":"f"}'
    chunks = [frames[i:i + 7] for i in range(0, len(frames), 7)]
    got = list(iter_log_frames(iter(chunks)))
    assert [f.get("Data") for f in got] == ["aGk=", None, "IQ=="]


# --- connection and error translation ------------------------------------------------------------

def test_unreachable_nomad_is_a_clean_error_with_address_and_hint():
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NomadUnavailable) as info:
        NomadClient(address, timeout=2).nodes()
    err = info.value
    assert isinstance(err, EcsdemoError)
    assert address in str(err) and "connection refused" in str(err)
    assert err.hint and "NOMAD_ADDR" in err.hint


def test_address_and_token_come_from_the_environment(monkeypatch):
    with FakeNomad(timings=Timings.fast()) as fake:
        monkeypatch.setenv("NOMAD_ADDR", fake.address)
        monkeypatch.setenv("NOMAD_TOKEN", "s3cr3t-token")
        client = NomadClient()
        assert client.address == fake.address
        assert client.nodes() == []
        assert fake.requests[-1].headers.get("X-Nomad-Token") == "s3cr3t-token"
        assert "s3cr3t" not in repr(client)
        fake.fail_next("GET", "/v1/nodes", 403, "Permission denied")
        with pytest.raises(NomadAPIError) as info:
            client.nodes()
        assert info.value.status == 403 and "s3cr3t" not in str(info.value)
        assert "NOMAD_TOKEN" in info.value.hint


def test_api_errors_carry_status_text_and_path():
    with FakeNomad(timings=Timings.fast()) as fake:
        client = NomadClient(fake.address)
        fake.fail_next("GET", "/v1/nodes", 500, "rpc error: boom")
        with pytest.raises(NomadAPIError) as info:
            client.nodes()
        assert (info.value.status, info.value.text, info.value.path) == (500, "rpc error: boom", "/v1/nodes")
        assert client.node("00000000-0000-0000-0000-000000000000") is None
        assert client.job("nope") is None
        assert client.allocation("00000000-0000-0000-0000-000000000000") is None
        assert client.evaluation("00000000-0000-0000-0000-000000000000") is None
        assert client.job_allocations("nope") == []
        with pytest.raises(NomadAPIError) as info:
            client.drain("00000000-0000-0000-0000-000000000000", 60)
        assert info.value.status == 500 and info.value.text == "node not found"
        with pytest.raises(NomadAPIError) as info:
            client.parse_job('job "x" { a = }')
        assert info.value.status == 400 and info.value.text.startswith("Failed to parse job: ")


def test_leader_version_and_agent_health():
    with FakeNomad(version="1.1.0", timings=Timings.fast()) as fake:
        client = NomadClient(fake.address)
        assert client.leader() == "127.0.0.1:4647"
        assert client.version() == "1.1.0"
        assert client.agent_health("server") == (True, "ok")
        fake.set_leader(False)
        assert client.leader() is None
        assert client.agent_health("server") == (False, "no leader")


# --- against a running cluster ----------------------------------------------------------------------

@pytest.mark.slow
def test_client_node_id_reads_each_client_agents_own_port(nomad_cluster):
    fake = nomad_cluster
    for node_id in fake.node_ids:
        assert NomadClient.client_node_id(fake.client_address(node_id)) == node_id
        assert NomadClient(fake.client_address(node_id)).agent_health("client") == (True, "ok")
    nodes = NomadClient(fake.address).nodes()
    assert {n["ID"] for n in nodes} == set(fake.node_ids)
    assert all(node_ecs_driver(n) == (True, True, "Healthy") for n in nodes)


@pytest.mark.slow
def test_parse_register_and_read_the_running_job(nomad_cluster, ecs_demo, aws):
    client, out = _run_job(nomad_cluster, ecs_demo)
    parse = nomad_cluster.requests_to("POST", "/v1/jobs/parse")[-1]
    assert parse.body == {"JobHCL": ecs_demo.job_hcl(), "Canonicalize": True}
    register = nomad_cluster.requests_to("POST", "/v1/jobs")[-1]
    assert register.body["Job"]["ID"] == JOB  # wrapped in "Job", as Nomad requires
    assert client.evaluation(out["EvalID"])["Status"] == "complete"
    job = client.job(JOB)
    assert job["Status"] == "running" and job["Version"] == 0
    alloc = live_allocation(client.job_allocations(JOB))
    full = client.allocation(alloc["ID"])
    arn = task_arn(full, TASK)
    tasks = aws.client("ecs").describe_tasks(cluster=ecs_demo.cluster, tasks=[arn])["tasks"]
    assert tasks[0]["lastStatus"] == "RUNNING" and tasks[0]["startedBy"] == "nomad-" + alloc["ID"][:30]
    assert client.job_deployment(JOB)["Status"] == "successful"
    assert any(a["ID"] == alloc["ID"] for a in client.node_allocations(alloc["NodeID"]))


@pytest.mark.slow
def test_drain_posts_a_spec_body_and_undrain_marks_eligible(nomad_cluster, ecs_demo):
    client, _ = _run_job(nomad_cluster, ecs_demo)
    node_id = live_allocation(client.job_allocations(JOB))["NodeID"]
    client.drain(node_id, 3600)
    req = nomad_cluster.requests_to("POST", f"/v1/node/{node_id}/drain")[-1]
    assert req.body["DrainSpec"] == {"Deadline": 3600 * 10**9, "IgnoreSystemJobs": False}
    assert "enable" not in req.query  # python-nomad's broken drain_node is not used
    nomad_cluster.wait_for(lambda c: c.nodes[node_id]["LastDrain"]["Status"] == "complete", message="drain done")
    assert client.node(node_id)["SchedulingEligibility"] == "ineligible"
    client.undrain(node_id)
    req = nomad_cluster.requests_to("POST", f"/v1/node/{node_id}/drain")[-1]
    assert req.body["DrainSpec"] is None and req.body["MarkEligible"] is True
    assert client.node(node_id)["SchedulingEligibility"] == "eligible"
    client.set_eligibility(node_id, False)
    assert nomad_cluster.requests_to("POST", f"/v1/node/{node_id}/eligibility")[-1].body["Eligibility"] == "ineligible"
    assert client.node(node_id)["SchedulingEligibility"] == "ineligible"


@pytest.mark.slow
def test_wait_job_allocations_is_a_real_blocking_query(nomad_cluster, ecs_demo):
    client, _ = _run_job(nomad_cluster, ecs_demo)
    allocs, index = client.wait_job_allocations(JOB, 0, 2)
    assert allocs and index > 0
    req = nomad_cluster.requests_to("GET", f"/v1/job/{JOB}/allocations")[-1]
    assert req.query["wait"] == "2s" and req.query["index"] == "0"
    # nothing changes: it blocks about `wait`, then returns the same index
    started = time.monotonic()
    _, same = client.wait_job_allocations(JOB, index, wait_s=1)
    assert time.monotonic() - started >= 0.9 and same == index
    # a change wakes it early
    threading.Timer(0.3, client.stop_job, args=(JOB,)).start()
    started = time.monotonic()
    allocs, newer = client.wait_job_allocations(JOB, index, 5)
    assert newer > index and time.monotonic() - started < 4


@pytest.mark.slow
def test_stop_job_and_purge(nomad_cluster, ecs_demo):
    client, _ = _run_job(nomad_cluster, ecs_demo)
    client.stop_job(JOB)
    assert client.job(JOB)["Stop"] is True
    client.stop_job(JOB, purge=True)
    assert nomad_cluster.requests_to("DELETE", f"/v1/job/{JOB}")[-1].query["purge"] == "True"
    assert client.job(JOB) is None
    assert client.job_allocations(JOB)  # still listed until GC
    assert client.stop_job("never-registered")["EvalID"] == ""


@pytest.mark.slow
def test_read_and_follow_logs(nomad_cluster, ecs_demo):
    client, _ = _run_job(nomad_cluster, ecs_demo)
    alloc = live_allocation(client.job_allocations(JOB))
    text = client.read_logs(alloc["ID"], TASK)
    assert "client is remotely monitoring ECS task: arn:aws:ecs:" in text     # the plugin's own stdout
    assert client.read_logs(alloc["ID"], TASK, origin="end", offset=5) == text[-5:]
    with pytest.raises(NomadAPIError) as info:
        client.read_logs(alloc["ID"], "nope")
    assert info.value.status == 400 and 'unknown task name "nope"' in info.value.text
    with pytest.raises(EcsdemoError):
        client.read_logs(alloc["ID"], TASK, kind="stdin")
    received = []
    threading.Timer(0.5, client.stop_job, args=(JOB,)).start()
    for piece in client.follow_logs(alloc["ID"], TASK, idle_timeout=10):
        received.append(piece)
    joined = "".join(received)
    assert joined.startswith(text[:40]) and "Nomad asked to stop ECS task" in joined
    req = nomad_cluster.requests_to("GET", f"/v1/client/fs/logs/{alloc['ID']}")[-1]
    assert req.query["follow"] == "true" and req.query["plain"] == "false"
