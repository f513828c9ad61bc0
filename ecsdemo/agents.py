"""The Nomad agent processes ecsdemo runs: one server and N clients, in the background.

Each agent runs `nomad agent -config=<rendered file>` in its own process group (its own session), with its
output in `<state>/logs/<name>.log`. What was started is recorded in `<state>/agents.json` (name, role, pid,
start time, command line, log, http address, config and data dir) *before* anything waits on it, so an
interrupted `up` leaves a record `teardown` can act on.

Stopping is SIGTERM, then SIGKILL after a grace period, and only ever for a process whose pid, start time
and command line all match the record: a pid that was reused by another program is never signalled. The
environment given to agents carries what the plugin needs (region; the endpoint and dummy keys in local
mode). It is never written to the state directory or the logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import hcl2
import psutil

from ecsdemo import aws, binaries, procs, render
from ecsdemo.config import PLUGIN_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.local import LOCAL_CREDENTIALS

AGENTS_FILE = "agents.json"
SERVER = "nomad-server"
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


@dataclass
class AgentRecord:
    name: str
    role: str            # "server" or "client"
    pid: int
    create_time: float   # psutil start time of the process: with the command line, its identity
    cmdline: list[str]   # what ecsdemo ran
    log: str
    http_addr: str
    config: str
    data_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "AgentRecord":
        try:
            return cls(**data)
        except TypeError as exc:
            raise EcsdemoError(f"{AGENTS_FILE} has an invalid entry: {exc}",
                               hint="if no agents are running, delete it (or run `ecsdemo teardown`)") from exc


@dataclass
class AgentSpec:
    name: str
    role: str
    config: Path
    http_addr: str
    data_dir: str | None
    has_plugin_dir: bool


# --- the binary and the environment -----------------------------------------------------------------
def nomad_bin() -> str:
    binary = binaries.nomad_binary()
    if binary is None:
        raise EcsdemoError(f"nomad is not installed: {binaries.locate('nomad').why_not()}",
                           hint="run `ecsdemo install nomad` (or `ecsdemo up`, which installs it), or set "
                                "ECSDEMO_NOMAD_BIN; `ecsdemo doctor` checks it")
    return binary


def agent_env(cfg: DemoConfig, endpoint: str | None = None) -> dict[str, str]:
    """The environment for agents (and so for the plugin processes they launch).

    Local mode: the user's AWS credentials and profile are replaced by the endpoint's dummy keys, and the
    endpoint is set through the standard AWS_ENDPOINT_URL variables. Real mode: the user's environment
    passes through, with the demo's region as the default region.
    """
    env = dict(os.environ)
    if cfg.local:
        for var in CREDENTIAL_VARS:
            env.pop(var, None)
        env.update(LOCAL_CREDENTIALS)
        url = endpoint or aws.endpoint_url(cfg)
        env["AWS_ENDPOINT_URL"] = url
        env["AWS_ENDPOINT_URL_ECS"] = url
        env["AWS_REGION"] = cfg.region
        env["AWS_DEFAULT_REGION"] = cfg.region
    else:
        env.setdefault("AWS_REGION", cfg.region)
        env.setdefault("AWS_DEFAULT_REGION", cfg.region)
    return env


# --- what to run ------------------------------------------------------------------------------------
def agent_names(cfg: DemoConfig) -> list[str]:
    return [SERVER, *cfg.client_names()]


def _read_hcl(path: Path) -> dict:
    try:
        with open(path) as fh:
            return hcl2.load(fh, serialization_options=hcl2.SerializationOptions(
                strip_string_quotes=True, explicit_blocks=False, with_comments=False))
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        raise EcsdemoError(f"cannot read the rendered agent config {path}: {exc}",
                           hint="re-render it with `ecsdemo render` (or `ecsdemo up`)") from exc


def agent_spec(cfg: DemoConfig, name: str) -> AgentSpec:
    """Where the agent `name`'s rendered config is, and what it says (http address, data dir)."""
    if name == SERVER:
        role, config, port = "server", render.server_config_path(cfg), cfg.server_http_port
    elif name in cfg.client_names():
        index = cfg.client_names().index(name) + 1
        role, config, port = "client", render.client_config_path(cfg, index), cfg.client_http_port(index)
    else:
        raise EcsdemoError(f"unknown agent {name!r}", hint=f"one of: {', '.join(agent_names(cfg))}")
    if not config.is_file():
        raise EcsdemoError(f"the rendered config for {name} is missing: {config}",
                           hint="run `ecsdemo up` (or `ecsdemo render`) first")
    doc = _read_hcl(config)
    ports = (doc.get("ports") or [{}])[0]
    port = int(ports.get("http", port))
    bind = doc.get("bind_addr") or "127.0.0.1"
    host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    return AgentSpec(name=name, role=role, config=config, http_addr=f"http://{host}:{port}",
                     data_dir=doc.get("data_dir"), has_plugin_dir=bool(doc.get("plugin_dir")))


# --- the record -------------------------------------------------------------------------------------
def load(cfg: DemoConfig) -> dict[str, AgentRecord]:
    data = cfg.state.read_json(AGENTS_FILE, default={})
    if not isinstance(data, dict):
        raise EcsdemoError(f"state file {cfg.state.path(AGENTS_FILE)} is corrupt (not a JSON object)",
                           hint="if no agents are running, delete it")
    return {name: AgentRecord.from_json(rec) for name, rec in data.items()}


def _save(cfg: DemoConfig, records: dict[str, AgentRecord]) -> None:
    if records:
        cfg.state.write_json(AGENTS_FILE, {n: asdict(r) for n, r in records.items()})
    else:
        cfg.state.remove(AGENTS_FILE)


def _record(cfg: DemoConfig, rec: AgentRecord) -> None:
    records = load(cfg)
    records[rec.name] = rec
    _save(cfg, records)


def forget(cfg: DemoConfig, name: str) -> None:
    records = load(cfg)
    if records.pop(name, None) is not None:
        _save(cfg, records)


# --- identity and liveness --------------------------------------------------------------------------
def _process(rec: AgentRecord) -> psutil.Process | None:
    """The live process the record describes, or None (gone, a zombie, or a different program now)."""
    return procs.find(rec.pid, rec.create_time, rec.cmdline)


def status(rec: AgentRecord) -> str:
    """"running" when the recorded process is alive and is the one ecsdemo started, else "stopped"."""
    return "running" if _process(rec) is not None else "stopped"


def is_running(cfg: DemoConfig, name: str) -> bool:
    rec = load(cfg).get(name)
    return rec is not None and status(rec) == "running"


def agent_for_node(cfg: DemoConfig, node: dict) -> str | None:
    """The client agent that runs Nomad node `node` (a node or node stub dict): its name is the agent's."""
    name = node.get("Name") or node.get("NodeName")
    return name if name in cfg.client_names() else None


def log_tail(rec: AgentRecord | None, lines: int = 15) -> str:
    if rec is None:
        return ""
    try:
        text = Path(rec.log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- start ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a process is started and recorded, so Ctrl-C cannot split the two."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _unblock_signals() -> None:
    """In the child, before exec: the signal mask is inherited, so undo `_no_interrupt`'s block."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def start_agent(cfg: DemoConfig, name: str, env: dict[str, str] | None = None) -> AgentRecord:
    """Start agent `name` in the background (or return the record of the running one: re-runs are safe)."""
    existing = load(cfg).get(name)
    if existing is not None and status(existing) == "running":
        return existing
    spec = agent_spec(cfg, name)
    argv = [nomad_bin(), "agent", f"-config={spec.config}"]
    if spec.role == "client" and not spec.has_plugin_dir:
        argv.append(f"-plugin-dir={cfg.plugin_dir}")
    env = env if env is not None else agent_env(cfg)
    state = cfg.state.ensure()
    log_path = state.logs / f"{name}.log"
    with open(log_path, "ab") as log, _no_interrupt():
        started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        log.write(f"--- ecsdemo: starting {name}: {' '.join(argv)} at {started}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=state.root, start_new_session=True, preexec_fn=_unblock_signals)
        except OSError as exc:
            raise EcsdemoError(f"cannot start {name}: {exc.strerror or exc} ({argv[0]})") from exc
        create_time = procs.track(proc)   # 0.0 when it died at once: the caller sees it stopped
        rec = AgentRecord(name=name, role=spec.role, pid=proc.pid, create_time=create_time, cmdline=argv,
                          log=str(log_path), http_addr=spec.http_addr, config=str(spec.config),
                          data_dir=spec.data_dir, extra=_carry_over(existing))
        _record(cfg, rec)
    return rec


def _carry_over(previous: AgentRecord | None) -> dict:
    """Remember the process groups of earlier runs of this agent (e.g. killed for the lost-node scenario):
    plugins they launched may still be running, and `stop_agent` cleans them up too."""
    if previous is None or not previous.create_time:
        return {}
    groups = list(previous.extra.get("earlier_groups", []))
    groups.append({"pgid": previous.pid, "create_time": previous.create_time})
    return {"earlier_groups": groups[-10:]}


def start_all(cfg: DemoConfig, env: dict[str, str] | None = None) -> list[AgentRecord]:
    env = env if env is not None else agent_env(cfg)
    return [start_agent(cfg, name, env) for name in agent_names(cfg)]


# --- stop -------------------------------------------------------------------------------------------
def _group_leftovers(rec: AgentRecord, only_plugins: bool) -> list[psutil.Process]:
    """Processes still in the agent's process group that started after it (the plugins it launched).

    Called right after the agent itself was seen alive, the group id cannot have been reused (members keep
    it alive). When the agent was already gone, `only_plugins` restricts this to the driver plugin.
    """
    out = []
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            older = proc.info["create_time"] + procs.START_TIME_TOLERANCE < rec.create_time
            if proc.pid in (os.getpid(), rec.pid) or older:
                continue
            if os.getpgid(proc.pid) != rec.pid or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if only_plugins and not any(PLUGIN_NAME in part or "driver.main" in part for part in proc.cmdline()):
                continue
            out.append(proc)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return out


def _stop_leftovers(rec: AgentRecord, grace: float, only_plugins: bool) -> None:
    left = _group_leftovers(rec, only_plugins)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2)


def stop_agent(cfg: DemoConfig, name: str, grace: float = 10.0) -> str:
    """Stop agent `name`: SIGTERM, then SIGKILL after `grace` seconds. Forgets its record.

    Returns what happened: "stopped", "killed" (needed SIGKILL), "not running", "not recorded", or
    "pid reused" (the recorded pid belongs to another program now: left alone).
    """
    rec = load(cfg).get(name)
    if rec is None:
        return "not recorded"
    outcome = _stop(rec, grace)
    for group in rec.extra.get("earlier_groups", []):
        earlier = AgentRecord(**{**asdict(rec), "pid": int(group["pgid"]), "create_time": float(group["create_time"])})
        _stop_leftovers(earlier, min(grace, 2.0), only_plugins=True)
    forget(cfg, name)
    return outcome


def _stop(rec: AgentRecord, grace: float) -> str:
    outcome = procs.terminate(rec.pid, rec.create_time, rec.cmdline, grace)
    if outcome in ("stopped", "killed"):
        _stop_leftovers(rec, min(grace, 2.0), only_plugins=False)
    elif rec.create_time:
        _stop_leftovers(rec, min(grace, 2.0), only_plugins=True)
    return outcome


def stop_all(cfg: DemoConfig, grace: float = 10.0) -> dict[str, str]:
    """Stop every recorded agent, clients first, then the server. Returns name -> outcome."""
    records = load(cfg)
    order = sorted(records, key=lambda n: n == SERVER)
    return {name: stop_agent(cfg, name, grace) for name in order}


def kill_agent(cfg: DemoConfig, name: str, sig: int = signal.SIGKILL) -> AgentRecord:
    """Send `sig` to agent `name` only (not its plugins), e.g. SIGKILL to make a node lost.

    The record stays, so `start_agent` can bring the same node back (same config and data dir).
    """
    rec = load(cfg).get(name)
    proc = _process(rec) if rec is not None else None
    if proc is None:
        raise EcsdemoError(f"agent {name} is not running (or was not started by ecsdemo)",
                           hint="`ecsdemo status` shows the agents; `ecsdemo up` starts them")
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)
    if sig in (signal.SIGKILL, signal.SIGTERM):
        procs.wait_gone(rec.pid, rec.create_time, rec.cmdline, 10.0)
    return rec


def remove_data_dirs(cfg: DemoConfig, records: dict[str, AgentRecord] | None = None) -> list[Path]:
    """Delete agent data directories that lie inside the state directory (never anything outside it)."""
    dirs: set[Path] = set()
    for rec in (records or {}).values():
        if rec.data_dir:
            dirs.add(Path(rec.data_dir))
    for name in agent_names(cfg):
        with contextlib.suppress(EcsdemoError):
            spec = agent_spec(cfg, name)
            if spec.data_dir:
                dirs.add(Path(spec.data_dir))
    root = cfg.state.root.resolve()
    removed = []
    for d in sorted(dirs):
        d = d.resolve()
        if d != root and root in d.parents and d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
            parent = d.parent
            while parent != root and root in parent.parents:   # e.g. <state>/nomad once empty
                with contextlib.suppress(OSError):
                    parent.rmdir()
                parent = parent.parent
    return removed
