"""outage (local mode): the local AWS endpoint stops answering for `outage_for` seconds (SIGSTOP of the
moto server ecsdemo started, then SIGCONT), and the driver's two duties must stay apart.

Health: each client's `ecs` driver fingerprint (DescribeClusters) gets no answer, so Nomad shows the driver
unhealthy with the plugin's reason. Run: an ECS task the driver cannot see is not a task that exited, so
the allocation keeps running (no `Terminated` event, no restart, no new ECS task). When the endpoint
answers again every driver turns healthy and the same ECS task runs.

While the endpoint is paused only Nomad is asked (a call to ECS would hang); ECS is checked before and
after. With `--aws` there is nothing ecsdemo may pause, so the scenario is skipped as not applicable.
"""

from __future__ import annotations

from ecsdemo.errors import EcsdemoError
from ecsdemo.nomad import node_ecs_driver, short
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.common import get_node, preflight
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.model import ScenarioAbort, ScenarioResult
from ecsdemo.waiting import observe, wait_until

NOT_LOCAL = ("the outage scenario pauses the local AWS endpoint ecsdemo started (--local); with --aws "
             "ecsdemo cannot make AWS stop answering")
SHORT_HINT = ("the plugin fingerprints every fingerprint_interval (30 s by default) and waits up to 15 s for "
              "an answer: raise --for")


def not_applicable(env: ScenarioEnv) -> str | None:
    """Why the scenario cannot run here, or None."""
    return None if env.cfg.local else NOT_LOCAL


def _require_endpoint(env: ScenarioEnv) -> None:
    """THE local endpoint must be one ecsdemo started and that runs: only that one may be paused."""
    try:
        status = env.endpoint.status()
    except EcsdemoError as exc:
        raise ScenarioAbort(exc.message, hint=exc.hint, precondition=True) from None
    if not status or not status.get("running"):
        raise ScenarioAbort("no local AWS endpoint started by ecsdemo is running, so there is nothing to pause",
                            hint="start the demo with `ecsdemo up --local`", precondition=True)


def run_outage(env: ScenarioEnv, res: ScenarioResult) -> None:
    base = preflight(env, res)
    _require_endpoint(env)
    clients = [n for n in env.nomad.nodes() if n.get("Status") == "ready"]
    sick = [n for n in clients if not checks.ecs_driver_healthy(n)]
    if sick:
        raise ScenarioAbort("the ecs driver is already unhealthy on " + ", ".join(
            f"{checks.node_label(n)} ({node_ecs_driver(n)[2]})" for n in sick), precondition=True,
            hint="an outage can only be shown from healthy drivers; see `ecsdemo status`")
    seconds = env.options.outage_for
    unhealthy: dict[str, str | None] = {checks.node_label(n): None for n in clients}
    ids = {n["ID"] for n in clients}
    left: list[dict] = []              # the allocation as first seen not running, if it ever was
    known = {a["ID"] for a in env.nomad.job_allocations(env.job_id)}
    others: dict[str, dict] = {}       # allocations that appeared during the outage

    def look() -> None:
        for n in env.nomad.nodes():
            label = checks.node_label(n)
            if n["ID"] in ids and unhealthy[label] is None and not checks.ecs_driver_healthy(n):
                unhealthy[label] = node_ecs_driver(n)[2] or ""
                env.reporter.info(f"{label}: ecs driver unhealthy: {unhealthy[label]}")
        for a in env.nomad.job_allocations(env.job_id):
            if a["ID"] == base.alloc_id:
                if not checks.is_running(a) and not left:
                    left.append(a)
            elif a["ID"] not in known:
                others[a["ID"]] = a

    with env.step(res, f"Pause the local AWS endpoint for {seconds:g}s"):
        with env.endpoint.paused() as rec:
            env.note(res, f"the endpoint at {rec.get('url')} (pid {rec.get('pid')}) does not answer")
            observe(seconds, env.options.poll_interval, look)
    env.note(res, "the local AWS endpoint answers again")
    turned = checks.check_drivers_turned_unhealthy(unhealthy)
    if not turned.ok and any(v is None for v in unhealthy.values()):
        turned.detail += f" through the {seconds:g}s outage ({SHORT_HINT})"
    res.add(turned)
    res.check("no new allocation during the outage", not others,
              "none" if not others else "new: " + ", ".join(f"{short(i)} {a.get('ClientStatus')}"
                                                            for i, a in others.items()),
              [base.alloc_id], [base.alloc_id, *others])
    with env.step(res, "Wait for every client's ecs driver to be healthy again"):
        def fetch(_: float) -> list[dict]:
            return [get_node(env, i) for i in sorted(ids)]
        nodes = wait_until("the ecs driver did not turn healthy again", fetch,
                           lambda ns: all(checks.ecs_driver_healthy(n) for n in ns), env.options.timeout,
                           lambda ns: "; ".join(f"{checks.node_label(n)}: {node_ecs_driver(n)[2]}" for n in ns or []),
                           interval=env.options.poll_interval, error=ScenarioAbort)
    after = env.nomad.allocation(base.alloc_id)
    res.add(checks.check_drivers_healthy(nodes))
    res.add(checks.check_kept_running(base.alloc, left[0] if left else after, env.task, "through the outage"))
    res.add(checks.check_arn_unchanged(base.arn, env.arn_of(after) if after else None, "allocation's task handle"))
    task = env.ecs.describe(base.arn)
    res.check("the same ECS task RUNNING", (task or {}).get("lastStatus") == "RUNNING",
              f"{base.arn} is {(task or {}).get('lastStatus') or 'unknown to ECS'}",
              checks.ecs_summary(base.ecs_task), checks.ecs_summary(task))
    alloc_ids = [base.alloc_id, *others]
    res.add(checks.check_one_running(env.ecs.job_tasks(alloc_ids), base.arn, env.job_id))
