"""The fake Nomad (tests/fakenomad/) in tests, and its HTTP API as tests call it.

`fake_nomad`: a started FakeNomad (fast timings) whose nodes run their tasks through real plugin processes
(`fake.runtime`, a PluginRuntime, one plugin per node, all shut down at teardown), with no nodes;
`nomad_cluster`: the same with two ready client nodes, `nomad-client-1` and `nomad-client-2` (their IDs in
`fake.node_ids`), started in parallel.
Both run on `ecs_demo` (tests/support/moto_world.py).

`run_job(fake, hcl)` parses and registers a job over the HTTP API; `api(fake, path)` GETs a path;
`healthy_alloc`, `events`, `ecs_task` and `arn_of` read what a scenario left.
"""

from __future__ import annotations

import pytest
import requests

from ecsdemo.nomad import task_arn
from tests.fakenomad import FakeNomad, PluginRuntime, Timings

JOB = "nomad-ecs-demo"
TASK = "http-server"


def api(fake, path, **params):
    r = requests.get(fake.address + path, params=params, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def run_job(fake, hcl):
    job = requests.post(fake.address + "/v1/jobs/parse", json={"JobHCL": hcl, "Canonicalize": True}, timeout=5).json()
    out = requests.post(fake.address + "/v1/jobs", json={"Job": job}, timeout=5)
    assert out.status_code == 200, out.text
    return out.json()


def healthy_alloc(fake):
    return fake.wait_for(lambda c: next((a["ID"] for a in c.allocs.values() if a["DesiredStatus"] == "run"
                                         and (a.get("DeploymentStatus") or {}).get("Healthy")), None),
                         message="a healthy alloc")


def events(alloc):
    return [e["Type"] for e in (alloc["TaskStates"][TASK]["Events"] or [])]


def ecs_task(aws, demo, arn):
    return aws.client("ecs").describe_tasks(cluster=demo.cluster, tasks=[arn])["tasks"][0]


def arn_of(alloc):
    return task_arn(alloc, TASK)


@pytest.fixture
def fake_nomad(ecs_demo, tmp_path):
    runtime = PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
    fake = FakeNomad(timings=Timings.fast(), runtime=runtime).start()
    yield fake
    fake.stop()
    runtime.close()


@pytest.fixture
def nomad_cluster(fake_nomad):
    fake_nomad.node_ids = fake_nomad.add_nodes([f"nomad-client-{i}" for i in (1, 2)])
    return fake_nomad
