"""Steps every scenario shares: the preconditions, finding the running allocation and its ECS task,
making sure another client can take it, and waiting for a replacement allocation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ecsdemo.nomad import TERMINAL_CLIENT_STATUSES, short, supports_remote_tasks
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.waiting import wait_until


@dataclass
class Baseline:
    """What runs before a scenario changes anything."""

    job: dict
    alloc: dict          # the full allocation
    node: dict
    arn: str
    ecs_task: dict

    @property
    def alloc_id(self) -> str:
        return self.alloc["ID"]

    @property
    def node_id(self) -> str:
        return self.alloc["NodeID"]


class AllocWatch:
    """The job's allocations through Nomad blocking queries: each fetch returns when they change (or after
    the blocking wait), so a wait reacts at once instead of polling."""

    def __init__(self, env: ScenarioEnv):
        self.env = env
        self.index = 0

    def fetch(self, max_block: float) -> list[dict]:
        wait_s = min(self.env.options.block_wait, max_block)
        allocs, self.index = self.env.nomad.wait_job_allocations(self.env.job_id, index=self.index, wait_s=wait_s)
        return allocs


def get_node(env: ScenarioEnv, node_id: str) -> dict:
    """The node, or a stand-in naming only its ID when Nomad no longer knows it."""
    return env.nomad.node(node_id) or {"ID": node_id, "Status": "unknown to Nomad"}


def require_remote_tasks(env: ScenarioEnv) -> str:
    version = env.nomad.version()
    if not supports_remote_tasks(version):
        raise ScenarioAbort(f"Nomad {version} has no remote task handles (they need 1.1.0 <= version < 1.10.0)",
                            hint="install Nomad 1.1-1.9; ecsdemo doctor checks this", precondition=True)
    return version


def preflight(env: ScenarioEnv, res: ScenarioResult) -> Baseline:
    """Check the Nomad version and that the job runs one allocation with an ECS task; return what runs."""
    version = require_remote_tasks(env)
    job = env.nomad.job(env.job_id)
    if job is None:
        raise ScenarioAbort(f"job {env.job_id} is not registered with Nomad", hint="run `ecsdemo run` first",
                            precondition=True)
    if job.get("Stop") or job.get("Status") == "dead":
        raise ScenarioAbort(f"job {env.job_id} is stopped (status {job.get('Status')})",
                            hint="run `ecsdemo run` to start it again", precondition=True)
    watch = AllocWatch(env)

    def with_arn(allocs: list[dict]) -> list[dict]:
        return [a for a in checks.running_allocations(allocs) if env.arn_of(a)]

    try:
        allocs = wait_until(
            f"job {env.job_id} has no running allocation with an ECS task", watch.fetch,
            lambda al: bool(with_arn(al)), env.options.timeout,
            lambda al: "allocations: " + (", ".join(f"{short(a['ID'])} {a.get('DesiredStatus')}/{a.get('ClientStatus')}"
                                                    for a in al or []) or "none"),
            interval=env.options.poll_interval, hint="see `ecsdemo status` and the client logs", error=ScenarioAbort)
    except ScenarioAbort as exc:
        # nothing was changed yet: the same abort as a precondition (its exit code is set when it is made)
        raise ScenarioAbort(exc.message, hint=exc.hint, precondition=True) from None
    running = with_arn(allocs)
    if len(running) != 1:
        raise ScenarioAbort(f"job {env.job_id} runs {len(running)} allocations; the scenarios expect exactly one",
                            precondition=True)
    alloc = env.nomad.allocation(running[0]["ID"]) or running[0]
    arn = env.arn_of(alloc) or env.arn_of(running[0])
    node = get_node(env, alloc["NodeID"])
    task = env.ecs.describe(arn)
    if task is None or task.get("lastStatus") != "RUNNING":
        status = task.get("lastStatus") if task else "unknown to ECS"
        raise ScenarioAbort(f"the job's ECS task {arn} is {status}, not RUNNING", precondition=True,
                            hint="see `ecsdemo status`")
    env.note(res, f"Nomad {version}; allocation {short(alloc['ID'])} runs on {checks.node_label(node)}, ECS task {arn}")
    return Baseline(job=job, alloc=alloc, node=node, arn=arn, ecs_task=task)


def ensure_other_eligible(env: ScenarioEnv, res: ScenarioResult, node_id: str) -> dict:
    """Make sure a client other than `node_id` can take the allocation (Nomad issue #10592: with none, a later
    placement starts a *new* ECS task). A node that an earlier drain left ineligible is re-enabled, as the
    upstream demo does; a node that is down or has no healthy driver is not something we can fix."""
    others = [n for n in env.nomad.nodes() if n.get("ID") != node_id]
    ready = [n for n in others if checks.is_schedulable(n)]
    if ready:
        return ready[0]
    fixable = [n for n in others if n.get("Status") == "ready" and checks.ecs_driver_healthy(n)
               and (n.get("SchedulingEligibility") != "eligible" or checks.node_draining(n))]
    if not fixable:
        seen = ", ".join(f"{checks.node_label(n)} {n.get('Status')}" for n in others) or "none"
        raise ScenarioAbort("no other client can take the allocation (other nodes: " + seen + ")",
                            hint="the scenario needs at least 2 ready clients with a healthy ecs driver (Nomad "
                                 "issue #10592); see `ecsdemo status`", precondition=True)
    node = fixable[0]
    with env.step(res, f"Re-enable scheduling on {checks.node_label(node)} (left ineligible by a drain)"):
        env.nomad.undrain(node["ID"])
        if get_node(env, node["ID"]).get("SchedulingEligibility") != "eligible":
            env.nomad.set_eligibility(node["ID"], True)
    return get_node(env, node["ID"])


def wait_replacement(env: ScenarioEnv, base: Baseline, watch: AllocWatch, what: str,
                     other_node: bool = True, need_old_done: bool = True) -> tuple[dict, dict]:
    """Wait until the allocation replacing `base.alloc` runs with an ECS task (on another node when
    `other_node`), and, when `need_old_done`, until the client has finished the old one. Returns the full
    (replacement, old) allocations."""
    state: dict[str, Any] = {}

    def fetch(max_block: float) -> list[dict]:
        return watch.fetch(max_block)

    def done(allocs: list[dict]) -> bool:
        old = next((a for a in allocs if a["ID"] == base.alloc_id), None)
        new = checks.find_replacement(base.alloc, allocs)
        state["old"], state["new"] = old, new
        if new is None or not checks.is_running(new) or not env.arn_of(new):
            return False
        if other_node and new.get("NodeID") == base.node_id:
            return False
        return not need_old_done or old is None or old.get("ClientStatus") in TERMINAL_CLIENT_STATUSES

    def explain(_: Any) -> str:
        new, old = state.get("new"), state.get("old")
        try:
            node = env.nomad.node(base.node_id)
        except Exception:  # the explanation must not hide the timeout
            node = None
        text = checks.describe_wait_state(old, node)
        if new is not None:
            text += (f"; replacement {short(new['ID'])} on {new.get('NodeName') or short(new.get('NodeID'))} is "
                     f"{new.get('ClientStatus')}" + ("" if env.arn_of(new) else " with no ECS task handle"))
        return text

    wait_until(what, fetch, done, env.options.timeout, explain, interval=env.options.poll_interval,
               hint="see `ecsdemo status` and the agents' logs in the state directory", error=ScenarioAbort)
    new = env.nomad.allocation(state["new"]["ID"]) or state["new"]
    old = env.nomad.allocation(base.alloc_id) or state["old"] or base.alloc
    return new, old


def wait_node(env: ScenarioEnv, node_id: str, status: str, what: str, hint: str | None = None) -> dict:
    """Poll a node until its Status is `status`."""
    last: dict[str, Any] = {}

    def fetch(_: float) -> dict:
        last["node"] = get_node(env, node_id)
        return last["node"]

    return wait_until(what, fetch, lambda n: n.get("Status") == status, env.options.timeout,
                      lambda n: f"node {checks.node_label(n, node_id)} is {(n or {}).get('Status')}",
                      interval=env.options.poll_interval, hint=hint, error=ScenarioAbort)


def wait_ecs_stopped(env: ScenarioEnv, arn: str, what: str) -> dict | None:
    return wait_until(what, lambda _: env.ecs.describe(arn),
                      lambda t: t is None or t.get("lastStatus") == "STOPPED", env.options.timeout,
                      lambda t: f"it is {t.get('lastStatus') if t else 'unknown'}",
                      interval=env.options.poll_interval, error=ScenarioAbort)


def ecs_checks(env: ScenarioEnv, res: ScenarioResult, base: Baseline, new: dict, samples: list[str]) -> None:
    """The three checks drain and lost-node share: same ARN from the handles, from ECS, never left RUNNING."""
    res.add(checks.check_arn_unchanged(base.arn, env.arn_of(new), "allocations' task handles"))
    alloc_ids = [base.alloc_id, new["ID"]]
    running = env.ecs.job_tasks(alloc_ids)
    seen = ", ".join(t["taskArn"] for t in checks.running_tasks(running)) or None
    res.add(checks.check_arn_unchanged(base.arn, seen, "ECS"))
    res.add(checks.check_one_running(running, base.arn, env.job_id))
    res.add(checks.check_never_left_running(samples, base.arn))
