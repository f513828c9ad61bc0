"""go-plugin transport: cookie, protocol negotiation, socket dir, handshake line, signals, shutdown, TLS, logs."""

from __future__ import annotations

import datetime
import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driver.pb import driver_pb2, go_plugin_pb2, go_plugin_pb2_grpc
from ecsdemo.pluginclient import MAGIC_COOKIE_KEY, NOMAD_ENV, Handshake, PluginError
from tests.support.plugin_host import PLUGIN_EXE, PluginHost

HANDSHAKE = re.compile(r"^1\|2\|unix\|(/[^|]+)\|grpc\|$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")


def run_plugin(env_overrides: dict, drop: tuple = (), timeout: float = 20) -> subprocess.CompletedProcess:
    env = dict(os.environ, **NOMAD_ENV)
    env.update(env_overrides)
    for key in drop:
        env.pop(key, None)
    return subprocess.run([str(PLUGIN_EXE)], env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("cookie", [None, "", "not-the-cookie"])
def test_wrong_or_missing_cookie_exits_1_with_a_message(cookie):
    res = run_plugin({} if cookie is None else {MAGIC_COOKIE_KEY: cookie},
                     drop=(MAGIC_COOKIE_KEY,) if cookie is None else ())
    assert res.returncode == 1
    assert res.stdout == b""
    assert b"This binary is a plugin" in res.stderr and b"not meant to be executed directly" in res.stderr
    assert b"Traceback" not in res.stderr


@pytest.mark.parametrize("versions", ["1", "3,4", "", "abc"])
def test_no_common_protocol_version_exits_1(versions):
    res = run_plugin({"PLUGIN_PROTOCOL_VERSIONS": versions})
    assert res.returncode == 1
    assert res.stdout == b""
    assert b"Incompatible plugin protocol" in res.stderr and b"speaks 2" in res.stderr
    assert b"Traceback" not in res.stderr


def test_negotiates_2_among_several(plugin_host):
    host = plugin_host(extra_env={"PLUGIN_PROTOCOL_VERSIONS": "1, 2,3"})
    assert host.handshake.app_version == 2
    assert host.plugin_info().name == "ecs"


def test_socket_dir_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    res = run_plugin({"PLUGIN_UNIX_SOCKET_DIR": str(blocked / "sub")})
    assert res.returncode == 1
    assert res.stdout == b""
    assert b"cannot create the plugin's socket directory" in res.stderr
    assert b"Traceback" not in res.stderr


def test_handshake_is_the_only_stdout_line_and_socket_dir_is_private(plugin_host):
    host = plugin_host()
    m = HANDSHAKE.match(host.handshake.line)
    assert m, host.handshake.line
    sock = Path(m.group(1))
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert sock.parent.name.startswith("plugin")
    host.set_config({"enabled": False})
    fp = host.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=10)
    assert next(fp).health_description == "disabled"
    fp.cancel()
    assert host.shutdown() == 0
    assert host.extra_stdout == b""
    assert not sock.parent.exists(), "the socket directory must be removed on exit"


def test_socket_dir_env_is_honoured(plugin_host, tmp_path):
    where = tmp_path / "socks"
    where.mkdir()
    host = plugin_host(extra_env={"PLUGIN_UNIX_SOCKET_DIR": str(where)})
    assert Path(host.handshake.address).parent.parent == where


def test_shutdown_exits_within_two_seconds_even_with_open_streams(plugin_host):
    host = plugin_host()
    host.set_config({"enabled": False})
    fp = host.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=30)
    events = host.driver.TaskEvents(driver_pb2.TaskEventsRequest(), timeout=30)
    stdio = go_plugin_pb2_grpc.GRPCStdioStub(host.channel).StreamStdio(
        go_plugin_pb2.google_dot_protobuf_dot_empty__pb2.Empty(), timeout=30)
    next(fp)
    started = time.monotonic()
    go_plugin_pb2_grpc.GRPCControllerStub(host.channel).Shutdown(go_plugin_pb2.Empty(), timeout=5)
    assert host.wait(2.0) == 0
    assert time.monotonic() - started < 2.0
    for call in (fp, events, stdio):
        call.cancel()


def test_sigint_is_ignored_and_sigterm_stops_cleanly(plugin_host):
    host = plugin_host()
    host.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert host.alive()
    assert host.plugin_info().name == "ecs"
    sock_dir = Path(host.handshake.address).parent
    host.proc.send_signal(signal.SIGTERM)
    assert host.wait(5) == 0
    assert not sock_dir.exists()


def test_health_service_reports_plugin_serving(plugin_host):
    host = plugin_host()
    resp = health_pb2_grpc.HealthStub(host.channel).Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.slow
def test_stdio_stream_stays_silent_until_cancelled(plugin_host):
    host = plugin_host()
    call = go_plugin_pb2_grpc.GRPCStdioStub(host.channel).StreamStdio(empty_pb2.Empty(), timeout=0.7)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # neither data nor an end of stream
    assert host.plugin_info().name == "ecs"


@pytest.mark.slow
def test_task_events_stream_stays_open(plugin_host):
    host = plugin_host()
    call = host.driver.TaskEvents(driver_pb2.TaskEventsRequest(), timeout=0.7)
    with pytest.raises(grpc.RpcError) as err:
        next(call)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unknown_methods_are_unimplemented_and_the_plugin_keeps_serving(plugin_host):
    host = plugin_host()
    broker = host.channel.stream_stream("/plugin.GRPCBroker/StartStream",
                                        request_serializer=go_plugin_pb2.ConnInfo.SerializeToString,
                                        response_deserializer=go_plugin_pb2.ConnInfo.FromString)
    with pytest.raises(grpc.RpcError) as err:
        next(broker(iter([go_plugin_pb2.ConnInfo(service_id=1)]), timeout=5))
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert host.plugin_info().name == "ecs"


def test_stderr_is_hclog_json(plugin_host):
    host = plugin_host(extra_env={"NOMAD_DRIVER_ECS_LOG_LEVEL": "trace"})
    host.set_config({"enabled": False, "log_level": "debug"})
    host.shutdown()
    entries = host.logs()
    assert entries, "the plugin logged nothing"
    for e in entries:
        assert e["@level"] in {"trace", "debug", "info", "warn", "error"}
        assert isinstance(e["@message"], str) and e["@message"]
        assert TIMESTAMP.match(e["@timestamp"]), e["@timestamp"]
        assert e["@module"].startswith("ecs")
    configured = [e for e in entries if e["@message"] == "plugin configured"]
    assert configured and configured[0]["enabled"] is False  # extra keys travel as JSON keys
    assert any(e["@level"] == "debug" for e in entries)


def test_log_level_defaults_to_info(plugin_host):
    host = plugin_host()
    host.set_config({"enabled": False})
    host.shutdown()
    levels = {e["@level"] for e in host.logs()}
    assert "info" in levels and "debug" not in levels and "trace" not in levels


def test_closed_stderr_does_not_stop_the_plugin(tmp_path):
    env = dict(os.environ, **NOMAD_ENV)
    proc = subprocess.Popen([str(PLUGIN_EXE)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        assert HANDSHAKE.match(line.strip()), line
        proc.stderr.close()  # the agent is gone: every log write now hits EPIPE
        host = PluginHost(tmp_path)  # not launched by the host: only its gRPC side is used
        host.handshake = Handshake.parse(line)
        for _ in range(3):  # SetConfig logs (at error, then info): must not break anything
            with pytest.raises(grpc.RpcError):
                host.set_config_raw(b"\xc1")
            host.set_config({"enabled": False})
        assert host.plugin_info().name == "ecs"
        host.close_channel()
    finally:
        proc.kill()
        proc.wait()


def test_a_plugin_that_prints_garbage_is_rejected_by_the_host(tmp_path):
    fake = tmp_path / "fake-plugin"
    fake.write_text("#!/bin/sh\necho 'hello there'\nsleep 30\n")
    fake.chmod(0o755)
    host = PluginHost(tmp_path, argv=[str(fake)])
    with pytest.raises(PluginError, match="unrecognized remote plugin message"):
        host.start(timeout=10)
    assert not host.alive()


# ---- AutoMTLS (go-plugin hosts other than Nomad) ---------------------------------------------------

def _client_identity() -> tuple[bytes, bytes]:
    # go-plugin's own hosts use P-521, which grpcio's BoringSSL cannot sign or verify with (see README)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_auto_mtls_serves_tls_that_requires_the_client_certificate(plugin_host):
    cert_pem, key_pem = _client_identity()
    host = plugin_host(extra_env={"PLUGIN_CLIENT_CERT": cert_pem.decode()}, client_tls=(cert_pem, key_pem))
    field6 = host.handshake.server_cert
    assert len(field6) > 50 and "=" not in field6
    server_cert = x509.load_pem_x509_certificate(host.handshake.server_cert_pem())
    assert server_cert.subject.rfc4514_string().find("CN=localhost") >= 0
    assert host.plugin_info().name == "ecs"  # over TLS with our client certificate

    target = f"unix:{host.handshake.address}"
    with grpc.insecure_channel(target) as plain:
        with pytest.raises(grpc.RpcError):
            plain.unary_unary("/hashicorp.nomad.plugins.base.proto.BasePlugin/PluginInfo")(b"", timeout=3)
    stranger_cert, stranger_key = _client_identity()
    creds = grpc.ssl_channel_credentials(root_certificates=host.handshake.server_cert_pem(),
                                         private_key=stranger_key, certificate_chain=stranger_cert)
    with grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", "localhost")]) as other:
        with pytest.raises(grpc.RpcError):
            other.unary_unary("/hashicorp.nomad.plugins.base.proto.BasePlugin/PluginInfo")(b"", timeout=3)
    assert host.shutdown() == 0


def test_bad_client_cert_is_a_clear_error():
    res = run_plugin({"PLUGIN_CLIENT_CERT": "not a certificate"})
    assert res.returncode == 1
    assert b"PLUGIN_CLIENT_CERT is not a PEM certificate" in res.stderr
    assert res.stdout == b""
