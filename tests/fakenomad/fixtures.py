"""Fixtures for tests that need a fake Nomad. Reuse them elsewhere with
`from tests.fakenomad.fixtures import ecs_demo, fake_nomad, nomad_cluster  # noqa: F401`.

`ecs_demo`: the demo's ECS resources on the (reset) moto server. `fake_nomad`: a started FakeNomad
(fast timings, tasks on moto) with no nodes; `nomad_cluster`: the same with two ready client nodes,
`nomad-client-1` and `nomad-client-2` (their IDs in `fake.node_ids`).
"""

from __future__ import annotations

import pytest

from tests.fakenomad import EcsRuntime, FakeNomad, Timings
from tests.fakenomad.ecs_setup import create_demo_ecs


@pytest.fixture
def ecs_demo(aws):
    return create_demo_ecs(aws)


@pytest.fixture
def fake_nomad(ecs_demo):
    fake = FakeNomad(timings=Timings.fast(),
                     runtime=EcsRuntime(ecs_demo.endpoint, ecs_demo.cluster, ecs_demo.region)).start()
    yield fake
    fake.stop()


@pytest.fixture
def nomad_cluster(fake_nomad):
    fake_nomad.node_ids = [fake_nomad.add_node(f"nomad-client-{i}") for i in (1, 2)]
    fake_nomad.wait_for(lambda c: all(c.nodes[n]["Status"] == "ready" for n in fake_nomad.node_ids),
                        message="both nodes ready")
    return fake_nomad
