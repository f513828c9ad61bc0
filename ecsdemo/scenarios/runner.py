"""Run one scenario, or `all` of them in the demo's order, and return one `Report`.

`all` stops at the first failure (the rest are reported skipped). A scenario that cannot apply to this
demo (outage with --aws) or that an option rules out (undrain with --keep-drained, client-restart with
--no-restart) is reported skipped as not applicable and does not fail the report."""

from __future__ import annotations

import time
from typing import Callable

from ecsdemo.errors import EcsdemoError
from ecsdemo.scenarios import outage
from ecsdemo.scenarios.client_restart import run_client_restart
from ecsdemo.scenarios.drain import run_drain, run_undrain
from ecsdemo.scenarios.env import ScenarioEnv
from ecsdemo.scenarios.lost_node import run_lost_node
from ecsdemo.scenarios.model import Report, ScenarioAbort, ScenarioResult
from ecsdemo.scenarios.stop import run_stop
from ecsdemo.scenarios.task_exit import run_task_exit
from ecsdemo.scenarios.update import run_update

SCENARIOS = ("drain", "lost-node", "client-restart", "task-exit", "outage", "update", "stop", "all")
ALL_ORDER = ("drain", "undrain", "lost-node", "client-restart", "task-exit", "outage", "update", "stop")


def _execute(env: ScenarioEnv, name: str, body: Callable[[ScenarioResult], object]) -> tuple[ScenarioResult, object]:
    res = ScenarioResult(name)
    env.reporter.info(f"scenario {name}")
    start = time.monotonic()
    value = None
    try:
        value = body(res)
    except ScenarioAbort as exc:
        res.fail(exc)
    except EcsdemoError as exc:   # an adapter failed (Nomad unreachable, AWS error): part of the report too
        res.fail(ScenarioAbort(exc.message, exc.hint))
    finally:
        res.duration_s = time.monotonic() - start
    if res.error:
        env.reporter.warn(f"{name}: {res.error}")
    return res, value


def _not_applicable(env: ScenarioEnv, name: str) -> str | None:
    if name == "outage":
        return outage.not_applicable(env)
    return None


def run(name: str, env: ScenarioEnv) -> Report:
    """Run scenario `name` (one of SCENARIOS)."""
    if name not in SCENARIOS:
        raise EcsdemoError(f"unknown scenario {name!r}", hint=f"choose one of: {', '.join(SCENARIOS)}")
    report = Report(name)
    single = {
        "drain": lambda res: run_drain(env, res, undrain_after=not env.options.keep_drained),
        "lost-node": lambda res: run_lost_node(env, res),
        "client-restart": lambda res: run_client_restart(env, res),
        "task-exit": lambda res: run_task_exit(env, res),
        "outage": lambda res: outage.run_outage(env, res),
        "update": lambda res: run_update(env, res),
        "stop": lambda res: run_stop(env, res),
    }
    if name != "all":
        why_not = _not_applicable(env, name)
        report.results.append(ScenarioResult(name, skipped=why_not, not_applicable=True) if why_not
                              else _execute(env, name, single[name])[0])
        return report

    drained: str | None = None
    failed: str | None = None
    for step in ALL_ORDER:
        if failed is not None:
            report.results.append(ScenarioResult(step, skipped=f"{failed} failed"))
            continue
        why_not = _not_applicable(env, step)
        if why_not:
            report.results.append(ScenarioResult(step, skipped=why_not, not_applicable=True))
            continue
        if step == "client-restart" and not env.options.restart:
            report.results.append(ScenarioResult(step, skipped="--no-restart left the lost client stopped",
                                                 not_applicable=True))
            continue
        if step == "undrain":
            if env.options.keep_drained or drained is None:
                report.results.append(ScenarioResult(step, skipped="--keep-drained" if env.options.keep_drained
                                                      else "nothing was drained", not_applicable=True))
                continue
            res, _ = _execute(env, step, lambda r: run_undrain(env, r, drained))
        elif step == "drain":
            res, drained = _execute(env, step, lambda r: run_drain(env, r, undrain_after=False))
        else:
            res, _ = _execute(env, step, single[step])
        report.results.append(res)
        if not res.ok:
            failed = step
    return report
