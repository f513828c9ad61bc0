"""In-process units of the protocol layer: the task event bus and the hclog JSON formatter/handler."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

from driver import log
from driver.events import EventBus, TaskEvent


def ev(n: int) -> TaskEvent:
    return TaskEvent(task_id=f"t{n}", alloc_id="a", task_name="web", message=f"m{n}", annotations={"n": str(n)})


def test_event_bus_delivers_in_order_to_every_subscriber_and_from_threads():
    async def scenario():
        bus = EventBus()
        bus.publish(ev(0))  # nobody listening: dropped
        subs = [bus.subscribe(), bus.subscribe()]
        first = [asyncio.ensure_future(s.__anext__()) for s in subs]
        await asyncio.sleep(0)  # both subscriptions are registered once iteration starts
        assert bus.subscribers == 2
        bus.publish(ev(1))
        t = threading.Thread(target=lambda: bus.publish(ev(2)))
        t.start()
        t.join()
        got = [[(await f).message] for f in first]
        for i, s in enumerate(subs):
            got[i].append((await asyncio.wait_for(s.__anext__(), 2)).message)
        assert got == [["m1", "m2"], ["m1", "m2"]]
        for s in subs:
            await s.aclose()
        assert bus.subscribers == 0
    asyncio.run(scenario())


def test_event_bus_drops_the_oldest_when_a_subscriber_lags():
    async def scenario():
        bus = EventBus(maxsize=3)
        sub = bus.subscribe()
        pending = asyncio.ensure_future(sub.__anext__())
        await asyncio.sleep(0)
        for n in range(1, 7):
            bus.publish(ev(n))
        received = [(await pending).message]
        for _ in range(2):
            received.append((await sub.__anext__()).message)
        await sub.aclose()
        return received
    received = asyncio.run(scenario())
    assert received[-1] == "m6" and len(received) == 3 and received == sorted(received)


def test_hclog_formatter_shapes_lines_and_keeps_extras():
    record = logging.LogRecord("ecs.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    record.cluster = "demo"
    record.count = 3
    entry = json.loads(log.HclogJsonFormatter().format(record))
    assert entry["@level"] == "warn" and entry["@message"] == "hello world" and entry["@module"] == "ecs.test"
    assert entry["@timestamp"].endswith("Z") and len(entry["@timestamp"].split(".")[1]) == 7  # 6 digits + Z
    assert (entry["cluster"], entry["count"]) == ("demo", 3)
    assert log.level_name(log.TRACE) == "trace" and log.parse_level("WARNING") == logging.WARNING


def test_handler_swallows_write_errors_on_a_closed_stream(capsys):
    stream = io.StringIO()
    handler = log.SafeStreamHandler(stream)
    handler.setFormatter(log.HclogJsonFormatter())
    logger = logging.getLogger("ecs.closed-test")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        stream.close()
        logger.error("nobody is listening")  # must not raise, must not print a logging error
    finally:
        logger.removeHandler(handler)
    assert capsys.readouterr().err == ""
    handler.stream = io.StringIO()
    handler.emit(logging.LogRecord("ecs.x", logging.INFO, __file__, 1, "back", None, None))
    assert json.loads(handler.stream.getvalue())["@message"] == "back"
