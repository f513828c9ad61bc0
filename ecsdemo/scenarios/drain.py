"""drain and undrain: the allocation moves to another node and keeps the *same* ECS task."""

from __future__ import annotations

from ecsdemo.nomad import short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import (
    AllocWatch,
    ecs_checks,
    ensure_other_eligible,
    get_node,
    preflight,
    wait_replacement,
)
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioResult
from ecsdemo.scenarios.sampler import EcsSampler


def run_drain(env: ScenarioEnv, res: ScenarioResult, undrain_after: bool = True) -> str:
    """Drain the node running the allocation; returns the drained node's ID."""
    base = preflight(env, res)
    target = ensure_other_eligible(env, res, base.node_id)
    env.note(res, f"{checks.node_label(target)} can take the allocation")
    deadline = env.options.drain_deadline or env.options.timeout
    watch = AllocWatch(env)
    watch.fetch(0)  # the index to block from, taken before the drain
    with EcsSampler(env.ecs.status, base.arn, env.options.sample_interval) as sampler:
        with env.step(res, f"Drain {checks.node_label(base.node)} (deadline {deadline:g}s)"):
            env.nomad.drain(base.node_id, deadline)
        with env.step(res, "Wait for the replacement allocation to run on another node"):
            new, old = wait_replacement(env, base, watch,
                                        f"no replacement allocation for {short(base.alloc_id)} was running on "
                                        "another node, with the old one finished,")
    drained = get_node(env, base.node_id)
    env.note(res, f"allocation {short(new['ID'])} runs on {new.get('NodeName') or short(new['NodeID'])}")

    res.check("node drained", drained.get("SchedulingEligibility") == "ineligible",
              f"{checks.node_label(drained)} is {drained.get('SchedulingEligibility')}",
              checks.node_summary(base.node), checks.node_summary(drained))
    res.add(checks.check_replaced_on_other_node(base.alloc, new))
    migrated = bool((old.get("DesiredTransition") or {}).get("Migrate"))
    res.check("old allocation migrated, not killed", migrated and old.get("DesiredStatus") == "stop",
              f"{short(old['ID'])}: {old.get('DesiredStatus')}/{old.get('ClientStatus')}"
              f" ({old.get('DesiredDescription') or 'no description'}), Migrate={migrated}",
              checks.alloc_summary(base.alloc), checks.alloc_summary(old))
    ecs_checks(env, res, base, new, sampler.statuses)
    if undrain_after:
        run_undrain(env, res, base.node_id)
    else:
        env.note(res, f"{checks.node_label(drained)} left drained (--keep-drained)")
    return base.node_id


def run_undrain(env: ScenarioEnv, res: ScenarioResult, node_id: str) -> None:
    """Disable the drain and make the node eligible again; the running allocation must not move."""
    before = get_node(env, node_id)
    running_before = checks.running_allocations(env.nomad.job_allocations(env.job_id))
    with env.step(res, f"Disable the drain on {checks.node_label(before)}"):
        env.nomad.undrain(node_id)
    after = get_node(env, node_id)
    eligible = after.get("SchedulingEligibility") == "eligible" and not checks.node_draining(after)
    res.check("node eligible again", eligible,
              f"{checks.node_label(after)} is {after.get('SchedulingEligibility')}"
              + (", still draining" if checks.node_draining(after) else ""),
              checks.node_summary(before), checks.node_summary(after))
    running_after = checks.running_allocations(env.nomad.job_allocations(env.job_id))
    ids_before = sorted(a["ID"] for a in running_before)
    ids_after = sorted(a["ID"] for a in running_after)
    res.check("running allocation unaffected", ids_before == ids_after and bool(ids_after),
              "the same allocation keeps running" if ids_before == ids_after else "the running allocations changed",
              ids_before, ids_after)
