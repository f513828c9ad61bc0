"""lost-node: kill -9 the client agent running the allocation; the replacement re-attaches to the same ECS
task, and the killed client, once restarted, detaches from the lost allocation instead of stopping it."""

from __future__ import annotations

from ecsdemo.nomad import short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import (
    AllocWatch,
    Baseline,
    ecs_checks,
    ensure_other_eligible,
    preflight,
    wait_node,
    wait_replacement,
)
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.scenarios.sampler import EcsSampler
from ecsdemo.waiting import wait_until

DOWN_HINT = ("Nomad marks a node down after the heartbeat TTL plus heartbeat_grace (10-30s with the defaults); "
             "raise --timeout or check the server log")


def run_lost_node(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    agent = env.agents.name_for_node(base.node)
    if not agent:
        raise ScenarioAbort(f"node {checks.node_label(base.node)} is not run by a client agent ecsdemo started; "
                            "ecsdemo only kills agents it started", hint="start the demo with `ecsdemo up`",
                            precondition=True)
    target = ensure_other_eligible(env, res, base.node_id)
    env.note(res, f"{checks.node_label(target)} can take the allocation; {agent} runs {checks.node_label(base.node)}")
    watch = AllocWatch(env)
    watch.fetch(0)
    with EcsSampler(env.ecs.status, base.arn, env.options.sample_interval) as sampler:
        with env.step(res, f"Kill -9 client agent {agent}"):
            killed = env.agents.kill(agent)
            env.note(res, f"killed {killed}")
        with env.step(res, f"Wait for Nomad to mark {checks.node_label(base.node)} down"):
            down = wait_node(env, base.node_id, "down", f"node {checks.node_label(base.node)} was not marked down",
                             hint=DOWN_HINT)
        with env.step(res, "Wait for the replacement allocation to run on another node"):
            new, old = wait_replacement(env, base, watch,
                                        f"no replacement allocation for lost allocation {short(base.alloc_id)} "
                                        "was running on another node", need_old_done=False)
    res.check("node marked down", down.get("Status") == "down", f"{checks.node_label(down)} is {down.get('Status')}",
              checks.node_summary(base.node), checks.node_summary(down))
    res.check("old allocation lost", old.get("ClientStatus") == "lost",
              f"{short(old['ID'])}: {old.get('DesiredStatus')}/{old.get('ClientStatus')}"
              f" ({old.get('DesiredDescription') or 'no description'})",
              checks.alloc_summary(base.alloc), checks.alloc_summary(old))
    res.add(checks.check_replaced_on_other_node(base.alloc, new))
    ecs_checks(env, res, base, new, sampler.statuses)
    if env.options.restart:
        _restart(env, res, base, agent, new)
    else:
        env.note(res, f"{agent} left stopped (--no-restart)")


def _restart(env: ScenarioEnv, res: ScenarioResult, base: Baseline, agent: str, new: dict) -> None:
    with EcsSampler(env.ecs.status, base.arn, env.options.sample_interval) as sampler:
        with env.step(res, f"Restart client agent {agent}"):
            env.agents.start(agent)
        with env.step(res, f"Wait for {checks.node_label(base.node)} to rejoin"):
            back = wait_node(env, base.node_id, "ready", f"node {checks.node_label(base.node)} did not rejoin",
                             hint=f"see the log of {agent} in the state directory")
        with env.step(res, f"Wait for the client to finish lost allocation {short(base.alloc_id)}"):
            old = wait_until(
                f"the restarted client did not finish lost allocation {short(base.alloc_id)}",
                lambda _: env.nomad.allocation(base.alloc_id) or {}, lambda a: _finished_by_client(a, env.task),
                env.options.timeout,
                lambda a: f"it is {a.get('ClientStatus')}, task {checks.task_state(a, env.task).get('State')}",
                interval=env.options.poll_interval, error=ScenarioAbort)
    res.check("client rejoined", back.get("Status") == "ready" and back.get("ID") == base.node_id,
              f"{checks.node_label(back)} is {back.get('Status')} with the same node ID",
              "down", checks.node_summary(back))
    state = checks.task_state(old, env.task)
    res.check("lost allocation finished by the client", _finished_by_client(old, env.task),
              f"{short(old['ID'])} is {old.get('ClientStatus')}, its task {state.get('State')} "
              f"(events: {', '.join(e.get('Type', '') for e in state.get('Events') or [])})",
              "lost", {"client": old.get("ClientStatus"), "task": state.get("State")})
    running = env.ecs.job_tasks([base.alloc_id, new["ID"]])
    res.add(checks.check_one_running(running, base.arn, env.job_id))
    check = checks.check_never_left_running(sampler.statuses, base.arn)
    check.name = "ECS task never left RUNNING while the client came back"
    res.add(check)


def _finished_by_client(alloc: dict, task: str) -> bool:
    """The restarted client has processed the lost allocation: its task is dead (killed with DETACH, which
    leaves the ECS task alone) or the client reported the allocation complete."""
    return checks.task_state(alloc, task).get("State") == "dead" or alloc.get("ClientStatus") == "complete"
