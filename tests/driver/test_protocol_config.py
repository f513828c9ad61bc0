"""Base plugin (PluginInfo, ConfigSchema, SetConfig), TaskConfigSchema, Capabilities, and Nomad's cty encoding."""

from __future__ import annotations

import grpc
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driver import __version__
from driver.pb import base_pb2, driver_pb2
from driver.pb import hclspec_pb2 as hs
from driver.plugin_config import ConfigError, decode_plugin_config, parse_duration
from ecsdemo.cty import CtyError, cty_msgpack, cty_value

FULL = {"enabled": None, "cluster": None, "region": None, "endpoint": None, "poll_interval": "5s",
        "fingerprint_interval": "30s", "log_level": None}


def test_cty_msgpack_matches_the_contract_example():
    spec = hs.Spec(object=hs.Object(attributes={
        "image": hs.Spec(Attr=hs.Attr(type="string")),
        "count": hs.Spec(Attr=hs.Attr(type="number")),
        "args": hs.Spec(Attr=hs.Attr(type="list(string)")),
    }))
    expected = bytes.fromhex("83a461726773c0a5636f756e7403a5696d616765a178")
    assert cty_msgpack(spec, {"image": "x", "count": 3}) == expected


def test_cty_conversions_and_rejections_like_nomad():
    spec = hs.Spec(object=hs.Object(attributes={
        "s": hs.Spec(Attr=hs.Attr(type="string")), "n": hs.Spec(Attr=hs.Attr(type="number")),
        "b": hs.Spec(Attr=hs.Attr(type="bool")), "m": hs.Spec(Attr=hs.Attr(type="map(string)")),
        "d": hs.Spec(default=hs.Default(primary=hs.Spec(Attr=hs.Attr(name="d", type="string")),
                                        default=hs.Spec(literal=hs.Literal(value='"5s"')))),
    }))
    assert cty_value(spec, {"s": 5, "n": "7", "b": "true", "m": {"z": 1, "a": True}}) == \
        {"b": True, "d": "5s", "m": {"a": "true", "z": "1"}, "n": 7, "s": "5"}
    assert list(cty_value(spec, {"m": {"z": "1", "a": "2"}})["m"]) == ["a", "z"]  # sorted keys
    with pytest.raises(CtyError, match="b: a bool is required"):
        cty_value(spec, {"b": "yes"})
    with pytest.raises(CtyError, match="nope: unsupported argument"):
        cty_value(spec, {"nope": 1})


def test_plugin_info(plugin_host):
    info = plugin_host().plugin_info()
    assert info.type == base_pb2.DRIVER
    assert list(info.plugin_api_versions) == ["v0.1.0"]
    assert info.plugin_version == __version__
    assert info.name == "ecs"


def test_config_schema_declares_keys_and_defaults(plugin_host):
    spec = plugin_host().config_schema()
    attrs = spec.object.attributes
    assert sorted(attrs) == ["cluster", "enabled", "endpoint", "fingerprint_interval", "log_level", "poll_interval",
                             "region"]
    assert attrs["enabled"].Attr.type == "bool"
    for key in ("cluster", "region", "endpoint"):
        assert attrs[key].Attr.type == "string" and not attrs[key].Attr.required
    for key, default in (("poll_interval", '"5s"'), ("fingerprint_interval", '"30s"')):
        d = attrs[key].default
        assert d.primary.Attr.name == key and d.primary.Attr.type == "string"
        assert d.default.literal.value == default
    # an empty config block still yields every key, with the defaults filled in (Nomad decodes {})
    assert cty_value(spec, {}) == FULL


def test_task_config_schema_is_the_reference_plus_extras(plugin_host):
    spec = plugin_host().task_config_schema()
    task = spec.object.attributes["task"].block_value
    assert task.name == "task" and not task.required
    inner = task.nested.object.attributes
    assert sorted(inner) == ["enable_execute_command", "launch_type", "network_configuration", "platform_version",
                             "propagate_tags", "tags", "task_definition"]
    assert inner["tags"].Attr.type == "map(string)"
    assert inner["enable_execute_command"].Attr.type == "bool"
    vpc = inner["network_configuration"].block_value.nested.object.attributes["aws_vpc_configuration"].block_value
    vattrs = vpc.nested.object.attributes
    assert {k: v.Attr.type for k, v in vattrs.items()} == {
        "assign_public_ip": "string", "security_groups": "list(string)", "subnets": "list(string)"}
    body = {"task": {"launch_type": "FARGATE", "task_definition": "demo:1", "network_configuration": {
        "aws_vpc_configuration": {"assign_public_ip": "ENABLED", "security_groups": ["sg-1"], "subnets": ["s-1"]}}}}
    value = cty_value(spec, body)
    assert value["task"]["tags"] is None and value["task"]["platform_version"] is None
    assert value["task"]["network_configuration"]["aws_vpc_configuration"]["subnets"] == ["s-1"]


def test_capabilities(plugin_host):
    caps = plugin_host().driver.Capabilities(driver_pb2.CapabilitiesRequest(), timeout=5).capabilities
    assert caps.send_signals is False and caps.exec is False
    assert caps.fs_isolation == driver_pb2.DriverCapabilities.IMAGE
    assert caps.remote_tasks is True
    assert caps.mount_configs == driver_pb2.DriverCapabilities.NO_MOUNTS
    assert list(caps.network_isolation_modes) == [] and caps.must_create_network is False


def test_set_config_twice_and_without_nomad_config(plugin_host):
    host = plugin_host()
    cfg = {"enabled": False, "poll_interval": "1s"}
    host.set_config(cfg, agent=False)
    host.set_config(cfg, agent=False)
    host.set_config(cfg, agent=True)
    assert host.plugin_info().name == "ecs"


BAD_CONFIGS = [
    (b"\xc1\x00garbage", "not valid msgpack"),
    (msgpack.packb([1, 2]), "must be a map"),
    (b"", "empty"),
    (msgpack.packb({**FULL, "enabled": "yes"}), "enabled: must be a bool, got str 'yes'"),
    (msgpack.packb({**FULL, "cluster": 7}), "cluster: must be a string, got int 7"),
    (msgpack.packb({**FULL, "bogus": 1}), "bogus: unknown key"),
    (msgpack.packb({k: v for k, v in FULL.items() if k != "region"}), "region: missing"),
    (msgpack.packb({**FULL, "poll_interval": "5 seconds"}), "poll_interval: '5 seconds' is not a duration"),
    (msgpack.packb({**FULL, "fingerprint_interval": "1ms"}), "fingerprint_interval: '1ms' is out of range"),
    (msgpack.packb({**FULL, "enabled": True}), "cluster: is required when enabled"),
    (msgpack.packb({**FULL, "enabled": True, "cluster": "c", "endpoint": "localhost:4566"}),
     "endpoint: 'localhost:4566' is not an http(s) URL"),
    (msgpack.packb({**FULL, "region": "Mars"}), "region: 'Mars' is not an AWS region"),
    (msgpack.packb({**FULL, "log_level": "loud"}), "log_level: unknown log level 'loud'"),
]


@pytest.mark.parametrize("data,message", BAD_CONFIGS, ids=[m.split(":")[0] for _, m in BAD_CONFIGS])
def test_decode_rejects_bad_configs_naming_key_and_value(data, message):
    with pytest.raises(ConfigError) as err:
        decode_plugin_config(data)
    assert message in str(err.value)


@pytest.mark.slow
def test_bad_set_config_is_an_error_and_the_plugin_keeps_serving_its_last_good_config(plugin_host, ecs_config):
    host = plugin_host()
    host.set_config(ecs_config)
    for data, message in BAD_CONFIGS:
        with pytest.raises(grpc.RpcError) as err:
            host.set_config_raw(data)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.value.details() and "invalid plugin config" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        host.set_config_raw(cty_msgpack(host.config_schema(), ecs_config), api_version="v9")
    assert "unsupported plugin_api_version" in err.value.details()
    fp = host.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=10)
    first = next(fp)
    fp.cancel()
    assert first.health == driver_pb2.FingerprintResponse.HEALTHY, first.health_description
    assert first.attributes["driver.ecs.cluster"].string_val == "demo"


def test_config_values_are_decoded():
    data = msgpack.packb({**FULL, "enabled": True, "cluster": " demo ", "region": "eu-west-3",
                          "endpoint": "http://127.0.0.1:5000", "poll_interval": "1m30s",
                          "fingerprint_interval": "250ms", "log_level": "DEBUG"})
    c = decode_plugin_config(data)
    assert (c.enabled, c.cluster, c.region, c.endpoint) == (True, "demo", "eu-west-3", "http://127.0.0.1:5000")
    assert (c.poll_interval, c.fingerprint_interval, c.log_level) == (90.0, 0.25, "debug")
    d = decode_plugin_config(msgpack.packb(FULL))
    assert (d.enabled, d.cluster, d.region, d.poll_interval, d.fingerprint_interval) == (False, "", None, 5.0, 30.0)


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from([("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600)]))
def test_parse_duration_units(n, unit):
    suffix, scale = unit
    assert parse_duration(f"{n}{suffix}") == pytest.approx(n * scale)


def test_parse_duration_compound_and_garbage():
    assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
    assert parse_duration("1.5µs") == pytest.approx(1.5e-6)
    for bad in ("", "5", "s", "1x", "1s2", "--1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
