"""The scenarios' pure rules over real-shaped Nomad and ECS JSON (nomad-http-api.md sections 4-6)."""

from __future__ import annotations

import threading
import time

import pytest

from ecsdemo.nomad import supports_remote_tasks
from ecsdemo.scenarios import checks
from ecsdemo.scenarios.model import Report, ScenarioAbort, ScenarioResult
from ecsdemo.scenarios.waits import EcsSampler, wait_until

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
                                "HealthDescription": "Healthy" if healthy else "unhealthy", "UpdateTime": "2024-05-01T10:00:00+00:00"}}}


def ecs_task(arn, status="RUNNING", alloc=A1, job="nomad-ecs-demo", reason=None, td="nomad-remote-driver-demo:1"):
    t = {"taskArn": arn, "lastStatus": status, "desiredStatus": "STOPPED" if status == "STOPPED" else "RUNNING",
         "taskDefinitionArn": f"arn:aws:ecs:us-east-1:123456789012:task-definition/{td}",
         "startedBy": "nomad-" + alloc[:30],
         "tags": [{"key": "nomad:alloc_id", "value": alloc}, {"key": "nomad:job", "value": job}]}
    if reason:
        t["stoppedReason"] = reason
    return t


@pytest.mark.parametrize("text,ok", [("1.1.0", True), ("1.9.7", True), ("1.1.0-beta1", True), ("v1.4.3", True),
                                     ("1.0.18", False), ("1.10.0", False), ("2.0.0", False), ("", False), ("dev", False)])
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


def test_wait_until_returns_value_or_names_what_did_not_happen():
    calls = []

    def fetch(block):
        calls.append(block)
        return len(calls)

    assert wait_until("x", fetch, lambda v: v >= 3, timeout=5, explain=str, interval=0.01) == 3
    with pytest.raises(ScenarioAbort) as info:
        wait_until("no replacement allocation was placed", lambda b: "still 1", lambda v: False, timeout=0.2,
                   explain=lambda v: f"state: {v}", interval=0.05)
    assert str(info.value).startswith("no replacement allocation was placed within 0.2s; state: still 1")


def test_wait_until_gives_blocking_fetches_the_remaining_time():
    seen = []

    def fetch(block):
        seen.append(block)
        time.sleep(0.05)
        return None

    with pytest.raises(ScenarioAbort):
        wait_until("nothing", fetch, lambda v: False, timeout=0.3, explain=lambda v: "", interval=0.01)
    assert seen[0] > 0.25 and all(b <= 0.3 for b in seen) and seen == sorted(seen, reverse=True)


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
