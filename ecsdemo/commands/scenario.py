"""`ecsdemo run-scenario drain|lost-node|client-restart|task-exit|outage|update|stop|all`."""

from __future__ import annotations

import json as jsonlib
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ecsdemo import report as html_report
from ecsdemo.check import format_value
from ecsdemo.commands.common import JsonOpt, StateDirOpt
from ecsdemo.console import RichReporter, console, err_console
from ecsdemo.errors import EcsdemoError
from ecsdemo.resolve import resolve_config
from ecsdemo.scenarios import runner
from ecsdemo.scenarios.env import DEFAULT_OUTAGE_S, Options, ScenarioEnv
from ecsdemo.scenarios.model import Report


class ScenarioName(str, Enum):
    drain = "drain"
    lost_node = "lost-node"
    client_restart = "client-restart"
    task_exit = "task-exit"
    outage = "outage"
    update = "update"
    stop = "stop"
    all = "all"


# which options make sense with which scenario
_OPTION_SCENARIOS = {"--keep-drained": ("drain", "all"), "--no-restart": ("lost-node", "all"),
                     "--revert": ("update", "all"), "--for": ("outage", "all")}


def register(app: typer.Typer) -> None:
    """Add `run-scenario` to the main app."""
    app.command("run-scenario")(run_scenario)


def run_scenario(
    scenario: Annotated[ScenarioName, typer.Argument(
        help="drain, lost-node, client-restart, task-exit, outage (local mode), update, stop, or all of them in "
             "the demo's order (drain, undrain, lost-node, client-restart, task-exit, outage, update, stop).")],
    json: JsonOpt = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", min=1, help="Seconds to wait for each thing Nomad or ECS must do (a replacement, a node going "
                                 "down, a task stopping).")] = 120.0,
    keep_drained: Annotated[bool, typer.Option("--keep-drained", help="drain: leave the node drained.")] = False,
    no_restart: Annotated[bool, typer.Option("--no-restart", help="lost-node: leave the killed client stopped "
                                                                  "(all then skips client-restart).")] = False,
    revert: Annotated[bool, typer.Option("--revert", help="update: go back to the base task definition.")] = False,
    outage_for: Annotated[Optional[float], typer.Option(
        "--for", min=1, metavar="SECONDS",
        help=f"outage: how long the local AWS endpoint stops answering (default {DEFAULT_OUTAGE_S:g}: the "
             "plugin fingerprints every 30 s and gives up on an unanswered call after 15 s).")] = None,
    report_file: Annotated[Optional[Path], typer.Option(
        "--report", metavar="FILE", dir_okay=False,
        help="Also write a self-contained HTML report: the checklist and a timeline of the run (allocations "
             "per node, each ECS task, the moments the scenarios acted).")] = None,
    state_dir: StateDirOpt = None,
) -> None:
    """Run a demo scenario against the running demo and verify what happened (exit 1 if a check fails,
    3 if the scenario could not start).

    client-restart restarts a client that handed its allocation over (run drain or lost-node first); task-exit stops the ECS task outside Nomad and expects Nomad to restart it; outage pauses the local AWS endpoint (local mode only; skipped with --aws)."""  # noqa: E501 (one line per paragraph: Typer keeps line breaks)
    name = scenario.value
    given = {"--keep-drained": keep_drained, "--no-restart": no_restart, "--revert": revert,
             "--for": outage_for is not None}
    for flag, on in given.items():
        if on and name not in _OPTION_SCENARIOS[flag]:
            raise EcsdemoError(f"{flag} does not apply to the {name} scenario",
                               hint=f"it applies to: {', '.join(_OPTION_SCENARIOS[flag])}", exit_code=2)
    cfg = resolve_config(state_dir, required=True, hint="run `ecsdemo up` (and `ecsdemo run`) first")
    options = Options(timeout=timeout, keep_drained=keep_drained, restart=not no_restart, revert=revert,
                      **({"outage_for": outage_for} if outage_for is not None else {}))
    reporter = RichReporter(quiet=json)
    env = ScenarioEnv.from_config(cfg, reporter, options)
    report = _run_with_report(name, env, report_file, json) if report_file else runner.run(name, env)
    if json:
        typer.echo(jsonlib.dumps(report.to_json(), indent=2, default=str))
    else:
        print_report(report)
    if report.exit_code:
        # An EcsdemoError, not typer.Exit: `cli.main` runs the app with standalone_mode=False, where an
        # Exit's code is returned rather than used.
        raise EcsdemoError(_summary(report), exit_code=report.exit_code)


def _run_with_report(name: str, env, report_file: Path, json: bool):
    """Run the scenario while a background recorder samples Nomad and ECS, then write the HTML report
    (also when checks failed or on Ctrl-C: what was recorded so far)."""
    html_report.check_path(report_file)
    recorder = html_report.Recorder(env.cfg).start()
    result = Report(name)
    try:
        result = runner.run(name, env)
    finally:
        recorder.stop()
        written = html_report.write(report_file, result, recorder)
        (err_console if json else console).print(f"report written to [bold]{escape(str(written))}[/bold]",
                                                 soft_wrap=True)
    return result


def _summary(report) -> str:
    failed = report.failed_checks()
    errors = [r for r in report.results if r.error]
    parts = []
    if failed:
        parts.append(f"{len(failed)} check(s) failed: " + ", ".join(f"{s}: {c.name}" for s, c in failed))
    for r in errors:
        parts.append(f"{r.name} {'could not start' if r.precondition_failed else 'stopped'}: {r.error}")
    return f"run-scenario {report.scenario} failed; " + "; ".join(parts)


def print_report(report) -> None:
    """The final checklist: per scenario, each check with its before/after values."""
    for res in report.results:
        mark = {"passed": "[green]passed[/green]", "failed": "[red]FAILED[/red]",
                "not-run": "[red]NOT RUN[/red]", "skipped": "[yellow]skipped[/yellow]"}[res.status]
        console.print(f"\n[bold]{res.name}[/bold]: {mark} [dim]({res.duration_s:.1f}s)[/dim]")
        if res.skipped:
            console.print(f"  {escape(res.skipped)}")
            continue
        for c in res.checks:
            tick = "[green]✓[/green]" if c.ok else "[red]✗[/red]"
            console.print(f"  {tick} {escape(c.name)}: {escape(c.detail)}", soft_wrap=True)
            if c.before is not None or c.after is not None:
                console.print(f"      before: {format_value(c.before)}", soft_wrap=True, markup=False)
                console.print(f"      after:  {format_value(c.after)}", soft_wrap=True, markup=False)
        if res.error:
            console.print(f"  [red]error:[/red] {escape(res.error)}", soft_wrap=True)
            if res.hint:
                console.print(f"  [dim]hint:[/dim] {escape(res.hint)}", soft_wrap=True)
    verdict = "[green]all checks passed[/green]" if report.ok else "[red]some checks failed[/red]"
    console.print(f"\n{report.scenario}: {verdict}")
