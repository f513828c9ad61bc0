"""stop: stopping the job stops its ECS task (the driver's StopTask), and nothing of the job keeps running."""

from __future__ import annotations

from ecsdemo.nomad import TERMINAL_CLIENT_STATUSES, short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import AllocWatch, preflight, wait_ecs_stopped
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.waiting import wait_until


def run_stop(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    watch = AllocWatch(env)
    watch.fetch(0)
    with env.step(res, f"Stop job {env.job_id}"):
        env.nomad.stop_job(env.job_id)
    with env.step(res, "Wait for the job's allocations to finish"):
        allocs = wait_until(
            f"the allocations of job {env.job_id} did not finish", watch.fetch,
            lambda al: bool(al) and all(a.get("ClientStatus") in TERMINAL_CLIENT_STATUSES for a in al),
            env.options.timeout,
            lambda al: ", ".join(f"{short(a['ID'])} {a.get('DesiredStatus')}/{a.get('ClientStatus')}"
                                 for a in al or []),
            interval=env.options.poll_interval, error=ScenarioAbort)
    with env.step(res, "Wait for the ECS task to stop"):
        task = wait_ecs_stopped(env, base.arn, f"ECS task {base.arn} did not stop")
    old = next((a for a in allocs if a["ID"] == base.alloc_id), None)
    res.check("allocation stopped", old is not None and old.get("DesiredStatus") == "stop"
              and old.get("ClientStatus") == "complete",
              f"{short(base.alloc_id)} is {old.get('DesiredStatus')}/{old.get('ClientStatus')}" if old
              else f"{short(base.alloc_id)} is gone", checks.alloc_summary(base.alloc), checks.alloc_summary(old))
    res.add(checks.check_stopped_by_nomad(task, base.arn, base.alloc_id))
    running = checks.running_tasks(env.ecs.job_tasks([a["ID"] for a in allocs]))
    res.check("no ECS task of the job left running", not running,
              "none RUNNING" if not running else f"still RUNNING: {', '.join(t['taskArn'] for t in running)}",
              [base.arn], [t["taskArn"] for t in running])
    job = env.nomad.job(env.job_id)
    res.check("job stopped", job is None or bool(job.get("Stop")),
              f"job {env.job_id} is " + ("purged" if job is None else f"{job.get('Status')}, Stop={job.get('Stop')}"),
              base.job.get("Status"), None if job is None else job.get("Status"))
