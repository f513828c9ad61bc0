"""The scenarios' pure rules over real-shaped Nomad and ECS JSON (docs/nomad-notes.md, "The HTTP API ecsdemo uses")."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from ecsdemo.nomad import supports_remote_tasks
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.model import Report, ScenarioAbort, ScenarioResult
from ecsdemo.scenarios.sampler import EcsSampler

A1 = "5b3c2a9e-0f7d-4a5e-9c1b-2d8e7f6a1b01"
A2 = "9d1e4f7a-3c2b-4e8d-a6f5-0b9c8d7e6f02"
N1 = "e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a51"
N2 = "f2a3b4c5-d6e7-4f8a-9b0c-1d2e3f4a5b62"
ARN1 = "arn:aws:ecs:us-east-1:123456789012:task/nomad-remote-driver-demo/0a1b2c3d4e5f"
ARN2 = "arn:aws:ecs:us-east-1:123456789012:task/nomad-remote-driver-demo/9f8e7d6c5b4a"


def stub(id_, node, desired="run", client="running", create=10, name="nomad-ecs-demo.ecs-remote-task-demo[0]", **kw):
    """An AllocListStub as /v1/job/:id/allocations serves it (every key present, no PreviousAllocation)."""
    out = {"ID": id_, "EvalID": "e" * 36, "Name": name, "Namespace": "default", "NodeID": node,
           "NodeName": {N1: "nomad-client-1", N2: "nomad-client-2"}.get(node, ""), "JobID": "nomad-ecs-demo",
           "JobType": "service", "JobVersion": 0, "TaskGroup": "ecs-remote-task-demo", "DesiredStatus": desired,
           "DesiredDescription": "", "ClientStatus": client, "ClientDescription": "Tasks are running",
           "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
           "TaskStates": None, "DeploymentStatus": None, "FollowupEvalID": "", "RescheduleTracker": None,
           "PreemptedAllocations": None, "PreemptedByAllocation": "", "CreateIndex": create,
           "ModifyIndex": create + 1, "CreateTime": 1_700_000_000_000_000_000, "ModifyTime": 1_700_000_000_000_000_000}
    out.update(kw)
    return out


def node(id_, name, status="ready", elig="eligible", drain=False, healthy=True):
    return {"ID": id_, "Name": name, "Status": status, "SchedulingEligibility": elig, "Drain": drain,
            "Drivers": {"ecs": {"Attributes": {"driver.ecs": "true"}, "Detected": True, "Healthy": healthy,
                                "HealthDescription": "Healthy" if healthy else "unhealthy",
                                "UpdateTime": "2024-05-01T10:00:00+00:00"}}}


def ecs_task(arn, status="RUNNING", alloc=A1, job="nomad-ecs-demo", reason=None, td="nomad-remote-driver-demo:1"):
    t = {"taskArn": arn, "lastStatus": status, "desiredStatus": "STOPPED" if status == "STOPPED" else "RUNNING",
         "taskDefinitionArn": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{td}",
         "startedBy": "nomad-" + alloc[:30],
         "tags": [{"key": "nomad:alloc_id", "value": alloc}, {"key": "nomad:job", "value": job}]}
    if reason:
        t["stoppedReason"] = reason
    return t


@pytest.mark.parametrize("text,ok", [("1.1.0", True), ("1.9.7", True), ("1.1.0-beta1", True), ("v1.4.3", True),
                                     ("1.0.18", False), ("1.10.0", False), ("2.0.0", False), ("", False),
                                     ("dev", False)])
def test_remote_tasks_need_nomad_1_1_to_1_9(text, ok):
    assert supports_remote_tasks(text) is ok


def test_replacement_found_by_previous_allocation_on_full_allocations():
    old = stub(A1, N1, desired="stop", create=10)
    other = stub("1" * 36, N2, create=30)          # same name, later: would win the fallback
    new = stub(A2, N2, create=20, PreviousAllocation=A1)
    assert checks.find_replacement(old, [old, other, new])["ID"] == A2


def test_replacement_found_by_name_on_stubs_without_previous_allocation():
    old = stub(A1, N1, desired="stop", create=10)
    earlier = stub("0" * 36, N1, desired="stop", client="complete", create=5)
    new = stub(A2, N2, create=20)
    assert checks.find_replacement(old, [earlier, old, new])["ID"] == A2
    assert checks.find_replacement(old, [earlier, old]) is None
    other_name = stub(A2, N2, create=20, name="nomad-ecs-demo.ecs-remote-task-demo[1]")
    assert checks.find_replacement(old, [old, other_name]) is None


def test_replacement_check_passes_only_running_on_another_node():
    old = stub(A1, N1)
    assert checks.check_replaced_on_other_node(old, stub(A2, N2)).ok
    same_node = checks.check_replaced_on_other_node(old, stub(A2, N1))
    assert not same_node.ok and "same node" in same_node.detail
    pending = checks.check_replaced_on_other_node(old, stub(A2, N2, client="pending"))
    assert not pending.ok and "pending" in pending.detail
    assert not checks.check_replaced_on_other_node(old, None).ok


def test_arn_unchanged_fails_on_a_new_task():
    assert checks.check_arn_unchanged(ARN1, ARN1, "task handles").ok
    c = checks.check_arn_unchanged(ARN1, ARN2, "task handles")
    assert not c.ok and c.before == ARN1 and c.after == ARN2 and "new task" in c.detail
    assert not checks.check_arn_unchanged(ARN1, None, "ECS").ok
    assert not checks.check_arn_unchanged(None, None, "ECS").ok


def test_one_running_task_detects_a_second_task_and_a_wrong_one():
    assert checks.check_one_running([ecs_task(ARN1), ecs_task(ARN2, "STOPPED")], ARN1, "j").ok
    two = checks.check_one_running([ecs_task(ARN1), ecs_task(ARN2, alloc=A2)], ARN1, "j")
    assert not two.ok and "2 ECS tasks" in two.detail and two.after == [ARN1, ARN2]
    wrong = checks.check_one_running([ecs_task(ARN2)], ARN1, "j")
    assert not wrong.ok and "expected" in wrong.detail
    none = checks.check_one_running([ecs_task(ARN1, "STOPPED")], None, "j")
    assert not none.ok and "no ECS task" in none.detail


def test_never_left_running_shows_the_statuses_seen():
    ok = checks.check_never_left_running(["RUNNING"] * 5, ARN1)
    assert ok.ok and ok.after == ["RUNNING"] and "5 samples" in ok.detail
    bad = checks.check_never_left_running(["RUNNING", "RUNNING", "DEACTIVATING", "STOPPED"], ARN1)
    assert not bad.ok and bad.after == ["RUNNING", "DEACTIVATING", "STOPPED"]
    assert not checks.check_never_left_running([], ARN1).ok


def test_stopped_by_nomad_needs_the_drivers_reason():
    reason = f"Stopped by Nomad: allocation {A1} task http-server was stopped"
    good = checks.check_stopped_by_nomad(ecs_task(ARN1, "STOPPED", reason=reason), ARN1, A1)
    assert good.ok and A1[:8] in good.detail
    by_hand = checks.check_stopped_by_nomad(ecs_task(ARN1, "STOPPED", reason="Task stopped by user"), ARN1, A1)
    assert not by_hand.ok and "not by the driver" in by_hand.detail
    running = checks.check_stopped_by_nomad(ecs_task(ARN1), ARN1, A1)
    assert not running.ok and "RUNNING" in running.detail
    assert not checks.check_stopped_by_nomad(None, ARN1, A1).ok


def test_schedulable_nodes():
    assert checks.is_schedulable(node(N1, "c1"))
    assert not checks.is_schedulable(node(N1, "c1", elig="ineligible"))
    assert not checks.is_schedulable(node(N1, "c1", status="down"))
    assert not checks.is_schedulable(node(N1, "c1", drain=True))
    assert not checks.is_schedulable(node(N1, "c1", healthy=False))


def test_job_tasks_by_tag_and_revision():
    tasks = [ecs_task(ARN1), ecs_task(ARN2, job="other")]
    assert [t["taskArn"] for t in checks.job_tasks(tasks, "nomad-ecs-demo")] == [ARN1]
    assert checks.revision_of(tasks[0]["taskDefinitionArn"]) == "nomad-remote-driver-demo:1"
    assert checks.revision_of("fam:3") == "fam:3"


def test_wait_state_description_names_node_and_alloc():
    text = checks.describe_wait_state(stub(A1, N1, desired="stop", DesiredDescription="alloc is being migrated"),
                                      node(N1, "nomad-client-1", elig="ineligible", drain=True))
    assert "nomad-client-1" in text and "ineligible" in text and "draining" in text
    assert "stop/running" in text and "migrated" in text


def test_report_exit_codes_and_json():
    r = ScenarioResult("drain")
    r.check("a", True, before=1, after=1)
    rep = Report("drain", [r])
    assert rep.ok and rep.exit_code == 0
    r.check("b", False, "went wrong", before=ARN1, after=ARN2)
    assert not rep.ok and rep.exit_code == 1
    assert rep.failed_checks() == [("drain", r.checks[1])]
    doc = rep.to_json()
    assert doc["exit_code"] == 1 and doc["results"][0]["checks"][1] == {
        "name": "b", "ok": False, "detail": "went wrong", "before": ARN1, "after": ARN2}
    pre = ScenarioResult("stop")
    pre.fail(ScenarioAbort("job is not running", precondition=True))
    assert Report("stop", [pre]).exit_code == 3 and pre.status == "not-run"
    skipped = ScenarioResult("stop", skipped="drain failed")
    assert Report("all", [r, skipped]).exit_code == 1 and skipped.status == "skipped"


def test_ecs_sampler_records_statuses_and_errors():
    states = iter(["RUNNING", "RUNNING", RuntimeError("boom")] + ["STOPPED"] * 100)
    lock = threading.Lock()

    def describe(arn):
        with lock:
            v = next(states)
        if isinstance(v, Exception):
            raise v
        return v

    with EcsSampler(describe, ARN1, interval=0.01) as s:
        time.sleep(0.15)
    assert s.statuses[:3] == ["RUNNING", "RUNNING", "ERROR: RuntimeError"] and s.statuses[-1] == "STOPPED"
    assert not checks.check_never_left_running(s.statuses, ARN1).ok


# --- client-restart, task-exit, outage -------------------------------------------------------------
T0 = 1_700_000_100_000_000_000   # ns


def handle(arn):
    return {"Version": 1, "DriverState": base64.b64encode(json.dumps({"v": 1, "task_arn": arn}).encode()).decode()}


def event(type_, at, display="", **kw):
    e = {"Type": type_, "Time": at, "DisplayMessage": display, "Message": "", "Details": {}, "ExitCode": 0}
    e.update(kw)
    return e


def with_task(alloc, arn=ARN1, events=(), restarts=0, state="running"):
    alloc["TaskStates"] = {"http-server": {"State": state, "Restarts": restarts, "Events": list(events),
                                           "TaskHandle": handle(arn) if arn else None}}
    return alloc


STARTED = event("Started", T0, "Task started by client")


def test_kept_running_fails_on_an_exit_a_restart_or_a_stopped_allocation():
    before = with_task(stub(A1, N1), events=[STARTED])
    same = with_task(stub(A1, N1), events=[STARTED, event("Driver", T0 + 5, "monitoring degraded")])
    ok = checks.check_kept_running(before, same, "http-server", "outage")
    assert ok.ok and ok.name == "allocation still running (outage)"
    exited = with_task(stub(A1, N1), events=[STARTED, event("Terminated", T0 + 9, "Exit Code: 1",
                                                             Message="ECS task stopped outside Nomad: by hand")])
    bad = checks.check_kept_running(before, exited, "http-server", "outage")
    assert not bad.ok and "exited" in bad.detail and "by hand" in bad.detail
    restarted = with_task(stub(A1, N1), events=[STARTED], restarts=1)
    assert not checks.check_kept_running(before, restarted, "http-server", "x").ok
    failed = with_task(stub(A1, N1, client="failed"), events=[STARTED], state="dead")
    assert "run/failed" in checks.check_kept_running(before, failed, "http-server", "x").detail
    assert not checks.check_kept_running(before, None, "http-server", "x").ok


def test_exit_reported_needs_ecs_reason_exit_code_and_the_deadline():
    reason = "Stopped outside Nomad by ecsdemo"
    msg = f"ECS task stopped outside Nomad: {reason}"
    good = event("Terminated", T0 + 1_500_000_000, f'Exit Code: 1, Exit Message: "{msg}"', Message=msg, ExitCode=1,
                 Details={"exit_code": "1", "exit_message": msg})
    c = checks.check_exit_reported(good, reason, T0, budget_s=2.1)
    assert c.ok and c.after["exit_code"] == 1 and c.after["after_s"] == 1.5
    late = dict(good, Time=T0 + 9_000_000_000)
    assert not checks.check_exit_reported(late, reason, T0, 2.1).ok
    assert "more than the 2.1s allowed" in checks.check_exit_reported(late, reason, T0, 2.1).detail
    wrong = event("Terminated", T0 + 1, "Exit Code: 0", Message="task finished")
    assert "does not carry ECS's reason" in checks.check_exit_reported(wrong, reason, T0, 2.1).detail
    no_code = dict(good, ExitCode=None, Details={"exit_message": msg})
    assert not checks.check_exit_reported(no_code, reason, T0, 2.1).ok
    assert not checks.check_exit_reported(None, reason, T0, 2.1).ok
    # the event that counts is the first Terminated one since the snapshot
    events = [STARTED, event("Restarting", T0 + 3), good]
    assert checks.exit_event(checks.events_since({"TaskStates": {"t": {"Events": events}}}, "t", T0)) is good


def test_restart_in_place_and_a_new_task_on_the_same_version():
    before = with_task(stub(A1, N1), events=[STARTED])
    after = with_task(stub(A1, N1), ARN2, events=[STARTED], restarts=1)
    assert checks.check_restarted_in_place(before, after, "http-server").ok
    rescheduled = with_task(stub(A2, N2), ARN2)
    c = checks.check_restarted_in_place(before, rescheduled, "http-server")
    assert not c.ok and "rescheduled" in c.detail
    assert not checks.check_restarted_in_place(before, with_task(stub(A1, N1), ARN2), "http-server").ok
    assert checks.check_new_task_same_version(before, ARN1, after, ARN2, ecs_task(ARN2)).ok
    # a check that would pass on a stopped task must fail on one
    stopped = checks.check_new_task_same_version(before, ARN1, after, ARN2, ecs_task(ARN2, "STOPPED"))
    assert not stopped.ok and "STOPPED" in stopped.detail
    assert not checks.check_new_task_same_version(before, ARN1, after, ARN1, ecs_task(ARN1)).ok
    assert not checks.check_new_task_same_version(before, ARN1, after, None, None).ok
    newer = dict(after, JobVersion=1)
    assert "job version 1, not 0" in checks.check_new_task_same_version(before, ARN1, newer, ARN2,
                                                                        ecs_task(ARN2)).detail


def test_stopped_with_reason():
    assert checks.check_stopped_with_reason(ecs_task(ARN1, "STOPPED", reason="by me"), ARN1, "by me").ok
    assert not checks.check_stopped_with_reason(ecs_task(ARN1), ARN1, "by me").ok
    other = checks.check_stopped_with_reason(ecs_task(ARN1, "STOPPED", reason="Stopped by Nomad"), ARN1, "by me")
    assert not other.ok and "not ours" in other.detail


def test_handed_over_allocations_newest_first():
    running = with_task(stub(A2, N2, create=20), ARN1)
    drained = with_task(stub(A1, N1, desired="stop", client="complete", create=10, ModifyIndex=30), ARN1, state="dead")
    lost = with_task(stub("3" * 36, N2, desired="stop", client="lost", create=5, ModifyIndex=40), ARN1)
    stopped_own = with_task(stub("4" * 36, N1, desired="stop", client="complete", create=3, ModifyIndex=50), ARN2,
                            state="dead")
    found = checks.handed_over([running, drained, lost, stopped_own], A2, ARN1, "http-server")
    assert [a["ID"] for a in found] == ["3" * 36, A1]
    assert checks.handed_over([running], A2, ARN1, "http-server") == []


def test_drivers_turned_unhealthy_needs_every_client_and_a_readable_reason():
    ok = checks.check_drivers_turned_unhealthy({"c1": "no answer from http://127.0.0.1:5000 within 5s",
                                                "c2": "DescribeClusters failed: timeout"})
    assert ok.ok and "c1: no answer" in ok.detail
    stayed = checks.check_drivers_turned_unhealthy({"c1": "no answer", "c2": None})
    assert not stayed.ok and "stayed healthy on c2" in stayed.detail
    bare = checks.check_drivers_turned_unhealthy({"c1": "Unhealthy"})
    assert not bare.ok and "no readable reason" in bare.detail
    assert not checks.check_drivers_turned_unhealthy({}).ok


def test_drivers_healthy_again():
    assert checks.check_drivers_healthy([node(N1, "c1"), node(N2, "c2")]).ok
    sick = checks.check_drivers_healthy([node(N1, "c1"), node(N2, "c2", healthy=False)])
    assert not sick.ok and "c2" in sick.detail
    assert not checks.check_drivers_healthy([]).ok
