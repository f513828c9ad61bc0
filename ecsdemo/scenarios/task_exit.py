"""task-exit: the job's ECS task is stopped outside Nomad, as from the AWS console (StopTask with a reason).

The driver's run duty: it polls the task, and when ECS says STOPPED its WaitTask returns with ECS's reason
and an exit code. Nomad records a `Terminated` event and applies the group's `restart` policy: a new
StartTask in the same allocation, so a new ECS task (docs/nomad-notes.md, "Start, run and exit"). The exit
must show within the plugin's poll interval + 2 s of ECS stopping the task.
"""

from __future__ import annotations

import time

from ecsdemo.nomad import live_allocation, short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import AllocWatch, preflight, wait_ecs_stopped
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.waiting import wait_until

REASON = "Stopped outside Nomad by ecsdemo run-scenario task-exit (as from the AWS console)"
GRACE_S = 2.0   # on top of the plugin's poll interval


def run_task_exit(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    since = checks.last_event_time(base.alloc, env.task)
    watch = AllocWatch(env)
    watch.fetch(0)
    with env.step(res, f"Stop ECS task {base.arn} outside Nomad (reason {REASON!r})"):
        stopped_ns = time.time_ns()
        env.ecs.stop(base.arn, REASON)
    with env.step(res, f"Wait for allocation {short(base.alloc_id)} to report the task's exit"):
        def exit_seen(allocs: list[dict]) -> dict | None:
            mine = next((a for a in allocs if a["ID"] == base.alloc_id), None)
            return checks.exit_event(checks.events_since(mine, env.task, since))
        allocs = wait_until(f"allocation {short(base.alloc_id)} showed no Terminated event", watch.fetch,
                            lambda al: exit_seen(al) is not None, env.options.timeout,
                            lambda al: "its events since the stop: " + (", ".join(
                                e.get("Type", "") for a in al or [] if a["ID"] == base.alloc_id
                                for e in checks.events_since(a, env.task, since)) or "none"),
                            interval=env.options.poll_interval,
                            hint="the driver reports a task that ECS stopped at its next poll (poll_interval)",
                            error=ScenarioAbort)
        event = exit_seen(allocs)
    old_task = wait_ecs_stopped(env, base.arn, f"ECS task {base.arn} did not stop")
    # real ECS takes a while to reach STOPPED after StopTask; the driver can only see it from then
    stopped_at = (old_task or {}).get("stoppedAt")
    if stopped_at is not None and hasattr(stopped_at, "timestamp"):
        stopped_ns = max(stopped_ns, int(stopped_at.timestamp() * 1e9))
    res.add(checks.check_exit_reported(event, REASON, stopped_ns, env.options.driver_poll_interval + GRACE_S))

    with env.step(res, "Wait for Nomad's restart policy to start a new ECS task"):
        def restarted(allocs: list[dict]) -> dict | None:
            live = live_allocation(allocs)
            arn = env.arn_of(live) if live else None
            return live if live and checks.is_running(live) and arn and arn != base.arn else None
        allocs = wait_until("no allocation of the job was running a new ECS task", watch.fetch,
                            lambda al: restarted(al) is not None, env.options.timeout,
                            lambda al: ", ".join(f"{short(a['ID'])} {a.get('DesiredStatus')}/{a.get('ClientStatus')} "
                                                 f"restarts {checks.task_state(a, env.task).get('Restarts') or 0}"
                                                 for a in al or []),
                            interval=env.options.poll_interval,
                            hint="the group's restart policy waits its `delay` before restarting",
                            error=ScenarioAbort)
    new = env.nomad.allocation(restarted(allocs)["ID"]) or restarted(allocs)
    new_arn = env.arn_of(new)
    new_task = env.ecs.describe(new_arn) if new_arn else None
    env.note(res, f"allocation {short(new['ID'])} runs ECS task {new_arn}")

    res.add(checks.check_restarted_in_place(base.alloc, new, env.task))
    res.add(checks.check_new_task_same_version(base.alloc, base.arn, new, new_arn, new_task))
    res.add(checks.check_stopped_with_reason(old_task, base.arn, REASON))
    ids = list(dict.fromkeys([base.alloc_id, new["ID"]]))
    res.add(checks.check_one_running(env.ecs.job_tasks(ids), new_arn, env.job_id))
