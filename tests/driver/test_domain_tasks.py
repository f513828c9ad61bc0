"""The lifecycle domain (driver.store, driver.handle, driver.state, driver.monitor, driver.aws) against the real moto
server process."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import msgpack
import pytest

from driver.aws import EcsApi, EcsTarget
from driver.handle import (
    FORMER_OWNERS_TAG,
    OWNER_SINCE_TAG,
    OWNER_TAG,
    Ownership,
    TaskInfo,
    owner_digest,
    owner_mark,
)
from driver.state import DriverState, DriverStateError
from driver.store import (
    DETACH_SIGNAL,
    StartError,
    StopTimeout,
    TaskNotFound,
    TaskStore,
    _failure_error,
    client_token,
)
from tests.support import faultproxy
from tests.support.plugin_calls import FifoReader, json_v1_state, reference_state

ALLOC = "5b0f4c4e-6f0a-4c5b-9a9e-0123456789ab"
POLL = 0.1


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []

    def __call__(self, handle, message, annotations):
        self.events.append((handle.task_id, message, annotations))

    def messages(self, task_id=None) -> list[str]:
        return [m for t, m, _ in self.events if task_id is None or t == task_id]


def info(n: int = 1, alloc: str = ALLOC, stdout: str = "") -> TaskInfo:
    return TaskInfo(task_id=f"{alloc}/http-server/{n:08x}", name="http-server", alloc_id=alloc,
                    job="nomad-ecs-demo", group="ecs-remote-task-demo", stdout_path=stdout)


def run(world, body, poll=POLL):
    """Run `body(store, recorder)` in a fresh event loop with its own task store, then close it."""
    async def main():
        ecs = EcsApi(EcsTarget(world.cluster, world.aws.region, world.aws.url), max_attempts=2)
        rec = Recorder()
        store = TaskStore(ecs, rec, poll_interval=poll)
        try:
            return await asyncio.wait_for(body(store, rec), 30)
        finally:
            await store.close()
            ecs.close()
    return asyncio.run(main())


def test_start_runs_one_tagged_task_and_stop_waits_for_stopped(world, tmp_path):
    fifo = FifoReader(str(tmp_path / "stdout.fifo"))

    async def body(store, rec):
        h = await store.start(info(stdout=fifo.path), world.task_config_bytes())
        again = await store.start(info(stdout=fifo.path), world.task_config_bytes())  # a retried StartTask
        assert again is h
        await asyncio.sleep(POLL * 3)
        await store.stop(h.task_id, timeout=5, signal="SIGTERM")
        result = await store.wait(h.task_id)
        await store.destroy(h.task_id, force=True)
        await store.destroy(h.task_id, force=True)  # idempotent
        return h, result, rec

    h, result, rec = run(world, body)
    tasks = world.all_tasks()
    assert len(tasks) == 1, "a retried StartTask must not launch a second ECS task"
    t = tasks[0]
    assert t["taskArn"] == h.arn and t["lastStatus"] == "STOPPED"
    assert t["stoppedReason"] == f"Stopped by Nomad: allocation {ALLOC} task http-server"
    assert t["startedBy"] == "nomad-" + ALLOC[:30] and len(t["startedBy"]) <= 36
    tags = {x["key"]: x["value"] for x in t["tags"]}
    since = tags.pop("nomad:owner_since")
    assert tags == {"nomad:alloc_id": ALLOC, "nomad:job": "nomad-ecs-demo", "nomad:group": "ecs-remote-task-demo",
                    "nomad:task": "http-server", OWNER_TAG: h.task_id}
    assert abs((datetime.fromisoformat(since.replace("Z", "+00:00")) - h.state.started_at).total_seconds()) < 60
    assert (result.exit_code, result.err) == (0, None)
    state = msgpack.unpackb(h.state.encode())
    assert state["v"] == 2 and state["ARN"] == h.arn and state["cluster"] == world.cluster
    assert state["started_at"].endswith("Z") and state["region"] == world.aws.region and state["task_id"] == h.task_id
    out = fifo.read()
    assert f"client is remotely monitoring ECS task: {h.arn} with status RUNNING" in out
    assert "RUNNING -> STOPPED" in out
    msgs = rec.messages()
    assert msgs[0] == "Started ECS task" and "Stop requested: stopping ECS task" in msgs
    assert any(m.startswith("ECS task stopped: Stopped by Nomad") for m in msgs)
    fifo.close()


def test_client_token_is_stable_and_short():
    tid = f"{ALLOC}/" + "x" * 200 + "/0badcafe"
    assert client_token(tid) == client_token(tid) and len(client_token(tid)) <= 64
    assert client_token(tid).isascii() and client_token(tid) != client_token(tid + "1")


def test_task_stopped_outside_nomad_ends_wait_with_ecs_reason(world):
    async def body(store, rec):
        h = await store.start(info(), world.task_config_bytes())
        await asyncio.to_thread(world.ecs.stop_task, cluster=world.cluster, task=h.arn, reason="Spot interruption")
        waiters = await asyncio.gather(store.wait(h.task_id), store.wait(h.task_id))  # several waiters at once
        late = await store.wait(h.task_id)  # returns at once for a finished task
        return waiters + [late], rec

    results, rec = run(world, body)
    for r in results:
        assert r.exit_code == 1 and "Spot interruption" in r.err
    assert any("Spot interruption" in m for m in rec.messages())


def test_detach_leaves_ecs_task_running_and_destroy_does_not_stop_it(world):
    async def body(store, rec):
        h = await store.start(info(), world.task_config_bytes())
        await store.stop(h.task_id, timeout=5, signal=DETACH_SIGNAL)
        r = await store.wait(h.task_id)
        await store.destroy(h.task_id, force=True)
        await asyncio.sleep(POLL * 3)
        return h, r, rec

    h, r, rec = run(world, body)
    assert (r.exit_code, r.err) == (0, None)
    assert world.describe(h.arn)["lastStatus"] == "RUNNING"
    assert len(world.all_tasks()) == 1
    assert any(m.startswith("Detached") for m in rec.messages())


def test_recover_from_driver_state_alone_on_a_new_store(world):
    async def first(store, rec):
        h = await store.start(info(1), world.task_config_bytes())
        return h.state.encode()

    blob = run(world, first)  # the store closes: plugin shutdown must not stop the task

    async def second(store, rec):
        new = info(2, alloc="99999999-0000-0000-0000-000000000000")
        h = await store.recover(new, blob)
        again = await store.recover(new, blob)  # same id twice: no-op
        assert again is h
        other = await store.recover(info(3), blob)  # a new id for the same ARN is a new entry
        assert other is not h and other.arn == h.arn
        await asyncio.sleep(POLL * 3)
        assert h.last_status == "RUNNING" and other.last_status == "RUNNING"
        return h, rec

    h, rec = run(world, second)
    assert world.describe(h.arn)["lastStatus"] == "RUNNING"
    assert len(world.all_tasks()) == 1
    assert "Recovered ECS task" in rec.messages()


def test_recover_of_a_task_ecs_does_not_know_reports_missing(world):
    state = DriverState(cluster=world.cluster, region="us-east-1",
                        task_arn=f"arn:aws:ecs:us-east-1:123456789012:task/{world.cluster}/deadbeef",
                        started_at=datetime.now(timezone.utc))

    async def body(store, rec):
        h = await store.recover(info(), state.encode())
        r = await store.wait(h.task_id)
        await store.stop(h.task_id, 1, "SIGTERM")  # already finished: fine
        return r

    r = run(world, body)
    assert r.exit_code == 1 and "MISSING" in r.err


@pytest.mark.parametrize("blob,fragment", [
    (b"", "no driver state"),
    (b"\xc1junk", "neither this driver's msgpack or JSON state nor the reference driver's"),
    (b"\x81\xa3ARN\xa1x", "task ARN 'x'"),  # the reference driver's form with a bad ARN
    (msgpack.packb({"v": 3, "ARN": "arn:aws:ecs:r:1:task/c/x", "cluster": "c"}), "version 3"),
    (msgpack.packb({"TaskConfig": {}}), "no ECS task ARN"),
    (msgpack.packb([1]), "msgpack map"),
    (b'{"v": 2, "cluster": "c", "task_arn": "arn:aws:ecs:r:1:task/c/x"}', "version 2"),
    (b'{"v": 1, "cluster": "", "task_arn": "arn:aws:ecs:r:1:task/c/x"}', "no cluster"),
    (b'{"v": 1, "cluster": "c", "task_arn": "nope"}', "task ARN"),
    (b'{"v": 1, "cluster": "c"', "not JSON"),
    (b'[1]', "neither"),  # not JSON's first byte: read as msgpack (the fixint 91, then extra data)
])
def test_driver_state_decode_errors_are_clear(blob, fragment):
    with pytest.raises(DriverStateError, match=fragment):
        DriverState.decode(blob)


def test_unknown_ids_stop_and_destroy_succeed_wait_is_not_found(world):
    async def body(store, rec):
        await store.stop("nope", 1, "SIGTERM")
        await store.stop("nope", 1, DETACH_SIGNAL)
        await store.destroy("nope", True)
        with pytest.raises(TaskNotFound):
            await store.wait("nope")
        return True

    assert run(world, body)


def test_bad_config_and_runtask_failures_are_start_errors(world):
    async def body(store, rec):
        with pytest.raises(StartError) as bad:
            await store.start(info(1), world.task_config_bytes(launch_type="fargate-spot"))
        with pytest.raises(StartError) as missing_def:
            await store.start(info(2), world.task_config_bytes(task_definition="no-such-family:7"))
        return bad.value, missing_def.value

    bad, missing_def = run(world, body)
    assert not bad.recoverable and "task.launch_type" in str(bad) and "FARGATE, EC2, EXTERNAL" in str(bad)
    assert "RunTask" in str(missing_def)
    assert world.all_tasks() == []


def test_stop_times_out_when_ecs_never_reports_stopped(world, moto_url):
    # ECS slow to stop: the store talks through a proxy whose DescribeTasks answers always say RUNNING.
    with faultproxy.FaultProxy(moto_url) as proxy:
        async def body(store, rec):
            h = await store.start(info(), world.task_config_bytes())
            proxy.rewrite_status("RUNNING")
            with pytest.raises(StopTimeout, match="timed out"):
                await store.stop(h.task_id, timeout=0.5, signal="SIGINT")
            proxy.rewrite_status(None)
            return await store.wait(h.task_id)

        async def main():
            ecs = EcsApi(EcsTarget(world.cluster, world.aws.region, proxy.url), max_attempts=2)
            store = TaskStore(ecs, Recorder(), poll_interval=POLL)
            try:
                return await asyncio.wait_for(body(store, None), 30)
            finally:
                await store.close()
                ecs.close()
        r = asyncio.run(main())
    assert r.exit_code == 0


@pytest.mark.slow
def test_monitor_batches_describe_calls(world):
    arns = world.run_direct(150)

    async def body(store, rec):
        blob = lambda a: DriverState(world.cluster, "us-east-1", a,  # noqa: E731
                                     datetime.now(timezone.utc)).encode()
        for i, arn in enumerate(arns):
            await store.recover(info(i), blob(arn))
        await store.recover(info(999), blob(arns[0]))  # a second entry for one ARN costs nothing extra
        # each RecoverTask's own DescribeTasks (the ownership tags) is the task's first observation:
        # recovering 151 tasks asks for no monitor cycle (and none is timed: poll 60 s)
        recovered = [store.get(info(i).task_id).last_status for i in range(150)]
        recovery_cycles = store.monitor.cycles
        await store.monitor.cycle()
        return recovery_cycles, store.monitor.cycles - recovery_cycles, store.monitor.describe_calls, recovered, \
            [store.get(info(i).task_id).last_status for i in range(150)]

    recovery_cycles, cycles, calls, recovered, statuses = run(world, body, poll=60)
    assert recovery_cycles == 0 and set(recovered) == {"RUNNING"}
    assert cycles == 1 and calls == 2  # 150 distinct ARNs: ceil(150/100)
    assert set(statuses) == {"RUNNING"}


def test_concurrent_starts_with_one_task_id_run_one_ecs_task(world):
    async def body(store, rec):
        a, b = await asyncio.gather(store.start(info(), world.task_config_bytes()),
                                    store.start(info(), world.task_config_bytes()))
        return a is b

    assert run(world, body)
    assert len(world.all_tasks()) == 1


@pytest.mark.parametrize("failures,recoverable", [
    ([{"reason": "RESOURCE:MEMORY"}], True),
    ([{"reason": "Capacity is unavailable at this time. Please try again later or in a different AZ"}], True),
    ([{"reason": "AGENT"}], True),
    ([{"reason": "MISSING", "arn": "arn:aws:ecs:us-east-1:1:container-instance/x"}], False),
    ([{"reason": "INACTIVE", "detail": "task definition is inactive"}], False),
    ([], True),
])
def test_runtask_failures_are_classified(failures, recoverable):
    err = _failure_error(failures)
    assert err.recoverable is recoverable and str(err).startswith("ECS RunTask")
    for f in failures:
        assert f["reason"] in str(err)


# --- driver state forms and the ownership tags (no AWS) ------------------------------------------

def test_driver_state_v2_is_msgpack_with_the_reference_drivers_arn_key_and_round_trips():
    arn = "arn:aws:ecs:us-west-2:123456789012:task/c/0123"
    state = DriverState(cluster="c", region="us-west-2", task_arn=arn, alloc_id="a", task_name="t",
                        started_at=datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc), task_id="a/t/1")
    blob = state.encode()
    doc = msgpack.unpackb(blob)
    assert doc["ARN"] == arn and doc["v"] == 2 and doc["started_at"] == "2026-01-02T03:04:05.600000Z"
    # what Nomad's e2e suite (and the reference driver) decode: {ARN string}, strings as classic raw
    assert msgpack.unpackb(blob, raw=True)[b"ARN"] == arn.encode()
    assert b"\xd9" not in blob  # no str8: every Go msgpack decoder reads it
    assert DriverState.decode(blob) == state


def test_driver_state_json_v1_and_reference_forms_decode():
    arn = "arn:aws:ecs:us-east-1:123456789012:task/c/0123"
    old = DriverState.decode(json_v1_state(arn, "c", None, "alloc", "web-task"), cluster="ignored")
    assert (old.form, old.cluster, old.region, old.task_arn, old.alloc_id, old.task_name) == \
        ("json-v1", "c", None, arn, "alloc", "web-task")
    assert old.started_at == datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)
    when = datetime(2025, 7, 1, 12, 0, 1, 5000, tzinfo=timezone.utc)
    ref = DriverState.decode(reference_state(arn, when, "alloc/http-server/1", "alloc"), cluster="demo",
                             region="eu-west-1")
    assert (ref.form, ref.cluster, ref.region, ref.task_arn, ref.container, ref.task_id, ref.alloc_id) == \
        ("reference", "demo", "eu-west-1", arn, "web", "alloc/http-server/1", "alloc")
    assert ref.started_at == when
    with pytest.raises(DriverStateError, match="plugin config has no cluster"):
        DriverState.decode(reference_state(arn, when, "x", "y"))


def test_ownership_claims_keep_former_owners_and_unsafe_ids_become_digests():
    a, b, c = (f"{x * 8}-0000-0000-0000-000000000000/http-server/0000000{n}" for n, x in enumerate("abc"))
    now = datetime(2026, 12, 1, 21, 0, tzinfo=timezone.utc)
    since = "2026-12-01T21:00:00.000000Z"
    fresh = Ownership(None).claimed_by(a, now)
    assert fresh == {OWNER_TAG: a, OWNER_SINCE_TAG: since}
    after_b = Ownership(a).claimed_by(b, now)
    assert after_b == {OWNER_TAG: b, FORMER_OWNERS_TAG: owner_digest(a), OWNER_SINCE_TAG: since}
    tags = Ownership(b, tuple(after_b[FORMER_OWNERS_TAG].split()))
    assert tags.owned_by(b) and tags.handed_over_by(a) and not tags.handed_over_by(c) and not tags.owned_by(a)
    # the owner's re-claim changes nothing but the time
    assert Ownership(b, (owner_digest(a),)).claimed_by(b, now) == {OWNER_TAG: b, OWNER_SINCE_TAG: since}
    former = tuple(owner_digest(str(i)) for i in range(40))
    capped = Ownership(b, former).claimed_by(c)[FORMER_OWNERS_TAG]
    assert len(capped) <= 256 and capped.endswith(owner_digest(b))  # newest kept, oldest dropped
    weird = "alloc/task with \u00e9 and !?*/1"
    assert owner_mark(weird).startswith("sha256:") and owner_mark(weird) == owner_mark(weird)
    assert owner_mark(a) == a
    desc = {"tags": [{"key": OWNER_TAG, "value": b}, {"key": FORMER_OWNERS_TAG, "value": owner_digest(a)},
                     {"key": OWNER_SINCE_TAG, "value": since}]}
    assert Ownership.of(desc) == Ownership(b, (owner_digest(a),), now)


@pytest.mark.slow
def test_a_recovery_that_could_not_read_the_tags_yields_to_a_later_claim(world, moto_url):
    """B recovers while ECS is unreachable; C recovers (and claims) after that; when B can read the tags
    it sees a claim newer than its recovery and becomes a bystander instead of taking the task back."""
    with faultproxy.FaultProxy(moto_url) as proxy:
        async def main():
            direct = EcsApi(EcsTarget(world.cluster, world.aws.region, world.aws.url), max_attempts=2)
            blocked = EcsApi(EcsTarget(world.cluster, world.aws.region, proxy.url), max_attempts=1)
            ma, mb, mc = (TaskStore(api, Recorder(), poll_interval=POLL) for api in (direct, blocked, direct))
            try:
                a = await ma.start(info(1), world.task_config_bytes())
                blob = a.state.encode()
                proxy.fault("refuse")
                b = await mb.recover(info(2, alloc="bbbbbbbb-0000-0000-0000-000000000000"), blob)
                assert b.owner is None
                await asyncio.sleep(0.05)
                c = await mc.recover(info(3, alloc="cccccccc-0000-0000-0000-000000000000"), blob)
                assert c.owner is True
                proxy.fault(None)
                for _ in range(100):
                    if b.owner is not None:
                        break
                    await asyncio.sleep(0.05)
                await mb.stop(b.task_id, timeout=2, signal="SIGINT")  # a bystander's stop: detach only
                return a, b, c
            finally:
                for m in (ma, mb, mc):
                    await m.close()
                direct.close()
                blocked.close()
        a, b, c = asyncio.run(main())
    assert (b.owner, b.owned_by, b.detached) == (False, c.task_id, True)
    tags = {t["key"]: t["value"] for t in world.describe_tags(a.arn)}
    assert tags[OWNER_TAG] == c.task_id
    assert world.describe(a.arn)["lastStatus"] == "RUNNING"


def test_an_answer_without_its_tags_is_not_taken_for_an_unowned_task(world, moto_url):
    """A tracks its task; B takes it over. A's re-reads of the tags get DescribeTasks answers without
    their `tags` key (moto's, when another DescribeTasks without TAGS runs at the same time): A must not
    take the task back, and its forced destroy must not stop it."""
    with faultproxy.FaultProxy(moto_url) as proxy:
        async def main():
            direct = EcsApi(EcsTarget(world.cluster, world.aws.region, world.aws.url), max_attempts=2)
            tagless = EcsApi(EcsTarget(world.cluster, world.aws.region, proxy.url), max_attempts=2)
            ma, mb = (TaskStore(api, Recorder(), poll_interval=POLL) for api in (tagless, direct))
            async def body():
                a = await ma.start(info(1), world.task_config_bytes())
                b = await mb.recover(info(2, alloc="bbbbbbbb-0000-0000-0000-000000000000"), a.state.encode())
                proxy.drop_tags(True)
                assert await ma.recover(info(1), a.state.encode()) is a  # still tracked: re-reads the tags
                owner_after_recover = a.owner
                await ma.destroy(a.task_id, force=True)
                return a, b, owner_after_recover
            try:
                return await asyncio.wait_for(body(), 30)
            finally:
                for m in (ma, mb):
                    await m.close()
                direct.close()
                tagless.close()
        a, b, owner_after_recover = asyncio.run(main())
    assert proxy.count("ListTagsForResource") >= 1
    assert (owner_after_recover, a.owned_by, a.detached) == (False, b.task_id, True)
    tags = {t["key"]: t["value"] for t in world.describe_tags(a.arn)}
    assert tags[OWNER_TAG] == b.task_id
    assert world.describe(a.arn)["lastStatus"] == "RUNNING"
