"""Install and check the nomad-driver-ecs plugin the way a Nomad agent uses it.

This module is a small go-plugin *host*: `PluginProcess` launches a plugin executable exactly as Nomad's
client does (environment, handshake line on stdout, gRPC over the unix socket, Shutdown then SIGKILL),
and `cty_msgpack` encodes an HCL config body against the plugin's hclspec the way Nomad does (every
schema key present and sorted, nulls for missing ones, defaults applied, smallest integers). It speaks
only the plugin's gRPC contract (the generated stubs in `driver.pb`), never the driver's internals.

`install_launcher`, `plugin_stanza` and `check_plugin` are what `ecsdemo driver ...` and `ecsdemo up` call.
"""

from __future__ import annotations

import base64
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ecsdemo.config import PLUGIN_NAME
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import Reporter

MAGIC_COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE_VALUE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"
NOMAD_ENV = {MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE, "PLUGIN_MIN_PORT": "10000", "PLUGIN_MAX_PORT": "25000",
             "PLUGIN_PROTOCOL_VERSIONS": "2"}
API_VERSION = "v0.1.0"
KILL_WAIT_S = 2.0  # go-plugin's Client.Kill: Shutdown, wait this long, then SIGKILL


class PluginError(Exception):
    """The plugin did not behave as a Nomad plugin must (no handshake, bad handshake, early exit)."""


# --------------------------------------------------------------------------------------------------
# cty msgpack: what Nomad sends in SetConfig.msgpack_config and TaskConfig.msgpack_driver_config

class CtyError(ValueError):
    """The config body does not fit the schema (Nomad reports these before the plugin sees anything)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


_MISSING = object()


def _parse_type(text: str):
    """`list(map(string))` -> ("list", ("map", "string")); primitives stay strings."""
    text = text.strip()
    m = re.fullmatch(r"(list|set|map)\((.*)\)", text)
    if m:
        return (m.group(1), _parse_type(m.group(2)))
    if text in ("string", "number", "bool", "any"):
        return text
    raise CtyError("", f"unsupported type expression {text!r} in the schema")


def _number(value: Any, path: str):
    if isinstance(value, bool):
        raise CtyError(path, f"a number is required, got bool {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        except ValueError:
            raise CtyError(path, f"a number is required, got string {value!r}") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, (int, float)):
        return value
    raise CtyError(path, f"a number is required, got {type(value).__name__}")


def _convert(value: Any, typ, path: str) -> Any:
    """cty's conversion of a config value to the attribute's type (safe conversions only, as Nomad's)."""
    if value is None or typ == "any":
        return value
    if typ == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return json.dumps(_number(value, path))
        raise CtyError(path, f"a string is required, got {type(value).__name__}")
    if typ == "number":
        return _number(value, path)
    if typ == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise CtyError(path, f"a bool is required, got {type(value).__name__} {value!r}")
    kind, elem = typ
    if kind in ("list", "set"):
        if not isinstance(value, (list, tuple)):
            raise CtyError(path, f"a {kind} is required, got {type(value).__name__}")
        return [_convert(v, elem, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        raise CtyError(path, f"a map is required, got {type(value).__name__}")
    return {k: _convert(value[k], elem, f"{path}.{k}") for k in sorted(value)}


def _body_name(key: str, spec) -> str | None:
    """The config attribute/block name a child spec reads (its own `name`, else the implied object key)."""
    kind = spec.WhichOneof("block")
    if kind == "default":
        return _body_name(key, spec.default.primary)
    if kind in ("Attr", "block_value", "block_attrs", "block_list", "block_set", "block_map"):
        return getattr(spec, kind).name or key
    return None


def _block_body(value: Any, path: str) -> dict:
    if isinstance(value, list) and len(value) == 1:  # HCL-JSON allows a block as a one-element list
        value = value[0]
    if not isinstance(value, dict):
        raise CtyError(path, f"a block is required, got {type(value).__name__}")
    return value


def _eval(spec, body: dict, key: str, path: str) -> Any:
    kind = spec.WhichOneof("block")
    if kind == "object":
        return _eval_object(spec.object, body, path)
    if kind == "literal":
        try:
            return json.loads(spec.literal.value)
        except json.JSONDecodeError:
            raise CtyError(path, f"unsupported literal {spec.literal.value!r} in the schema") from None
    if kind == "default":
        primary = _eval(spec.default.primary, body, key, path)
        return primary if primary is not None else _eval(spec.default.default, body, key, path)
    if kind == "array":
        return [_eval(s, body, key, f"{path}[{i}]") for i, s in enumerate(spec.array.values)]
    inner = getattr(spec, kind)
    name = inner.name or key
    where = f"{path}.{name}" if path else name
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if getattr(inner, "required", False) or getattr(inner, "min_items", 0) > 0:
            raise CtyError(where, "missing required argument or block")
        return [] if kind in ("block_list", "block_set") else {} if kind == "block_map" else None
    if kind == "Attr":
        return _convert(value, _parse_type(inner.type), where)
    if kind == "block_value":
        return _eval(inner.nested, _block_body(value, where), "", where)
    if kind == "block_attrs":
        return _convert(_block_body(value, where), ("map", _parse_type(inner.type)), where)
    if kind in ("block_list", "block_set"):
        items = value if isinstance(value, list) else [value]
        if inner.max_items and len(items) > inner.max_items:
            raise CtyError(where, f"at most {inner.max_items} block(s) allowed, got {len(items)}")
        return [_eval(inner.nested, _block_body(v, where), "", f"{where}[{i}]") for i, v in enumerate(items)]
    raise CtyError(where, f"spec kind {kind!r} is not supported by this host")


def _eval_object(obj, body: dict, path: str) -> dict:
    if not isinstance(body, dict):
        raise CtyError(path, f"a block is required, got {type(body).__name__}")
    names = {_body_name(k, s) for k, s in obj.attributes.items()}
    for given in body:
        if given not in names:
            raise CtyError(f"{path}.{given}" if path else given,
                           "unsupported argument or block: not in the plugin's schema")
    return {k: _eval(obj.attributes[k], body, k, path) for k in sorted(obj.attributes)}


def cty_value(spec, body: dict | None) -> Any:
    """The cty value Nomad's hcldec produces for an HCL body (as a dict) under an hclspec `Spec`."""
    return _eval(spec, body or {}, "", "")


def cty_msgpack(spec, body: dict | None) -> bytes:
    """Encode `body` against `spec` exactly as Nomad does before SetConfig/StartTask (contract E.1)."""
    import msgpack

    return msgpack.packb(cty_value(spec, body), use_bin_type=True)


# --------------------------------------------------------------------------------------------------
# launching a plugin like Nomad's client

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
            from driver.pb import go_plugin_pb2, go_plugin_pb2_grpc

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
            import grpc

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
        from driver.pb import base_pb2_grpc

        return base_pb2_grpc.BasePluginStub(self.channel)

    @property
    def driver(self):
        from driver.pb import driver_pb2_grpc

        return driver_pb2_grpc.DriverStub(self.channel)

    def config_schema(self, timeout: float = 10.0):
        from driver.pb import base_pb2

        return self.base.ConfigSchema(base_pb2.ConfigSchemaRequest(), timeout=timeout).spec

    def set_config(self, config: dict | None, agent: bool = True, timeout: float = 10.0):
        """SetConfig as Nomad sends it: `config` encoded against the plugin's own ConfigSchema.

        `agent=True` adds nomad_config (the driver manager's call); False is the loader's validation call.
        """
        return self.set_config_raw(cty_msgpack(self.config_schema(timeout), config), agent=agent, timeout=timeout)

    def set_config_raw(self, msgpack_config: bytes, agent: bool = True, api_version: str = API_VERSION,
                       timeout: float = 10.0):
        from driver.pb import base_pb2

        req = base_pb2.SetConfigRequest(msgpack_config=msgpack_config, plugin_api_version=api_version)
        if agent:
            req.nomad_config.driver.ClientMaxPort = 14512
            req.nomad_config.driver.ClientMinPort = 14000
        return self.base.SetConfig(req, timeout=timeout)


# --------------------------------------------------------------------------------------------------
# install

def launcher_text(python: str | None = None) -> str:
    python = python or sys.executable
    # -P: the agent's working directory must not shadow the installed `driver` package.
    return ("#!/bin/sh\n"
            f"# {PLUGIN_NAME}: the ECS task driver plugin for Nomad, written by `ecsdemo driver install`.\n"
            "# It runs the plugin with the Python environment ecsdemo is installed in.\n"
            f"exec {shlex.quote(python)} -P -m driver.main \"$@\"\n")


def install_launcher(plugin_dir: Path) -> Path:
    """Write an executable `nomad-driver-ecs` into `plugin_dir` (idempotent; never overwrites another file)."""
    plugin_dir = Path(plugin_dir)
    target = plugin_dir / PLUGIN_NAME
    text = launcher_text()
    if target.exists() or target.is_symlink():
        try:
            same = target.is_file() and target.read_text() == text
        except (OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise EcsdemoError(f"{target} exists and is not this ecsdemo's launcher; not overwriting it",
                               hint="remove it, or choose another directory with --plugin-dir")
        target.chmod(0o755)
        return target
    try:
        plugin_dir.mkdir(parents=True, exist_ok=True)
        tmp = plugin_dir / f".{PLUGIN_NAME}.tmp{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    except OSError as exc:
        raise EcsdemoError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def _hcl(value: Any) -> str:
    return json.dumps(value)  # JSON strings, numbers and bools are valid HCL literals


def plugin_stanza(cluster: str, region: str, endpoint: str | None = None, poll_interval: str | None = None) -> str:
    """The agent's `plugin "nomad-driver-ecs" { config { ... } }` block for these settings."""
    lines = [f'plugin "{PLUGIN_NAME}" {{', "  config {", "    enabled = true",
             f"    cluster = {_hcl(cluster)}", f"    region  = {_hcl(region)}"]
    if endpoint:
        lines.append(f"    endpoint = {_hcl(endpoint)}")
    if poll_interval:
        lines.append(f"    poll_interval = {_hcl(poll_interval)}")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# check

@dataclass
class CheckStep:
    name: str
    ok: bool
    detail: str


@dataclass
class CheckReport:
    launcher: str
    steps: list[CheckStep] = field(default_factory=list)
    health: str = ""
    health_description: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def to_json(self) -> dict:
        return {"launcher": self.launcher, "ok": self.ok, "health": self.health,
                "health_description": self.health_description,
                "steps": [{"name": s.name, "ok": s.ok, "detail": s.detail} for s in self.steps]}


class _Failed(Exception):
    pass


def _run_step(report: CheckReport, reporter: Reporter, title: str, fn: Callable[[], str]) -> bool:
    try:
        with reporter.step(title):
            detail = fn()
    except _Failed as exc:
        report.steps.append(CheckStep(title, False, str(exc)))
        reporter.warn(f"{title}: {exc}")
        return False
    except PluginError as exc:
        report.steps.append(CheckStep(title, False, str(exc)))
        reporter.warn(f"{title}: {exc}")
        return False
    except Exception as exc:  # grpc.RpcError and friends: report, don't crash the CLI
        details = exc.details() if hasattr(exc, "details") else str(exc)
        report.steps.append(CheckStep(title, False, f"{type(exc).__name__}: {details}"))
        reporter.warn(f"{title}: {details}")
        return False
    report.steps.append(CheckStep(title, True, detail))
    return True


def check_plugin(launcher: Path, config: dict, reporter: Reporter, env: Mapping[str, str] | None = None,
                 log_path: Path | None = None, fingerprint_timeout: float = 30.0) -> CheckReport:
    """Launch the installed plugin as Nomad would and exercise it: handshake, info, schemas, config, health."""
    launcher = Path(launcher)
    report = CheckReport(launcher=str(launcher))
    if not launcher.is_file() or not os.access(launcher, os.X_OK):
        report.steps.append(CheckStep("find the plugin", False, f"{launcher} is not an executable file"))
        return report
    from driver.pb import base_pb2, driver_pb2

    if log_path is None:
        import tempfile

        log_path = Path(tempfile.mkdtemp(prefix="ecsdemo-check-")) / "plugin.log"
    proc = PluginProcess([str(launcher)], log_path, env=env)
    try:
        def handshake() -> str:
            hs = proc.start(timeout=60.0)
            return f"{hs.line} ({proc.handshake_s:.2f}s)"

        def info() -> str:
            r = proc.base.PluginInfo(base_pb2.PluginInfoRequest(), timeout=10)
            if r.type != base_pb2.DRIVER or API_VERSION not in r.plugin_api_versions:
                raise _Failed(f"not a Nomad driver speaking {API_VERSION}: type={r.type}, "
                              f"api versions={list(r.plugin_api_versions)}")
            return f"driver {r.name!r} version {r.plugin_version}, API {', '.join(r.plugin_api_versions)}"

        def schemas() -> str:
            cfg = proc.config_schema()
            task = proc.driver.TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest(), timeout=10).spec
            return (f"plugin config keys: {', '.join(sorted(cfg.object.attributes))}; "
                    f"task config keys: {', '.join(sorted(task.object.attributes))}")

        def set_config() -> str:
            try:
                proc.set_config(config, agent=False)   # the loader's validation call ...
                proc.set_config(config, agent=True)    # ... and the driver manager's
            except CtyError as exc:
                raise _Failed(f"the config does not fit the plugin's schema: {exc}") from None
            return "accepted: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items()))

        def capabilities() -> str:
            c = proc.driver.Capabilities(driver_pb2.CapabilitiesRequest(), timeout=10).capabilities
            if not c.remote_tasks:
                raise _Failed("remote_tasks is false: Nomad would not hand ECS tasks over on drain")
            return "remote tasks, no signals, no exec"

        def fingerprint() -> str:
            stream = proc.driver.Fingerprint(driver_pb2.FingerprintRequest(), timeout=fingerprint_timeout)
            try:
                first = next(stream)
            finally:
                stream.cancel()
            report.health = driver_pb2.FingerprintResponse.HealthState.Name(first.health).lower()
            report.health_description = first.health_description
            if first.health != driver_pb2.FingerprintResponse.HEALTHY:
                raise _Failed(f"{report.health}: {first.health_description}")
            attrs = {k: v.WhichOneof("value") and getattr(v, v.WhichOneof("value")) for k, v in first.attributes.items()}
            return "healthy: " + ", ".join(f"{k}={attrs[k]}" for k in sorted(attrs))

        def shutdown() -> str:
            started = time.monotonic()
            code = proc.shutdown()
            took = time.monotonic() - started
            if code != 0 or took > KILL_WAIT_S:
                raise _Failed(f"did not exit cleanly on Shutdown (code {code}, {took:.1f}s)")
            return f"exited in {took:.2f}s"

        for title, fn in (("launch and handshake", handshake), ("plugin info", info), ("schemas", schemas),
                          ("SetConfig", set_config), ("capabilities", capabilities),
                          ("fingerprint", fingerprint), ("shutdown", shutdown)):
            if not _run_step(report, reporter, title, fn) and title in ("launch and handshake", "plugin info",
                                                                       "SetConfig"):
                break
    finally:
        if proc.alive():
            proc.kill()
    return report
