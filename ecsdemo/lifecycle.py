"""Workflows: `up` (everything from nothing to a ready cluster), `run` (the demo job), `teardown`.

Plain functions: they take a `DemoConfig` and a `Reporter`, return results, and raise `EcsdemoError`
for anything the user can act on. No printing, no Typer. Every step is safe to repeat, and what is
started is recorded before anything waits on it, so `teardown` can clean up after an interrupted `up`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ecsdemo import agents, aws, binaries, doctor, infra, local, plugininstall, render
from ecsdemo.config import GROUP_NAME, JOB_ID, TASK_NAME, DemoConfig
from ecsdemo.errors import EcsdemoError
from ecsdemo.nomad import NomadClient, NomadError, node_ecs_driver, task_arn
from ecsdemo.outputs import recorded
from ecsdemo.progress import Reporter
from ecsdemo.status import node_summary
from ecsdemo.waiting import wait_until

T = TypeVar("T")


@dataclass
class Timing:
    """How long to wait and how often to look. Tests shrink these."""

    ready: float = 120.0      # agents: leader, clients, ecs driver healthy (fingerprints batch up to ~50 s)
    run: float = 180.0        # the job: placed, running, ECS task RUNNING
    stop: float = 120.0       # teardown: job's ECS tasks STOPPED
    poll: float = 1.0         # between non-blocking polls
    block: float = 10.0       # longest Nomad blocking query
    grace: float = 10.0       # SIGTERM -> SIGKILL for agents


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
    policy = policy or BinaryPolicy()
    return {product: binaries.ensure(product, reporter, install=policy.install, releases_url=policy.releases_url,
                                     releases_key=policy.releases_key, on_bytes=policy.on_bytes).path
            for product in ("nomad", "terraform")}


def up(cfg: DemoConfig, reporter: Reporter, timing: Timing | None = None,
       binaries: BinaryPolicy | None = None) -> UpResult:
    """binaries -> doctor -> (local endpoint) -> Terraform -> render -> plugin -> agents -> wait until ready."""
    policy = binaries or BinaryPolicy()
    ensure_binaries(reporter, policy)
    warnings = check_prerequisites(cfg, reporter)
    cfg.state.ensure()
    cfg.save()   # first: whatever happens next, `teardown` knows which demo this is
    endpoint = None
    if cfg.local:
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
    with reporter.step("Rendering the Nomad configs and job"):
        paths = render.render_all(cfg, outputs, endpoint)
        reporter.info(f"wrote {len(paths)} files in {cfg.render_dir}")
    with reporter.step("Installing the nomad-driver-ecs plugin"):
        launcher = plugininstall.install_launcher(cfg.plugin_dir)
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
                    endpoint=endpoint, cluster=aws.cluster_name(cfg), job_file=str(render.job_path(cfg)))


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


def _poll(what: str, timing: Timing, probe: Callable[[], T], done: Callable[[T], bool],
          explain: Callable[[T], str], recs: list[agents.AgentRecord], cfg: DemoConfig) -> T:
    """Call `probe` until `done(value)`; return that value. `explain(value)` says why a value is not it (yet).

    Every round first checks that the agents `recs` still run: one that exited ends the wait at once, with
    the end of its log. A Nomad error is a reason to ask again (and the reason given on timeout).
    """
    def look(_max_block: float) -> T | NomadError:
        _alive_or_raise(cfg, recs)
        try:
            return probe()
        except NomadError as exc:
            return exc

    def why(value: T | NomadError) -> str:
        return str(value) if isinstance(value, NomadError) else explain(value)

    def timed_out(value: T | NomadError) -> EcsdemoError:
        return EcsdemoError(f"timed out after {timing.ready:.0f}s waiting for {what}: {why(value)}",
                            hint=f"agent logs are in {cfg.state.logs}; `ecsdemo teardown` cleans up")

    return wait_until(what, look, lambda value: not isinstance(value, NomadError) and done(value), timing.ready,
                      interval=timing.poll, timed_out=timed_out)


def _wait_leader(cfg: DemoConfig, server: agents.AgentRecord, timing: Timing) -> None:
    api = NomadClient(server.http_addr, timeout=timing.block)
    _poll("the Nomad server to elect a leader", timing, api.leader, bool,
          lambda _leader: "no cluster leader yet", [server], cfg)


def _wait_client(cfg: DemoConfig, rec: agents.AgentRecord, timing: Timing) -> None:
    _poll(f"{rec.name} to join the server", timing,
          lambda: NomadClient.client_node_id(rec.http_addr, timeout=timing.block), bool,
          lambda _node_id: f"{rec.name} has no node yet", [rec], cfg)


def _node_problems(nodes: dict[str, dict], wanted: list[str]) -> list[str]:
    """What keeps the wanted clients (by name) from being ready nodes with a healthy ecs driver."""
    problems = []
    for name in wanted:
        node = nodes.get(name)
        if node is None:
            problems.append(f"{name} not registered")
            continue
        if node.get("Status") != "ready":
            problems.append(f"{name} is {node.get('Status')}")
        detected, healthy, description = node_ecs_driver(node)
        if not (detected and healthy):
            problems.append(f"{name} ecs driver: {description or 'not detected yet'}")
    return problems


def _wait_nodes(cfg: DemoConfig, recs: list[agents.AgentRecord], timing: Timing) -> list[dict]:
    api = NomadClient(recs[0].http_addr, timeout=timing.block)
    wanted = cfg.client_names()
    nodes = _poll("the clients and their ecs driver", timing,
                  lambda: {n.get("Name"): n for n in api.nodes()},
                  lambda nodes: not _node_problems(nodes, wanted),
                  lambda nodes: "; ".join(_node_problems(nodes, wanted)), recs, cfg)
    return [node_summary(nodes[n]) for n in wanted]


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
    path = render.job_path(cfg)
    if not path.is_file():
        raise EcsdemoError(f"the rendered job {path} is missing", hint="run `ecsdemo up` first")
    api = NomadClient.from_config(cfg, timeout=timing.block)
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
    except NomadError as exc:
        raise EcsdemoError(f"submitting the job failed: {exc.message}",
                           hint=exc.hint or "is the demo up? `ecsdemo status` shows the agents") from exc
    with reporter.step("Waiting for the ECS task to be RUNNING"):
        aws.wait_running(cfg, arn, timing.run, interval=timing.poll, client=ecs_client)
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
    ev = wait_until("Nomad did not evaluate the job", lambda _max_block: api.evaluation(eval_id) or {},
                    lambda ev: ev.get("Status") in ("complete", "failed", "canceled"), timing.run,
                    interval=timing.poll,
                    timed_out=lambda ev: EcsdemoError(f"Nomad did not evaluate the job within {timing.run:.0f}s "
                                                      f"(evaluation {ev.get('Status')})"))
    status = ev.get("Status")
    reason = placement_failure(ev)
    if reason:
        raise EcsdemoError(f"Nomad could not place the job: {reason}",
                           hint="`ecsdemo status` shows each node's ecs driver health; "
                                "`missing drivers` means no client has a healthy ecs driver")
    if status != "complete":
        raise EcsdemoError(f"Nomad's evaluation {eval_id} ended {status}: "
                           f"{ev.get('StatusDescription') or 'no description'}")


def _alloc_failure(alloc: dict) -> str | None:
    if alloc.get("ClientStatus") not in ("failed", "lost"):
        return None
    state = (alloc.get("TaskStates") or {}).get(TASK_NAME) or {}
    messages = [e.get("DisplayMessage") or e.get("Message") for e in state.get("Events") or []
                if e.get("Type") in ("Driver Failure", "Setup Failure", "Not Restarting", "Terminated")]
    detail = "; ".join(m for m in messages if m) or alloc.get("ClientDescription") or "no reason given"
    return f"allocation {alloc['ID'][:8]} {alloc.get('ClientStatus')}: {detail}"


def _live_allocations(allocs: list[dict]) -> list[dict]:
    """The allocations Nomad wants running, newest first."""
    live = [a for a in allocs if a.get("DesiredStatus") == "run"]
    return sorted(live, key=lambda a: a.get("CreateIndex", 0), reverse=True)


def _running_alloc(allocs: list[dict]) -> tuple[dict, str] | None:
    """The newest live allocation that runs its ECS task, with the task's ARN; None while none does.
    Raises when the allocation failed to start (with the driver's own words)."""
    live = _live_allocations(allocs)
    for alloc in live:
        arn = task_arn(alloc, TASK_NAME)
        if alloc.get("ClientStatus") == "running" and arn:
            return alloc, arn
        failure = _alloc_failure(alloc)
        if failure:
            raise EcsdemoError(f"the demo task failed to start: {failure}",
                               hint="`ecsdemo logs` and the client agent logs in the state directory have details")
    if not live:
        failed = [a for a in allocs if _alloc_failure(a)]
        if failed:
            raise EcsdemoError(f"the demo task failed to start: {_alloc_failure(failed[-1])}")
    return None


def _wait_running_alloc(api: Any, timing: Timing) -> tuple[dict, str]:
    """Blocking queries on the job's allocations until one runs its ECS task."""
    index = 0

    def look(max_block: float) -> tuple[list[dict], tuple[dict, str] | None]:
        nonlocal index
        allocs, index = api.wait_job_allocations(JOB_ID, index=index, wait_s=min(timing.block, max(max_block, 1)))
        return allocs, _running_alloc(allocs)

    def timed_out(seen: tuple[list[dict], Any]) -> EcsdemoError:
        live = _live_allocations(seen[0])
        last = f"allocation {live[-1]['ID'][:8]} is {live[-1].get('ClientStatus')}" if live else "no allocation yet"
        return EcsdemoError(f"the job's allocation was not running within {timing.run:.0f}s ({last})",
                            hint="`ecsdemo status` and the client agent logs show why")

    _allocs, found = wait_until("the job's allocation was not running", look, lambda seen: seen[1] is not None,
                                timing.run, interval=timing.poll, timed_out=timed_out)
    return found


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
            api = NomadClient(server.http_addr, timeout=timing.block)
            result.job_stopped, arns = _stop_job(cfg, api, timing, reporter)
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
        with _attempt(reporter, result, "Destroying the infrastructure"):
            result.infra_destroyed = infra.destroy(cfg, reporter)
        if cfg.local or cfg.state.read_json(local.LOCAL_FILE) is not None:
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
        if isinstance(exc, EcsdemoError):   # Nomad's errors are EcsdemoErrors too
            self._step.__exit__(exc_type, exc, tb)
            self.result.problems.append(f"{self.title}: {exc.message}")
            self.reporter.warn(f"{self.title} failed: {exc.message}")
            return True
        return self._step.__exit__(exc_type, exc, tb)


def _ecs_reachable(cfg: DemoConfig) -> bool:
    if not cfg.local:
        return recorded(cfg.state) is not None or infra.has_infrastructure(cfg)
    return aws.reachable(cfg)


def _stop_job(cfg: DemoConfig, api: Any, timing: Timing, reporter: Reporter) -> tuple[bool, list[str]]:
    """Stop the demo job through Nomad and wait for its ECS tasks to be STOPPED."""
    allocs = api.job_allocations(JOB_ID)
    arns = sorted({a for a in (task_arn(x, TASK_NAME) for x in allocs
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
