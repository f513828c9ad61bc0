"""Fixtures for tests that need a fake Nomad. Reuse them elsewhere with
`from tests.fakenomad.fixtures import ecs_demo, fake_nomad, nomad_cluster  # noqa: F401`.

`ecs_demo`: the demo's ECS resources on the (reset) moto server. `fake_nomad`: a started FakeNomad
(fast timings) whose nodes run their tasks through real plugin processes (`fake.runtime`, a PluginRuntime,
one plugin per node, all shut down at teardown), with no nodes; `nomad_cluster`: the same with two ready
client nodes, `nomad-client-1` and `nomad-client-2` (their IDs in `fake.node_ids`), started in parallel.
"""

from __future__ import annotations

import threading

import pytest

from tests.ecsdemo.test_scenario_flows import module_aws  # noqa: F401 - module-scoped ECS resources
from tests.fakenomad import FakeNomad, PluginRuntime, Timings
from tests.fakenomad.ecs_setup import create_demo_ecs


@pytest.fixture
def ecs_demo(aws):
    return create_demo_ecs(aws)


def add_nodes(fake: FakeNomad, names: list[str], **kw) -> list[str]:
    """Start the nodes' agents at once (each launches its plugin first, ~1 s) and wait until all are ready."""
    ids: dict[str, str] = {}
    errors: list[BaseException] = []

    def add(name):
        try:
            ids[name] = fake.add_node(name, **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    out = [ids[n] for n in names]
    fake.wait_for(lambda c: all(c.nodes[n]["Status"] == "ready" for n in out), message="nodes ready")
    return out


@pytest.fixture(name="aws")
def shared_aws(module_aws):
    """Import as `from tests.fakenomad.fixtures import shared_aws, shared_ecs_demo` to override `aws` and
    `ecs_demo` in a module: the demo's ECS resources are made once per module (moto's EC2 is slow) and each
    test starts with no running task instead of a wiped moto."""
    helper, ecs = module_aws
    client = helper.client("ecs")
    for arn in client.list_tasks(cluster=ecs.cluster, desiredStatus="RUNNING")["taskArns"]:
        client.stop_task(cluster=ecs.cluster, task=arn, reason="test cleanup")
    return helper


@pytest.fixture(name="ecs_demo")
def shared_ecs_demo(aws, module_aws):
    return module_aws[1]


@pytest.fixture
def fake_nomad(ecs_demo, tmp_path):
    runtime = PluginRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region, workdir=tmp_path / "plugins")
    fake = FakeNomad(timings=Timings.fast(), runtime=runtime).start()
    yield fake
    fake.stop()
    runtime.close()


@pytest.fixture
def nomad_cluster(fake_nomad):
    fake_nomad.node_ids = add_nodes(fake_nomad, [f"nomad-client-{i}" for i in (1, 2)])
    return fake_nomad
