"""The loop stages share: take, pass each stream's end on, time the work, put, stop on the event."""

from __future__ import annotations

import threading
import time

from pipeline.messages import EndOfStream
from pipeline.queues import BoundedQueue, OverflowPolicy, StreamCount
from pipeline.stages.base import QueueStage


class Doubler(QueueStage[int, int]):
    def process(self, item: int) -> int:
        time.sleep(0.001)
        if item < 0:
            raise ValueError(f"cannot double {item}")
        return 2 * item


def _stage(streams: int) -> tuple[Doubler, BoundedQueue[int | EndOfStream], BoundedQueue[int | EndOfStream], list[str]]:
    stop = threading.Event()
    inp: BoundedQueue[int | EndOfStream] = BoundedQueue("in", 100, OverflowPolicy.BLOCK, stop)
    out: BoundedQueue[int | EndOfStream] = BoundedQueue("out", 100, OverflowPolicy.BLOCK, stop)
    failures: list[str] = []

    def fail(name: str, exc: BaseException) -> None:
        failures.append(f"{name}: {exc}")

    stage = Doubler("doubler", inp, out, StreamCount(streams), stop, fail)
    return stage, inp, out, failures


def _drain(queue: BoundedQueue[int | EndOfStream]) -> list[int | EndOfStream]:
    items = []
    while (item := queue.get_nowait()) is not None:
        items.append(item)
    return items


def test_items_are_processed_in_order_ends_passed_on_and_the_stage_ends_with_its_streams() -> None:
    stage, inp, out, failures = _stage(streams=2)
    for i in range(5):
        inp.put(i)
    inp.put(EndOfStream("a", 5))
    inp.put(7)
    inp.put(EndOfStream("b", 1))
    stage.start()
    stage.join(5)
    assert not stage.is_alive(), "both streams ended: the stage ends"
    got = _drain(out)
    assert got[:5] == [0, 2, 4, 6, 8] and got[6] == 14
    assert [e.stream_id for e in got if isinstance(e, EndOfStream)] == ["a", "b"]
    assert stage.clock.items == 6 and stage.clock.busy_s > 0 and failures == []


def test_the_stop_event_ends_a_waiting_stage_and_a_failure_is_reported() -> None:
    stage, inp, _out, failures = _stage(streams=1)
    stage.start()
    time.sleep(0.2)
    assert stage.is_alive(), "nothing to take: it waits"
    stage.stop_event.set()
    stage.join(2)
    assert not stage.is_alive()
    stage, inp, _out, failures = _stage(streams=1)
    inp.put(-3)
    stage.start()
    stage.join(5)
    assert failures == ["doubler: cannot double -3"]
