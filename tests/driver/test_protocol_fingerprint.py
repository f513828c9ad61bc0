"""Fingerprint health against the real moto server, the TaskEvents stream, and the agent-start sequence (three
launches: docs/nomad-notes.md, "Agent start: three launches")."""

from __future__ import annotations

import itertools
import time

import grpc
import pytest

from driver.pb import driver_pb2
from ecsdemo.local import free_port

HEALTHY = driver_pb2.FingerprintResponse.HEALTHY
UNHEALTHY = driver_pb2.FingerprintResponse.UNHEALTHY
UNDETECTED = driver_pb2.FingerprintResponse.UNDETECTED


def attrs(msg) -> dict:
    return {k: getattr(v, v.WhichOneof("value")) for k, v in msg.attributes.items()}


def wait_for(stream, predicate, limit: int = 50):
    """Read fingerprints until one satisfies `predicate`; returns (that message, messages read)."""
    for n in itertools.count(1):
        msg = next(stream)
        if predicate(msg):
            return msg, n
        if n >= limit:
            raise AssertionError(f"no matching fingerprint in {limit} messages; last: {msg}")


def open_fp(host, timeout: float = 30.0):
    return host.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=timeout)


def test_disabled_is_undetected(plugin_host):
    host = plugin_host()
    host.set_config({"enabled": False, "fingerprint_interval": "200ms"})
    fp = open_fp(host)
    try:
        for _ in range(3):  # at once, then on the timer, and the stream does not end
            msg = next(fp)
            assert msg.health == UNDETECTED and msg.health_description == "disabled"
    finally:
        fp.cancel()


@pytest.mark.slow
def test_before_set_config_is_undetected_then_follows_the_new_config(plugin_host, ecs_config):
    host = plugin_host()
    fp = open_fp(host)
    try:
        started = time.monotonic()
        first = next(fp)
        assert time.monotonic() - started < 5.0  # "at once", not after the 30 s default interval
        assert first.health == UNDETECTED and "SetConfig" in first.health_description
        host.set_config(ecs_config)
        msg, _ = wait_for(fp, lambda m: m.health != UNDETECTED, limit=3)  # re-fingerprints on config change
        assert msg.health == HEALTHY
    finally:
        fp.cancel()


@pytest.mark.slow
def test_active_cluster_is_healthy_with_attributes(plugin_host, ecs_config):
    host = plugin_host()
    host.set_config(ecs_config)
    fp = open_fp(host)
    try:
        msg = next(fp)
        assert msg.health == HEALTHY and msg.health_description == "Healthy"
        assert attrs(msg) == {"driver.ecs": True, "driver.ecs.cluster": "demo", "driver.ecs.region": "us-east-1",
                              "driver.ecs.version": host.plugin_info().plugin_version}
        assert msg.attributes["driver.ecs"].WhichOneof("value") == "bool_val"
        assert next(fp).health == HEALTHY  # the stream goes on
    finally:
        fp.cancel()


@pytest.mark.slow
def test_missing_cluster_is_unhealthy_and_recovers_when_created(plugin_host, aws):
    host = plugin_host()
    host.set_config({"enabled": True, "cluster": "later", "region": aws.region, "endpoint": aws.url,
                     "fingerprint_interval": "200ms"})
    fp = open_fp(host)
    try:
        msg = next(fp)
        assert msg.health == UNHEALTHY
        assert "'later'" in msg.health_description and "not found" in msg.health_description
        assert attrs(msg) == {"driver.ecs": False}
        aws.client("ecs").create_cluster(clusterName="later")
        msg, _ = wait_for(fp, lambda m: m.health == HEALTHY)
        assert attrs(msg)["driver.ecs"] is True
    finally:
        fp.cancel()


@pytest.mark.slow
def test_inactive_cluster_is_unhealthy(plugin_host, ecs_config, aws):
    aws.client("ecs").delete_cluster(cluster="demo")
    host = plugin_host()
    host.set_config(ecs_config)
    fp = open_fp(host)
    try:
        msg = next(fp)
        assert msg.health == UNHEALTHY and "INACTIVE" in msg.health_description
    finally:
        fp.cancel()


@pytest.mark.slow
def test_no_credentials_is_unhealthy_with_a_hint(plugin_host, ecs_config, tmp_path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    host = plugin_host()
    host.set_config(ecs_config)
    fp = open_fp(host)
    try:
        msg = next(fp)
        assert msg.health == UNHEALTHY
        assert "no AWS credentials" in msg.health_description and "AWS_ACCESS_KEY_ID" in msg.health_description
    finally:
        fp.cancel()
    assert "testing" not in host.stderr_path.read_text()  # and no secret ever reaches the logs


@pytest.mark.slow
def test_unreachable_endpoint_is_unhealthy(plugin_host, ecs_config):
    dead = f"http://127.0.0.1:{free_port()}"
    host = plugin_host()
    host.set_config({**ecs_config, "endpoint": dead, "fingerprint_interval": "1s"})
    fp = open_fp(host)
    try:
        msg = next(fp)
        assert msg.health == UNHEALTHY
        assert dead in msg.health_description or "cannot reach" in msg.health_description
    finally:
        fp.cancel()


@pytest.mark.slow
def test_agent_start_sequence_then_fingerprint_and_events_together(plugin_host, ecs_config):
    started = plugin_host.agent_start(ecs_config)
    assert started.info.name == "ecs"
    assert "cluster" in started.config_schema.object.attributes
    first, second, third = started.launches
    assert first.proc.returncode == 0 and second.proc.returncode == 0  # both exited on Shutdown
    assert third.alive()
    fp = open_fp(third)
    events = third.driver.TaskEvents(driver_pb2.TaskEventsRequest(), timeout=1.0)
    try:
        assert next(fp).health == HEALTHY
        with pytest.raises(grpc.RpcError) as err:
            next(events)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # open and silent
        assert next(fp).health == HEALTHY
    finally:
        fp.cancel()
    assert third.shutdown() == 0
    for host in started.launches:
        assert host.extra_stdout == b""


@pytest.mark.slow
def test_two_plugin_processes_at_once(plugin_host, ecs_config):
    a, b = plugin_host(), plugin_host()
    assert a.handshake.address != b.handshake.address
    for host in (a, b):
        host.set_config(ecs_config)
        fp = open_fp(host)
        assert next(fp).health == HEALTHY
        fp.cancel()
    a.kill()
    assert b.plugin_info().name == "ecs"  # killing one leaves the other serving
