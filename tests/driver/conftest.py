"""Fixtures for the driver tests: a factory of Nomad-like plugin hosts that never leaks processes, and two plugin
configs for the session moto server (`ecs_config`: a fixed ACTIVE cluster; `config`: the `world`'s cluster)."""

from __future__ import annotations

import pytest

from tests.support.plugin_host import PluginHost, agent_start


class PluginHosts:
    """`plugin_host()` launches (and handshakes) a plugin; every process is killed at teardown."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.hosts: list[PluginHost] = []

    def __call__(self, start: bool = True, **kwargs) -> PluginHost:
        host = PluginHost(self.workdir, **kwargs)
        self.hosts.append(host)
        if start:
            host.start(timeout=30)
        return host

    def agent_start(self, config: dict | None, **kwargs):
        return agent_start(lambda: self(**kwargs), config)

    def cleanup(self) -> None:
        for host in self.hosts:
            host.kill()


@pytest.fixture
def plugin_host(tmp_path):
    hosts = PluginHosts(tmp_path)
    yield hosts
    hosts.cleanup()


@pytest.fixture
def ecs_config(aws):
    """A plugin config pointing at the session moto server, with a fresh ACTIVE cluster."""
    aws.client("ecs").create_cluster(clusterName="demo")
    return {"enabled": True, "cluster": "demo", "region": aws.region, "endpoint": aws.url,
            "fingerprint_interval": "200ms", "poll_interval": "200ms"}


@pytest.fixture
def config(world):
    """A plugin config pointing at the `world`'s cluster (tests/support/moto_world.py) on the session moto server."""
    return {"enabled": True, "cluster": world.cluster, "region": world.aws.region, "endpoint": world.aws.url,
            "fingerprint_interval": "200ms", "poll_interval": "200ms"}
