"""`run-scenario ... --report FILE`: the timeline recorded while scenarios run against the fake Nomad and
moto, written as self-contained HTML and parsed back (one bar per allocation and per ECS task, the ARNs,
the marked moments, which allocation held the task)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from html.parser import HTMLParser

import pytest

from ecsdemo import report as html_report
from ecsdemo.config import JOB_ID, TASK_NAME
from ecsdemo.nomad import NomadClient, task_arn
from ecsdemo.progress import RecordingReporter
from ecsdemo.scenarios import runner
from ecsdemo.scenarios.env import Options, ScenarioEnv
from ecsdemo.scenarios.model import Report, ScenarioResult
from tests.support.moto_world import FAMILY
from tests.support.running_demo import demo_config, run_job

# `aws` and `ecs_demo` (tests/support/moto_world.py): the demo's network and task definitions made once for
# this module (moto's EC2 is slow), and an ECS cluster of each test's own.
MOTO_PER_MODULE = True


class Parsed(HTMLParser):
    """The elements the report is made of: every tag with its attributes, the text of ARN labels."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.arn_texts: list[str] = []
        self._in_arn = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self._in_arn = tag == "text" and a.get("class") == "arn"

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if self._in_arn:
            self.arn_texts.append(data)
            self._in_arn = False

    def having(self, tag: str, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def assert_self_contained(text: str, parsed: Parsed) -> None:
    assert not any(t in ("script", "link", "img", "iframe") for t, _ in parsed.tags)
    assert not any("src" in a or "href" in a for _, a in parsed.tags)
    assert "url(" not in text and "@import" not in text


def view(at_allocs, tasks, nodes=("nomad-client-1", "nomad-client-2")):
    return {"nodes": [{"id": f"id-{n}", "name": n, "status": "ready", "eligibility": "eligible", "drain": False,
                       "ecs_driver": "healthy"} for n in nodes],
            "allocations": at_allocs, "ecs_tasks": tasks, "nomad_error": None, "ecs_error": None}


def alloc(i, node, client, arn, live=True, desired="run"):
    return {"id": f"{i}" * 8 + "-0000-4000-8000-000000000000", "node": node, "node_id": "n", "job_version": 0,
            "desired_status": desired, "client_status": client, "task_arn": arn, "live": live}


def test_timeline_from_samples_parsed_back():
    arn = "arn:aws:ecs:us-east-1:123456789012:task/demo/0123456789abcdef0123456789abcdef"
    a1, a2 = alloc(1, "nomad-client-1", "running", arn), alloc(2, "nomad-client-2", "pending", arn)
    row = {"arn": arn, "last_status": "RUNNING", "live_owner": a1["id"]}
    samples = [html_report.Sample(100.0, view([a1], [row])),
               html_report.Sample(102.0, view([{**a1, "desired_status": "stop"}, a2], [row])),
               html_report.Sample(103.0, view([{**a1, "desired_status": "stop", "client_status": "complete",
                                                "live": False}, {**a2, "client_status": "running"}],
                                              [{**row, "live_owner": a2["id"]}])),
               html_report.Sample(106.0, view([{**a2, "client_status": "complete", "live": False}],
                                              [{**row, "last_status": "STOPPED", "live_owner": None}]))]
    res = ScenarioResult("drain", started=101.0, duration_s=3.0)
    res.steps = [{"at": 0.5, "text": "Drain nomad-client-1 (deadline 30s)"},
                 {"at": 1.0, "text": "Wait for the replacement allocation to run on another node"},
                 {"at": 4.0, "text": "Stop job nomad-ecs-demo"}]
    res.check("ECS task ARN unchanged", True, "same task", before=arn, after=arn)
    report = Report("drain", [res])
    tl = html_report.build_timeline(samples, report.results)
    (bar,) = tl.tasks
    assert [(h.label, h.start, h.end) for h in bar.holders] == [(a1["id"], 100.0, 103.0), (a2["id"], 103.0, 106.0)]
    assert html_report.holders_at(tl, 101.5) == f"{arn.rsplit('/', 1)[1]}: {a1['id'][:8]}"

    text = html_report.render_html(report, tl)
    parsed = Parsed(text)
    assert_self_contained(text, parsed)
    bars = parsed.having("rect", "alloc")
    assert sorted((b["data-alloc"], b["data-node"]) for b in bars) == [(a1["id"], "nomad-client-1"),
                                                                        (a2["id"], "nomad-client-2")]
    assert [b["data-arn"] for b in parsed.having("rect", "ecs-task")] == [arn] and parsed.arn_texts == [arn]
    assert [h["data-alloc"] for h in parsed.having("rect", "holder")] == [a1["id"], a2["id"]]
    assert [m["data-kind"] for m in parsed.having("line", "moment")] == ["drain", "stop"]   # waits are no moments
    assert [c["data-ok"] for c in parsed.having("tr", "check")] == ["true"]
    # the drain moment is at a1's time of holding; bars end when the allocation / task finished
    x = {b["data-alloc"]: float(b["x"]) + float(b["width"]) for b in bars}
    assert x[a1["id"]] < x[a2["id"]]


def test_moment_kinds_from_step_texts():
    kinds = {t: html_report.moment_kind(t) for t in (
        "Drain nomad-client-1 (deadline 120s)", "Disable the drain on nomad-client-1",
        "Kill -9 client agent nomad-client-1", "Restart client agent nomad-client-1",
        "Register the job (demo:1 -> demo:2)", "Stop job nomad-ecs-demo",
        "Stop ECS task arn:x outside Nomad (reason 'x')", "Wait for the ECS task to stop",
        "Pause the local AWS endpoint for 40s", "the local AWS endpoint answers again")}
    assert list(kinds.values()) == ["drain", "undrain", "kill", "restart", "update", "stop", "kill", None,
                                    "outage", "resume"]


class JobFiles:
    """Terraform's seam for the update scenario: 'apply' names the revision the fixture registered, the job
    is the demo job on that revision (parsed by the fake's /v1/jobs/parse)."""

    def __init__(self, ecs, tmp_path):
        self.ecs, self.path = ecs, tmp_path / "demo.nomad.hcl"

    def apply(self, variant: str):
        return types.SimpleNamespace(task_definition_family=FAMILY,
                                     task_definition_revision=2 if variant == "updated" else 1)

    def render_job(self, outputs):
        self.path.write_text(self.ecs.job_hcl(f"{FAMILY}:{outputs.task_definition_revision}"))
        return self.path


@pytest.fixture
def demo(tmp_path, nomad_cluster, ecs_demo, moto_server):
    """A saved local demo on the fake Nomad with the job running; `env()` makes a fast ScenarioEnv."""
    cfg = demo_config(tmp_path, nomad_cluster, ecs_demo, moto_server)
    run_job(nomad_cluster, ecs_demo)

    def env() -> ScenarioEnv:
        return ScenarioEnv(cfg=cfg, nomad=NomadClient(nomad_cluster.address, timeout=5), reporter=RecordingReporter(),
                           options=Options(timeout=20, sample_interval=0.05, poll_interval=0.05, block_wait=1),
                           infra=JobFiles(ecs_demo, tmp_path))
    return types.SimpleNamespace(cfg=cfg, fake=nomad_cluster, env=env,
                                 nomad=lambda: NomadClient(nomad_cluster.address, timeout=5))


@pytest.mark.slow
def test_report_of_drain_update_and_stop(demo, tmp_path):
    first = task_arn(next(a for a in demo.nomad().job_allocations(JOB_ID)), TASK_NAME)
    recorder = html_report.Recorder(demo.cfg, block_wait=1, ecs_interval=0.1).start()
    report = Report("all")
    try:
        for name in ("drain", "update", "stop"):
            report.results += runner.run(name, demo.env()).results
    finally:
        recorder.stop()
    assert report.ok, [(s, c.name) for s, c in report.failed_checks()] + [r.error for r in report.results]
    allocs = demo.nomad().job_allocations(JOB_ID)
    arns = list(dict.fromkeys(task_arn(a, TASK_NAME) for a in allocs))
    assert len(allocs) == 3 and len(arns) == 2 and arns[0] == first     # the drain kept the task, the update not

    path = html_report.write(tmp_path / "run.html", report, recorder)
    text = path.read_text()
    parsed = Parsed(text)
    assert_self_contained(text, parsed)
    assert sorted(b["data-alloc"] for b in parsed.having("rect", "alloc")) == sorted(a["ID"] for a in allocs)
    assert {b["data-node"] for b in parsed.having("rect", "alloc")} == {a["NodeName"] for a in allocs}
    assert [b["data-arn"] for b in parsed.having("rect", "ecs-task")] == arns and parsed.arn_texts == arns
    # the first task was held by the first allocation, then (handed over by the drain) by the second
    held = [(h["data-arn"], h["data-alloc"]) for h in parsed.having("rect", "holder")]
    assert [a for arn, a in held if arn == first] == [a["ID"] for a in allocs[:2]]
    assert [a for arn, a in held if arn == arns[1]] == [allocs[2]["ID"]]
    kinds = [m["data-kind"] for m in parsed.having("line", "moment")]
    assert [k for k in kinds if k in ("drain", "undrain", "update", "stop")] == ["drain", "undrain", "update", "stop"]
    assert len(parsed.having("tr", "check")) == sum(len(r.checks) for r in report.results)
    # at the moment of the update the first task was held by the drain's replacement
    assert f"{first.rsplit('/', 1)[1]}: {allocs[1]['ID'][:8]}" in text


@pytest.mark.slow
def test_cli_report_option(demo, tmp_path):
    out = tmp_path / "drain.html"
    env = dict(os.environ, COLUMNS="200")
    env.pop("NOMAD_ADDR", None)
    cmd = [sys.executable, "-m", "ecsdemo", "run-scenario", "drain", "--timeout", "20", "--state-dir",
           str(demo.cfg.state_dir)]
    bad = subprocess.run(cmd + ["--report", str(tmp_path / "missing" / "x.html")], capture_output=True, text=True,
                         timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    assert not demo.fake.requests_to("POST", r"/v1/node/.*/drain")        # refused before anything ran
    proc = subprocess.run(cmd + ["--report", str(out)], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"report written to {out}" in proc.stdout and "drain: passed" in proc.stdout
    parsed = Parsed(out.read_text())
    assert len(parsed.having("rect", "alloc")) == 2 and len(parsed.having("rect", "ecs-task")) == 1
    assert {m["data-kind"] for m in parsed.having("line", "moment")} == {"drain", "undrain"}
