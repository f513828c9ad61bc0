"""go-plugin's server side for a Python plugin (docs/nomad-notes.md, "go-plugin: how an agent runs a plugin").

`run(register)` does what a Go plugin's `plugin.Serve` does: check the magic cookie, negotiate the app
protocol, ignore SIGINT, listen on a unix socket in a private temporary directory (TLS when the host
sends PLUGIN_CLIENT_CERT), start serving, and only then print the handshake line as the first and only
stdout line. It serves until the host calls GRPCController/Shutdown or sends SIGTERM, then removes the
socket directory. boto3 is never imported on this path, and `cryptography` only when TLS is asked for.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Mapping

import grpc

from driver import log
from driver.declaration import PLUGIN_BINARY

MAGIC_COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSIONS = (2,)          # Nomad's base.Handshake.ProtocolVersion ("0.9+ grpc based")
MAX_SOCKET_PATH = 107                 # sun_path is 108 bytes on Linux, NUL included
STOP_GRACE_S = 0.5                    # in-flight RPCs get this long after Shutdown; exit well within 2 s
_log = log.get_logger("transport")


class TransportError(Exception):
    """The plugin cannot start; the message is printed to stderr and the process exits 1."""


def check_cookie(env: Mapping[str, str]) -> None:
    if env.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        raise TransportError(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins (the Nomad agent), which will load "
            "any plugins automatically. Point the agent's plugin_dir at the directory holding "
            f"{PLUGIN_BINARY} and add a plugin \"{PLUGIN_BINARY}\" {{ config {{ ... }} }} block.")


def negotiate(env: Mapping[str, str]) -> int:
    """The app protocol version to speak: the highest one in PLUGIN_PROTOCOL_VERSIONS we support."""
    raw = env.get("PLUGIN_PROTOCOL_VERSIONS", "")
    offered = set()
    for part in raw.split(","):
        part = part.strip()
        if part.isdigit():
            offered.add(int(part))
    common = sorted(offered.intersection(APP_PROTOCOL_VERSIONS))
    if not common:
        ours = ",".join(map(str, APP_PROTOCOL_VERSIONS))
        raise TransportError(f"Incompatible plugin protocol: the host offers PLUGIN_PROTOCOL_VERSIONS={raw!r}, "
                             f"this plugin speaks {ours} (Nomad 0.9+ gRPC plugins)")
    return common[-1]


def make_socket_dir(env: Mapping[str, str]) -> Path:
    """A fresh 0700 directory for the socket, in PLUGIN_UNIX_SOCKET_DIR when set, else the temp dir."""
    parent = env.get("PLUGIN_UNIX_SOCKET_DIR") or None
    try:
        path = Path(tempfile.mkdtemp(prefix="plugin", dir=parent))
    except OSError as exc:
        where = parent or tempfile.gettempdir()
        raise TransportError(f"cannot create the plugin's socket directory in {where}: {exc.strerror or exc} "
                             "(set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a writable directory)") from None
    os.chmod(path, 0o700)
    sock = path / "plugin.sock"
    if len(str(sock)) > MAX_SOCKET_PATH:
        shutil.rmtree(path, ignore_errors=True)
        raise TransportError(f"socket path {sock} is longer than {MAX_SOCKET_PATH} bytes "
                             "(set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a shorter directory)")
    return path


def handshake_line(app_version: int, network: str, address: str, server_cert: str = "") -> str:
    """`1|2|unix|/path|grpc|<cert>`: go-plugin's format (`%d|%d|%s|%s|%s|%s`)."""
    return f"{CORE_PROTOCOL_VERSION}|{app_version}|{network}|{address}|grpc|{server_cert}"


@dataclass
class AutoMtls:
    """go-plugin AutoMTLS: our self-signed certificate, and the host's, which clients must present."""

    cert_pem: bytes
    key_pem: bytes
    client_cert_pem: bytes

    @property
    def handshake_field(self) -> str:
        """Base64 (standard alphabet, no padding) of our certificate's DER, as go-plugin writes it."""
        # Lazy, as in generate(): cryptography costs ~50 ms of start-up, needed only when the host asks for TLS.
        from cryptography import x509  # noqa: PLC0415 - start-up time (lazy)
        from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415 - start-up time (lazy)

        der = x509.load_pem_x509_certificate(self.cert_pem).public_bytes(Encoding.DER)
        return base64.b64encode(der).decode().rstrip("=")

    @classmethod
    def generate(cls, client_cert_pem: str) -> "AutoMtls":
        # Lazy: importing cryptography costs ~50 ms on the path to the handshake line, and only a host that
        # sends PLUGIN_CLIENT_CERT needs it (benchmarks/plugin_startup.py measures that path).
        from cryptography import x509  # noqa: PLC0415 - start-up time (lazy)
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415 - start-up time (lazy)
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415 - start-up time (lazy)
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415 - start-up time (lazy)

        try:
            x509.load_pem_x509_certificate(client_cert_pem.encode())
        except ValueError as exc:
            raise TransportError(f"PLUGIN_CLIENT_CERT is not a PEM certificate: {exc}") from None
        key = ec.generate_private_key(ec.SECP256R1())  # BoringSSL (grpcio) cannot sign with P-521 keys
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "HashiCorp")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(seconds=30))
                .not_valid_after(now + datetime.timedelta(hours=262980))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                             content_commitment=False, data_encipherment=False, key_agreement=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                   key_pem=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()),
                   client_cert_pem=client_cert_pem.encode())

    def server_credentials(self):
        return grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)], root_certificates=self.client_cert_pem,
                                           require_client_auth=True)


Register = Callable[[grpc.aio.Server, asyncio.Event], Awaitable[None]]


def _print_handshake(line: str) -> None:
    """Write the handshake as the only stdout line, then point fd 1 (and sys.stdout) at stderr for good.

    The original stdout pipe stays open on a private descriptor, as a Go plugin's does, but nothing is
    ever written to it again.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.set_inheritable(saved, False)
        os.dup2(2, 1)
    except OSError:
        pass
    sys.stdout = sys.stderr


async def _serve(register: Register, env: Mapping[str, str], app_version: int, socket_dir: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = grpc.aio.server(options=[("grpc.max_send_message_length", 2**31 - 1),
                                      ("grpc.max_receive_message_length", 2**31 - 1)])
    await register(server, stop)
    address = str(socket_dir / "plugin.sock")
    cert_field = ""
    try:
        if env.get("PLUGIN_CLIENT_CERT"):
            mtls = AutoMtls.generate(env["PLUGIN_CLIENT_CERT"])
            server.add_secure_port(f"unix:{address}", mtls.server_credentials())
            cert_field = mtls.handshake_field
        else:
            server.add_insecure_port(f"unix:{address}")
    except RuntimeError as exc:
        raise TransportError(f"cannot listen on unix socket {address}: {exc}") from None
    await server.start()
    _log.debug("plugin serving", extra={"network": "unix", "address": address, "tls": bool(cert_field),
                                        "pid": os.getpid()})
    _print_handshake(handshake_line(app_version, "unix", address, cert_field))
    await stop.wait()
    _log.debug("plugin stopping")
    await server.stop(STOP_GRACE_S)


def run(register: Register, env: Mapping[str, str] | None = None) -> int:
    """Serve the plugin until told to stop; the process exit code (1: could not start)."""
    env = os.environ if env is None else env
    try:
        check_cookie(env)
        log.setup()
        app_version = negotiate(env)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        socket_dir = make_socket_dir(env)
    except TransportError as exc:
        _fail(exc)
        return 1
    try:
        asyncio.run(_serve(register, env, app_version, socket_dir))
        return 0
    except TransportError as exc:
        _fail(exc)
        return 1
    except Exception as exc:  # a bug: one JSON log line with the traceback, never a raw traceback on stderr
        _log.error(f"plugin failed: {type(exc).__name__}: {exc}", exc_info=exc)
        return 1
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _fail(exc: Exception) -> None:
    if log.get_logger().handlers:
        _log.error(str(exc))
    else:  # before logging is set up (bad cookie): plain text, as go-plugin does
        try:
            sys.stderr.write(f"{exc}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
