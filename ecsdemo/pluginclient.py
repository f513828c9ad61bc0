"""Adapter: a go-plugin client that launches and talks to a Nomad plugin the way Nomad's client does.

`PluginProcess` starts the executable with Nomad's environment (the magic cookie, the port range, the
protocol versions), reads and checks the handshake line on its stdout (`Handshake`), then speaks gRPC
over the unix socket it names (TLS when the plugin serves AutoMTLS), and stops it as go-plugin does:
Shutdown, a 2 s wait, then SIGKILL. It knows only the plugin's gRPC contract (the generated stubs in
`driver.pb`), never the driver's internals. `ecsdemo driver check`, the tests' plugin host and the
benchmarks all launch plugins through it.
"""

from __future__ import annotations

import base64
import os
import selectors
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import grpc

from driver.pb import base_pb2, base_pb2_grpc, driver_pb2_grpc, go_plugin_pb2, go_plugin_pb2_grpc
from ecsdemo.cty import cty_msgpack

MAGIC_COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
NOMAD_ENV = {MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE, "PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "25000",
             "PLUGIN_PROTOCOL_VERSIONS": "2"}
API_VERSION = "v0.1.0"
KILL_WAIT_S = 2.0  # go-plugin's Client.Kill: Shutdown, wait this long, then SIGKILL


class PluginError(Exception):
    """The plugin did not behave as a Nomad plugin must (no handshake, bad handshake, early exit)."""


@dataclass(frozen=True)
class Handshake:
    line: str
    core_version: int
    app_version: int
    network: str
    address: str
    protocol: str
    server_cert: str = ""

    @classmethod
    def parse(cls, line: str, accepted_versions: set[int] = frozenset({2})) -> "Handshake":
        parts = line.strip().split("|")
        if len(parts) < 4:
            raise PluginError(f"unrecognized remote plugin message: {line.strip()!r}")
        try:
            core, app = int(parts[0]), int(parts[1])
        except ValueError:
            raise PluginError(f"unrecognized remote plugin message: {line.strip()!r}") from None
        if core != 1:
            raise PluginError(f"incompatible core API version with plugin: plugin {core}, host 1")
        if app not in accepted_versions:
            raise PluginError(f"incompatible API version with plugin: plugin {app}, host {sorted(accepted_versions)}")
        if parts[2] not in ("unix", "tcp"):
            raise PluginError(f"unknown address type {parts[2]!r}")
        protocol = parts[4] if len(parts) > 4 and parts[4] else "netrpc"
        if protocol != "grpc":
            raise PluginError(f"unsupported plugin protocol {protocol!r}: Nomad needs grpc")
        cert = parts[5] if len(parts) > 5 else ""
        return cls(line.strip(), core, app, parts[2], parts[3], protocol, cert)

    def server_cert_pem(self) -> bytes:
        """The plugin's AutoMTLS certificate (field 6: base64 without padding of its DER) as PEM."""
        der = base64.b64decode(self.server_cert + "=" * (-len(self.server_cert) % 4))
        body = base64.encodebytes(der).decode()
        return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n".encode()


class PluginProcess:
    """One plugin process, launched the way Nomad's go-plugin client does.

    `env` replaces os.environ as the base environment (Nomad passes its own whole environment);
    `extra_env` is appended after the go-plugin variables (use it to override them in tests).
    The plugin's stderr goes to `stderr_path`; stdout after the handshake is drained into `extra_stdout`.
    """

    def __init__(self, argv: list[str], stderr_path: Path, env: Mapping[str, str] | None = None,
                 extra_env: Mapping[str, str] | None = None, client_tls: tuple[bytes, bytes] | None = None,
                 accepted_versions: set[int] = frozenset({2})):
        self.argv = [str(a) for a in argv]
        self.stderr_path = Path(stderr_path)
        self.env = dict(os.environ if env is None else env)
        self.env.update(NOMAD_ENV)
        self.env.update(extra_env or {})
        self.client_tls = client_tls  # (cert_pem, key_pem): the host's AutoMTLS identity
        self.accepted_versions = set(accepted_versions)
        self.proc: subprocess.Popen | None = None
        self.handshake: Handshake | None = None
        self.handshake_s: float | None = None
        self.extra_stdout = b""
        self._channel = None
        self._drain: threading.Thread | None = None

    # --- process ---------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Handshake:
        """Launch and read the handshake line (go-plugin waits up to a minute)."""
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "ab") as err:
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=err, env=self.env)
            except OSError as exc:
                raise PluginError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        line = self._read_line(timeout)
        self.handshake_s = time.monotonic() - started
        if line is None:
            code = self.wait(2.0)  # EOF on stdout: the process is exiting, let it finish
            self.kill()
            why = f"exited with code {code}" if code is not None else f"printed nothing within {timeout:.0f}s"
            raise PluginError(f"plugin {why} before the handshake; its stderr: {self.stderr_tail() or '(empty)'}")
        try:
            self.handshake = Handshake.parse(line.decode(errors="replace"), self.accepted_versions)
        except PluginError:
            self.kill()
            raise
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self.handshake

    def _read_line(self, timeout: float) -> bytes | None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                buf += chunk
        line, _, rest = buf.partition(b"\n")
        self.extra_stdout += rest
        return line

    def _drain_stdout(self) -> None:
        assert self.proc and self.proc.stdout
        fd = self.proc.stdout.fileno()
        try:
            while chunk := os.read(fd, 4096):
                self.extra_stdout += chunk
        except OSError:
            pass

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout` seconds."""
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def shutdown(self, wait: float = KILL_WAIT_S) -> int:
        """go-plugin's Client.Kill: GRPCController/Shutdown, wait up to 2 s, then SIGKILL. The exit code."""
        if self.alive() and self.handshake is not None:
            try:
                go_plugin_pb2_grpc.GRPCControllerStub(self.channel).Shutdown(go_plugin_pb2.Empty(), timeout=wait)
            except Exception:  # noqa: BLE001 - the host ignores Shutdown errors too
                pass
        code = self.wait(wait)
        if code is None:
            self.kill()
            code = self.proc.returncode if self.proc else -9
        self.close_channel()
        return code

    def kill(self) -> None:
        """SIGKILL (the plugin gets no chance to clean up), then reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
        self.close_channel()

    def stderr_tail(self, lines: int = 5) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    # --- gRPC ------------------------------------------------------------------------------------
    @property
    def channel(self):
        if self._channel is None:
            if self.handshake is None:
                raise PluginError("plugin not started")
            target = f"unix:{self.handshake.address}" if self.handshake.network == "unix" else self.handshake.address
            options = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]
            if self.handshake.server_cert:
                if not self.client_tls:
                    raise PluginError("the plugin serves TLS but this host has no client certificate")
                creds = grpc.ssl_channel_credentials(root_certificates=self.handshake.server_cert_pem(),
                                                     private_key=self.client_tls[1],
                                                     certificate_chain=self.client_tls[0])
                options.append(("grpc.ssl_target_name_override", "localhost"))
                self._channel = grpc.secure_channel(target, creds, options=options)
            else:
                self._channel = grpc.insecure_channel(target, options=options)
        return self._channel

    def close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def base(self):
        return base_pb2_grpc.BasePluginStub(self.channel)

    @property
    def driver(self):
        return driver_pb2_grpc.DriverStub(self.channel)

    def config_schema(self, timeout: float = 10.0):
        return self.base.ConfigSchema(base_pb2.ConfigSchemaRequest(), timeout=timeout).spec

    def set_config(self, config: dict | None, agent: bool = True, timeout: float = 10.0):
        """SetConfig as Nomad sends it: `config` encoded against the plugin's own ConfigSchema.

        `agent=True` adds nomad_config (the driver manager's call); False is the loader's validation call.
        """
        return self.set_config_raw(cty_msgpack(self.config_schema(timeout), config), agent=agent, timeout=timeout)

    def set_config_raw(self, msgpack_config: bytes, agent: bool = True, api_version: str = API_VERSION,
                       timeout: float = 10.0):
        req = base_pb2.SetConfigRequest(msgpack_config=msgpack_config, plugin_api_version=api_version)
        if agent:
            req.nomad_config.driver.ClientMaxPort = 14512
            req.nomad_config.driver.ClientMinPort = 14000
        return self.base.SetConfig(req, timeout=timeout)
