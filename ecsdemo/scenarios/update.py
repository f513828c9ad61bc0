"""update: a new task definition revision replaces the ECS task (a destructive job update).

Terraform applies the updated (or, with --revert, the base) task definition; the job is re-rendered from
Terraform's outputs (`family:revision`, whatever the revision number is on this account) and registered.
The old allocation is stopped normally, so the driver stops its ECS task; the new one runs a new task.
"""

from __future__ import annotations

from ecsdemo.nomad import short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import AllocWatch, preflight, wait_ecs_stopped, wait_replacement
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult


def run_update(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    variant = "base" if env.options.revert else "updated"
    current = checks.job_task_definition(base.job, env.task)
    with env.step(res, f"Apply the {variant} task definition with Terraform"):
        outputs = env.infra.apply(variant)
    wanted = f"{outputs.task_definition_family}:{outputs.task_definition_revision}"
    if wanted == current:
        other = "--revert" if variant == "updated" else "the update without --revert"
        raise ScenarioAbort(f"the job already runs task definition {current}; registering it again would change "
                            "nothing", hint=f"run {other} to switch definitions", precondition=True)
    with env.step(res, f"Render the job with task definition {wanted}"):
        path = env.infra.render_job(outputs)
        job = env.nomad.parse_job(path.read_text())
    rendered = checks.job_task_definition(job, env.task)
    res.check("job re-rendered with the new revision", rendered == wanted,
              f"{path.name} uses {rendered}, Terraform's outputs say {wanted}", current, rendered)
    if rendered != wanted:
        raise ScenarioAbort(f"the rendered job {path} uses {rendered}, not {wanted}")
    watch = AllocWatch(env)
    watch.fetch(0)
    with env.step(res, f"Register the job ({current} -> {wanted})"):
        env.nomad.register_job(job)
    with env.step(res, "Wait for the new allocation to run and the old one to finish"):
        new, old = wait_replacement(env, base, watch,
                                    f"no allocation replaced {short(base.alloc_id)} on the new job version",
                                    other_node=False)
    new_arn = env.arn_of(new)
    with env.step(res, "Wait for the old ECS task to stop"):
        old_task = wait_ecs_stopped(env, base.arn, f"the old ECS task {base.arn} did not stop")
    old_v, new_v = checks.job_version(base.alloc), checks.job_version(new)
    env.note(res, f"allocation {short(new['ID'])} (job version {new_v}) runs ECS task {new_arn}")

    res.check("new allocation on the new job version", new_v > old_v,
              f"{short(base.alloc_id)} (v{old_v}) -> {short(new['ID'])} (v{new_v})",
              checks.alloc_summary(base.alloc), checks.alloc_summary(new))
    new_task = env.ecs.describe(new_arn) if new_arn else None
    new_rev = checks.revision_of((new_task or {}).get("taskDefinitionArn"))
    res.check("new ECS task RUNNING on the new revision",
              bool(new_arn) and new_arn != base.arn and (new_task or {}).get("lastStatus") == "RUNNING"
              and new_rev == wanted,
              f"{new_arn} is {(new_task or {}).get('lastStatus')} on {new_rev}" if new_arn != base.arn
              else "the allocation still points at the old ECS task",
              checks.ecs_summary(base.ecs_task), checks.ecs_summary(new_task))
    res.add(checks.check_stopped_by_nomad(old_task, base.arn, base.alloc_id))
    res.add(checks.check_one_running(env.ecs.job_tasks([base.alloc_id, new["ID"]]), new_arn, env.job_id))
