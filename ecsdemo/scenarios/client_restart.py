"""client-restart: restart (SIGTERM, then start) a client whose state still holds an allocation that
handed its ECS task over (drained or lost). The ECS task must be left alone.

A Nomad client restores every allocation in its state DB on start, dead ones too: `RecoverTask` with the
saved handle, then, as the task is dead, `DestroyTask(force=true)` (docs/nomad-notes.md, "Agent
restart"). By then the ECS task belongs to the replacement allocation, so a driver that stops it there
kills the running job. The scenario samples the task's status from before the restart until `settle`
seconds after the client is back.

The client to restart is the node of the newest finished allocation whose task handle names the ECS task
running now (in `all` this follows lost-node: the client that lost its allocation). With none, the
scenario does not start and says to run `drain` or `lost-node` first.
"""

from __future__ import annotations

import time

from ecsdemo.nomad import short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import get_node, preflight, wait_node
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.scenarios.sampler import EcsSampler
from ecsdemo.waiting import wait_until

NO_HANDOVER_HINT = ("run `ecsdemo run-scenario drain` or `ecsdemo run-scenario lost-node` first: the client that "
                    "gave the allocation up keeps it in its state, and that is what a restart restores")


def run_client_restart(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    donors = checks.handed_over(env.nomad.job_allocations(env.job_id), base.alloc_id, base.arn, env.task)
    if not donors:
        raise ScenarioAbort(f"no allocation of job {env.job_id} has handed ECS task {base.arn} over, so no client "
                            "holds one to restore", hint=NO_HANDOVER_HINT, precondition=True)
    seen = []
    for donor in donors:
        node = get_node(env, donor["NodeID"])
        agent = env.agents.name_for_node(node)
        if agent and node.get("Status") == "ready":
            break
        seen.append(f"{checks.node_label(node)} is {node.get('Status')}"
                    + ("" if agent else ", with no running agent that ecsdemo started"))
    else:
        raise ScenarioAbort("no client holding a handed-over allocation can be restarted (" + "; ".join(seen) + ")",
                            hint="ecsdemo only restarts agents it started and that run; `ecsdemo status` shows "
                                 "them, `ecsdemo up` starts them", precondition=True)
    label = checks.node_label(node)
    env.note(res, f"{label} holds allocation {short(donor['ID'])} ({donor.get('DesiredStatus')}/"
                  f"{donor.get('ClientStatus')}), which handed ECS task {base.arn} over to {short(base.alloc_id)}; "
                  f"{agent} runs it")
    with EcsSampler(env.ecs.status, base.arn, env.options.sample_interval) as sampler:
        with env.step(res, f"Restart client agent {agent} (SIGTERM, then start)"):
            outcome = env.agents.restart(agent)
            env.note(res, f"{agent} {outcome} and started again")
        with env.step(res, f"Wait for {agent} to answer with its node ID"):
            reported = wait_until(f"client agent {agent} did not answer on its HTTP port",
                                  lambda _: env.agents.node_id(agent), lambda v: v is not None, env.options.timeout,
                                  lambda v: "", interval=env.options.poll_interval,
                                  hint=f"see the log of {agent} in the state directory", error=ScenarioAbort)
            back = (wait_node(env, node["ID"], "ready", f"node {label} is not ready", hint=f"see the log of {agent}")
                    if reported == node["ID"] else get_node(env, node["ID"]))
        with env.step(res, f"Watch the ECS task for {env.options.settle:g}s while the client restores its allocations"):
            time.sleep(env.options.settle)
    after = env.nomad.allocation(base.alloc_id)

    res.check("client back with the same node ID", reported == node["ID"] and back.get("Status") == "ready",
              f"{agent} reports node {short(reported)}, Nomad shows {checks.node_label(back)} {back.get('Status')}"
              if reported == node["ID"] else f"{agent} came back as node {reported}, not {node['ID']}",
              checks.node_summary(node), {"reported_id": reported, **(checks.node_summary(back) or {})})
    res.add(checks.check_arn_unchanged(base.arn, env.arn_of(after) if after else None,
                                       "running allocation's task handle"))
    never = checks.check_never_left_running(sampler.statuses, base.arn)
    never.name = "ECS task never left RUNNING while the client restarted"
    res.add(never)
    ids = [a["ID"] for a in env.nomad.job_allocations(env.job_id)]
    res.add(checks.check_one_running(env.ecs.job_tasks(ids), base.arn, env.job_id))
    res.add(checks.check_kept_running(base.alloc, after, env.task, "client restart"))
