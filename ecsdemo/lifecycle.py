"""Workflows: `up` (everything from nothing to a ready cluster), `run` (the demo job), `teardown`.

Plain functions: they take a `DemoConfig` and a `Reporter`, return results, and raise `EcsdemoError`
for anything the user can act on. No printing, no Typer. Every step is safe to repeat, and what is
started is recorded before anything waits on it, so `teardown` can clean up after an interrupted `up`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ecsdemo import agents, aws, doctor
from ecsdemo.status import node_summary
from ecsdemo.config import GROUP_NAME, JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.progress import Reporter
from ecsdemo.state import StateDir


@dataclass
class Timing:
    """How long to wait and how often to look. Tests shrink these."""

    ready: float = 120.0      # agents: leader, clients, ecs driver healthy (fingerprints batch up to ~50 s)
    run: float = 180.0        # the job: placed, running, ECS task RUNNING
    stop: float = 120.0       # teardown: job's ECS tasks STOPPED
    poll: float = 1.0         # between non-blocking polls
    block: float = 10.0       # longest Nomad blocking query
    grace: float = 10.0       # SIGTERM -> SIGKILL for agents


# --- configuration --------------------------------------------------------------------------------
def resolve_config(state_dir: Path | str | None, *, local: bool | None = None, region: str | None = None,
                   clients: int | None = None, tf_plugin_dir: Path | None = None) -> DemoConfig:
    """The demo's config: the one `up` saved in the state directory, with the given flags applied; a new
    one from the flags when none was saved. Switching mode or region under live infrastructure is refused."""
    state = StateDir(state_dir)
    saved = DemoConfig.load(state)
    if saved is None:
        kwargs: dict[str, Any] = {"state_dir": state.root, "local": bool(local)}
        if region is not None:
            kwargs["region"] = region
        if clients is not None:
            kwargs["clients"] = clients
        if tf_plugin_dir is not None:
            kwargs["tf_plugin_dir"] = tf_plugin_dir
        return DemoConfig(**kwargs)
    cfg = saved
    cfg.state_dir = state.root
    live = _has_live_parts(cfg)
    if local is not None and local != cfg.local:
        if live:
            raise EcsdemoError(f"the demo in {state.root} runs {'locally' if cfg.local else 'on AWS'}; "
                               f"cannot switch to {'--local' if local else '--aws'} under it",
                               hint="run `ecsdemo teardown` first, or use another --state-dir")
        cfg.local = local
    if region is not None and region != cfg.region:
        if live:
            raise EcsdemoError(f"the demo in {state.root} is in region {cfg.region}, not {region}",
                               hint="run `ecsdemo teardown` first, or use another --state-dir")
        cfg.region = region
    if clients is not None and clients != cfg.clients:
        running = [n for n in agents.load(cfg) if agents.is_running(cfg, n)]
        if running:
            raise EcsdemoError(f"the demo runs {cfg.clients} client(s); stop it before changing --clients",
                               hint="run `ecsdemo teardown --keep-infra`, then `ecsdemo up --clients N`")
        cfg.clients = clients
    if tf_plugin_dir is not None:
        cfg.tf_plugin_dir = Path(tf_plugin_dir)
    cfg.validate()
    return cfg


def load_config(state_dir: Path | str | None) -> DemoConfig:
    """The config `up` saved; a clear error when there is none."""
    state = StateDir(state_dir)
    cfg = DemoConfig.load(state)
    if cfg is None:
        raise EcsdemoError(f"no demo found in {state.root}", hint="run `ecsdemo up --local` (or `ecsdemo up`) first")
    cfg.state_dir = state.root
    return cfg


def _has_live_parts(cfg: DemoConfig) -> bool:
    from ecsdemo import infra

    return (any(agents.status(r) == "running" for r in agents.load(cfg).values())
            or infra.outputs(cfg) is not None
            or cfg.state.read_json("local.json") is not None)


# --- Nomad access ---------------------------------------------------------------------------------
def nomad_client(address: str, timeout: float = 10.0):
    from ecsdemo.nomad import NomadClient

    return NomadClient(address, timeout=timeout)


def _nomad_errors() -> tuple[type[BaseException], ...]:
    from ecsdemo.nomad import NomadAPIError, NomadUnavailable

    return (NomadUnavailable, NomadAPIError)


# --- up -------------------------------------------------------------------------------------------
@dataclass
class UpResult:
    ui_url: str
    nodes: list[dict]
    agents: list[dict]
    endpoint: str | None
    cluster: str
    job_file: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()


@dataclass
class BinaryPolicy:
    """How `up` gets nomad and terraform when none is usable (see ecsdemo.binaries)."""

    install: bool = True                  # False: --no-install
    releases_url: str | None = None       # None: $ECSDEMO_RELEASES_URL, else releases.hashicorp.com
    releases_key: str | Path | None = None
    on_bytes: Callable[[str, int, int | None], None] | None = None   # download progress


def ensure_binaries(reporter: Reporter, policy: BinaryPolicy | None = None) -> dict[str, str | None]:
    """Find nomad and terraform (env, PATH, ecsdemo cache); install the missing ones unless told not to.
    Returns {product: path or None}; what is still missing is then named by the prerequisite checks."""
    from ecsdemo import binaries

    policy = policy or BinaryPolicy()
    return {product: binaries.ensure(product, reporter, install=policy.install, releases_url=policy.releases_url,
                                     releases_key=policy.releases_key, on_bytes=policy.on_bytes).path
            for product in ("nomad", "terraform")}


def up(cfg: DemoConfig, reporter: Reporter, timing: Timing | None = None,
       binaries: BinaryPolicy | None = None) -> UpResult:
    """binaries -> doctor -> (local endpoint) -> Terraform -> render -> plugin -> agents -> wait until ready."""
    from ecsdemo import infra

    policy = binaries or BinaryPolicy()
    ensure_binaries(reporter, policy)
    warnings = check_prerequisites(cfg, reporter)
    cfg.state.ensure()
    cfg.save()   # first: whatever happens next, `teardown` knows which demo this is
    endpoint = None
    if cfg.local:
        from ecsdemo import local

        endpoint = local.ensure_local_endpoint(cfg.state, reporter)
    outputs = infra.apply(cfg, reporter)
    prepare_nomad_files(cfg, outputs, endpoint, reporter)
    result = start_cluster(cfg, reporter, endpoint, timing)
    result.cluster = outputs.cluster_name
    result.warnings = warnings
    return result


def check_prerequisites(cfg: DemoConfig, reporter: Reporter, auto_install: bool = False) -> list[str]:
    """Run doctor's checks; raise on a blocking failure, return (and report) the warnings. (A missing
    binary blocks here: `up` has run `ensure_binaries` first.)"""
    with reporter.step("Checking prerequisites"):
        checks = doctor.run_checks(cfg, auto_install=auto_install)
        blocking = doctor.blocking_failures(checks)
        if blocking:
            raise EcsdemoError("prerequisites missing: " + "; ".join(f"{c.name}: {c.detail}" for c in blocking),
                               hint=(blocking[0].hint or "fix the above") + " (`ecsdemo doctor` lists every check)")
    warnings = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
    for w in warnings:
        reporter.warn(w)
    return warnings


def prepare_nomad_files(cfg: DemoConfig, outputs: Any, endpoint: str | None, reporter: Reporter) -> list[Path]:
    """Render the agent configs and the job, and install the plugin launcher."""
    from ecsdemo import driverctl, render

    with reporter.step("Rendering the Nomad configs and job"):
        paths = render.render_all(cfg, outputs, endpoint)
        reporter.info(f"wrote {len(paths)} files in {cfg.render_dir}")
    with reporter.step("Installing the nomad-driver-ecs plugin"):
        launcher = driverctl.install_launcher(cfg.plugin_dir)
        reporter.info(f"plugin launcher {launcher}")
    return paths


def start_cluster(cfg: DemoConfig, reporter: Reporter, endpoint: str | None = None,
                  timing: Timing | None = None) -> UpResult:
    """Start (or reuse) the server and the clients, then wait for a leader, every client, and a healthy
    ecs driver on every node."""
    timing = timing or Timing()
    env = agents.agent_env(cfg, endpoint)
    with reporter.step("Starting the Nomad server"):
        server = _start(cfg, agents.SERVER, env, reporter)
        _wait_leader(cfg, server, timing)
    client_recs = []
    with reporter.step(f"Starting {cfg.clients} Nomad client(s)"):
        for name in cfg.client_names():
            client_recs.append(_start(cfg, name, env, reporter))
        for rec in client_recs:
            _wait_client(cfg, rec, timing)
    with reporter.step("Waiting for every client to be ready with a healthy ecs driver"):
        nodes = _wait_nodes(cfg, [server, *client_recs], timing)
    return UpResult(ui_url=f"{server.http_addr}/ui", nodes=nodes,
                    agents=[{"name": r.name, "pid": r.pid, "http": r.http_addr, "log": r.log}
                            for r in [server, *client_recs]],
                    endpoint=endpoint, cluster=aws.cluster_name(cfg), job_file=str(job_file(cfg)))


def job_file(cfg: DemoConfig) -> Path:
    from ecsdemo import render

    return render.job_path(cfg)


def _start(cfg: DemoConfig, name: str, env: dict, reporter: Reporter) -> agents.AgentRecord:
    before = agents.load(cfg).get(name)
    rec = agents.start_agent(cfg, name, env)
    if before is not None and before.pid == rec.pid:
        reporter.info(f"{name} already running (pid {rec.pid})")
    else:
        reporter.info(f"{name} started (pid {rec.pid}, log {rec.log})")
    return rec


def _alive_or_raise(cfg: DemoConfig, recs: list[agents.AgentRecord]) -> None:
    for rec in recs:
        if agents.status(rec) != "running":
            tail = agents.log_tail(rec)
            raise EcsdemoError(f"the Nomad agent {rec.name} exited" + (f"; its log ends with:\n{tail}" if tail else ""),
                               hint=f"full log: {rec.log}; `ecsdemo teardown` cleans up")


def _poll(what: str, timeout: float, interval: float, probe: Callable[[], Any],
          recs: list[agents.AgentRecord], cfg: DemoConfig) -> Any:
    """Call `probe` until it returns something truthy; (last reason) when it returns a string starting with '!'."""
    deadline = time.monotonic() + timeout
    reason = "no answer yet"
    errors = _nomad_errors()
    while True:
        _alive_or_raise(cfg, recs)
        try:
            result = probe()
        except errors as exc:
            result, reason = None, str(exc)
        if isinstance(result, str) and result.startswith("!"):
            reason, result = result[1:], None
        if result:
            return result
        if time.monotonic() >= deadline:
            raise EcsdemoError(f"timed out after {timeout:.0f}s waiting for {what}: {reason}",
                               hint=f"agent logs are in {cfg.state.logs}; `ecsdemo teardown` cleans up")
        time.sleep(interval)


def _wait_leader(cfg: DemoConfig, server: agents.AgentRecord, timing: Timing) -> None:
    api = nomad_client(server.http_addr, timeout=timing.block)

    def probe():
        return api.leader() or "!no cluster leader yet"

    _poll("the Nomad server to elect a leader", timing.ready, timing.poll, probe, [server], cfg)


def _wait_client(cfg: DemoConfig, rec: agents.AgentRecord, timing: Timing) -> None:
    from ecsdemo.nomad import NomadClient

    def probe():
        return NomadClient.client_node_id(rec.http_addr, timeout=timing.block) or f"!{rec.name} has no node yet"

    _poll(f"{rec.name} to join the server", timing.ready, timing.poll, probe, [rec], cfg)


def _wait_nodes(cfg: DemoConfig, recs: list[agents.AgentRecord], timing: Timing) -> list[dict]:
    api = nomad_client(recs[0].http_addr, timeout=timing.block)
    wanted = cfg.client_names()

    def probe():
        nodes = {n.get("Name"): n for n in api.nodes()}
        problems = []
        for name in wanted:
            node = nodes.get(name)
            if node is None:
                problems.append(f"{name} not registered")
                continue
            if node.get("Status") != "ready":
                problems.append(f"{name} is {node.get('Status')}")
            detected, healthy, description = api.node_ecs_driver(node)
            if not (detected and healthy):
                problems.append(f"{name} ecs driver: {description or 'not detected yet'}")
        if problems:
            return "!" + "; ".join(problems)
        return [node_summary(nodes[n]) for n in wanted]

    return _poll("the clients and their ecs driver", timing.ready, timing.poll, probe, recs, cfg)


# --- run ------------------------------------------------------------------------------------------
@dataclass
class RunResult:
    alloc_id: str
    node: str
    task_arn: str
    eval_id: str

    def to_json(self) -> dict:
        return self.__dict__.copy()


def run(cfg: DemoConfig, reporter: Reporter, timing: Timing | None = None, ecs_client: Any = None) -> RunResult:
    """Submit the rendered job (parse, then register), wait for its allocation to run and its ECS task to
    be RUNNING."""
    timing = timing or Timing()
    path = job_file(cfg)
    if not path.is_file():
        raise EcsdemoError(f"the rendered job {path} is missing", hint="run `ecsdemo up` first")
    api = nomad_client(cfg.server_address, timeout=timing.block)
    errors = _nomad_errors()
    try:
        with reporter.step(f"Submitting {path.name}"):
            job = api.parse_job(path.read_text())
            resp = api.register_job(job)
            eval_id = resp.get("EvalID") or ""
            reporter.info(f"job {JOB_ID} registered (evaluation {eval_id[:8]})")
        with reporter.step("Waiting for Nomad to place the allocation"):
            _check_placement(api, eval_id, timing)
        with reporter.step("Waiting for the allocation to run its ECS task"):
            alloc, arn = _wait_running_alloc(api, timing)
    except errors as exc:
        raise EcsdemoError(f"submitting the job failed: {exc.message}",
                           hint=exc.hint or "is the demo up? `ecsdemo status` shows the agents") from exc
    with reporter.step("Waiting for the ECS task to be RUNNING"):
        _wait_ecs_running(cfg, arn, timing, ecs_client)
    return RunResult(alloc_id=alloc["ID"], node=alloc.get("NodeName", ""), task_arn=arn, eval_id=eval_id)


def placement_failure(evaluation: dict) -> str | None:
    """Why the scheduler could not place the demo group, from an evaluation's FailedTGAllocs; None if placed."""
    failed = (evaluation.get("FailedTGAllocs") or {}).get(GROUP_NAME)
    if not failed:
        return None
    parts = []
    constraint = failed.get("ConstraintFiltered") or {}
    parts += [f"{reason} on {count} node(s)" for reason, count in constraint.items()]
    exhausted = failed.get("DimensionExhausted") or {}
    parts += [f"{dim} exhausted on {count} node(s)" for dim, count in exhausted.items()]
    evaluated = failed.get("NodesEvaluated", 0)
    if not evaluated:
        parts.append("no ready and eligible node to evaluate")
    return f"{', '.join(parts) or 'unknown reason'} ({evaluated} node(s) evaluated)"


def _check_placement(api: Any, eval_id: str, timing: Timing) -> None:
    if not eval_id:
        return
    deadline = time.monotonic() + timing.run
    while True:
        ev = api.evaluation(eval_id) or {}
        status = ev.get("Status")
        if status in ("complete", "failed", "canceled"):
            reason = placement_failure(ev)
            if reason:
                raise EcsdemoError(f"Nomad could not place the job: {reason}",
                                   hint="`ecsdemo status` shows each node's ecs driver health; "
                                        "`missing drivers` means no client has a healthy ecs driver")
            if status != "complete":
                raise EcsdemoError(f"Nomad's evaluation {eval_id} ended {status}: "
                                   f"{ev.get('StatusDescription') or 'no description'}")
            return
        if time.monotonic() >= deadline:
            raise EcsdemoError(f"Nomad did not evaluate the job within {timing.run:.0f}s (evaluation {status})")
        time.sleep(timing.poll)


def _alloc_failure(alloc: dict) -> str | None:
    if alloc.get("ClientStatus") not in ("failed", "lost"):
        return None
    state = (alloc.get("TaskStates") or {}).get(TASK_NAME) or {}
    messages = [e.get("DisplayMessage") or e.get("Message") for e in state.get("Events") or []
                if e.get("Type") in ("Driver Failure", "Setup Failure", "Not Restarting", "Terminated")]
    detail = "; ".join(m for m in messages if m) or alloc.get("ClientDescription") or "no reason given"
    return f"allocation {alloc['ID'][:8]} {alloc.get('ClientStatus')}: {detail}"


def _wait_running_alloc(api: Any, timing: Timing) -> tuple[dict, str]:
    deadline = time.monotonic() + timing.run
    index = 0
    last = "no allocation yet"
    while True:
        allocs, index = api.wait_job_allocations(JOB_ID, index=index, wait=min(timing.block, max(timing.run, 1)))
        live = [a for a in allocs if a.get("DesiredStatus") == "run"]
        live.sort(key=lambda a: a.get("CreateIndex", 0), reverse=True)
        for alloc in live:
            arn = api.task_arn(alloc, TASK_NAME)
            if alloc.get("ClientStatus") == "running" and arn:
                return alloc, arn
            failure = _alloc_failure(alloc)
            if failure:
                raise EcsdemoError(f"the demo task failed to start: {failure}",
                                   hint="`ecsdemo logs` and the client agent logs in the state directory have details")
            last = f"allocation {alloc['ID'][:8]} is {alloc.get('ClientStatus')}"
        if not live:
            failed = [a for a in allocs if _alloc_failure(a)]
            if failed:
                raise EcsdemoError(f"the demo task failed to start: {_alloc_failure(failed[-1])}")
        if time.monotonic() >= deadline:
            raise EcsdemoError(f"the job's allocation was not running within {timing.run:.0f}s ({last})",
                               hint="`ecsdemo status` and the client agent logs show why")


def _wait_ecs_running(cfg: DemoConfig, arn: str, timing: Timing, client: Any = None) -> None:
    client = client or aws.ecs_client(cfg)
    cluster = aws.cluster_name(cfg)
    deadline = time.monotonic() + timing.run
    while True:
        found = aws.describe(client, cluster, [arn])
        status = found[0].get("lastStatus") if found else "MISSING"
        if status == "RUNNING":
            return
        if status in ("STOPPED", "DEPROVISIONING", "STOPPING") or time.monotonic() >= deadline:
            reason = found[0].get("stoppedReason") if found else "not found in the cluster"
            raise EcsdemoError(f"the ECS task {arn} is {status}" + (f" ({reason})" if reason else ""))
        time.sleep(timing.poll)


# --- teardown -------------------------------------------------------------------------------------
@dataclass
class TeardownResult:
    job_stopped: bool = False
    ecs_tasks_stopped: list[str] = field(default_factory=list)
    agents: dict[str, str] = field(default_factory=dict)
    infra_destroyed: bool = False
    endpoint_stopped: bool = False
    data_dirs_removed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()


def teardown(cfg: DemoConfig, reporter: Reporter, keep_infra: bool = False,
             timing: Timing | None = None) -> TeardownResult:
    """Undo `up` (and `run`) from whatever state is left: each step is skipped when there is nothing to do,
    and a failing step does not stop the later ones. Raises at the end if something could not be cleaned."""
    timing = timing or Timing()
    result = TeardownResult()
    records = agents.load(cfg)

    server = records.get(agents.SERVER)
    if server is not None and agents.status(server) == "running":
        with _attempt(reporter, result, "Stopping the demo job and waiting for its ECS task to stop"):
            result.job_stopped, arns = _stop_job(cfg, nomad_client(server.http_addr, timing.block), timing, reporter)
            result.ecs_tasks_stopped += arns
    else:
        reporter.info("the Nomad server is not running: skipping the job stop")

    if _ecs_reachable(cfg):
        with _attempt(reporter, result, "Stopping ECS tasks the driver left running"):
            left = aws.stop_driver_tasks(cfg, "ecsdemo teardown", wait=timing.stop, interval=timing.poll)
            result.ecs_tasks_stopped += left
            reporter.info(f"stopped {len(left)} leftover task(s)" if left else "none left")

    if records:
        with _attempt(reporter, result, "Stopping the Nomad agents"):
            result.agents = agents.stop_all(cfg, grace=timing.grace)
            for name, outcome in result.agents.items():
                reporter.info(f"{name}: {outcome}")

    if not keep_infra:
        from ecsdemo import infra

        with _attempt(reporter, result, "Destroying the infrastructure"):
            result.infra_destroyed = infra.destroy(cfg, reporter)
        if cfg.local or cfg.state.read_json("local.json") is not None:
            from ecsdemo import local

            with _attempt(reporter, result, "Stopping the local AWS endpoint"):
                result.endpoint_stopped = local.stop_local_endpoint(cfg.state)

    removed = agents.remove_data_dirs(cfg, records)
    result.data_dirs_removed = [str(p) for p in removed]
    if removed:
        reporter.info(f"removed {len(removed)} agent data director{'y' if len(removed) == 1 else 'ies'}")
    if result.problems:
        raise EcsdemoError("teardown incomplete: " + "; ".join(result.problems),
                           hint="fix the cause and run `ecsdemo teardown` again (it is safe to repeat)")
    if not keep_infra:
        cfg.state.remove("config.json")
    return result


class _attempt:
    """Run one teardown step; an EcsdemoError is reported and recorded, and teardown goes on."""

    def __init__(self, reporter: Reporter, result: TeardownResult, title: str):
        self.reporter, self.result, self.title = reporter, result, title
        self._step = reporter.step(title)

    def __enter__(self):
        self._step.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb):
        errors = (EcsdemoError, *_nomad_errors())
        if exc is not None and isinstance(exc, errors):
            self._step.__exit__(exc_type, exc, tb)
            self.result.problems.append(f"{self.title}: {getattr(exc, 'message', exc)}")
            self.reporter.warn(f"{self.title} failed: {getattr(exc, 'message', exc)}")
            return True
        return self._step.__exit__(exc_type, exc, tb)


def _ecs_reachable(cfg: DemoConfig) -> bool:
    if not cfg.local:
        from ecsdemo import infra

        return infra.outputs(cfg) is not None or infra.has_infrastructure(cfg)
    return aws.reachable(cfg)


def _stop_job(cfg: DemoConfig, api: Any, timing: Timing, reporter: Reporter) -> tuple[bool, list[str]]:
    """Stop the demo job through Nomad and wait for its ECS tasks to be STOPPED."""
    allocs = api.job_allocations(JOB_ID)
    arns = sorted({a for a in (api.task_arn(x, TASK_NAME) for x in allocs
                               if x.get("ClientStatus") in ("pending", "running", "lost", "unknown")) if a})
    job = api.job(JOB_ID)
    if job is None:
        reporter.info(f"no job {JOB_ID} registered")
        return False, []
    api.stop_job(JOB_ID)
    reporter.info(f"job {JOB_ID} stopped; waiting for {len(arns)} ECS task(s)")
    if arns and _ecs_reachable(cfg):
        aws.wait_stopped(cfg, arns, timeout=timing.stop, interval=timing.poll)
    return True, arns
