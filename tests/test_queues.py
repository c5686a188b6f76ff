"""Bounded queues: both overflow policies, drop counters, concurrency, shutdown while blocked."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from pipeline.messages import EndOfStream
from pipeline.queues import BoundedQueue, FanIn, OverflowPolicy


@dataclass(frozen=True)
class Item:
    stream_id: str
    n: int


def make(policy: OverflowPolicy, size: int = 3) -> tuple[BoundedQueue[object], threading.Event]:
    stop = threading.Event()
    return BoundedQueue("q", size, policy, stop), stop


def test_drop_oldest_keeps_freshest_and_counts_per_stream() -> None:
    q, _ = make(OverflowPolicy.DROP_OLDEST, 3)
    for n in range(5):
        assert q.put(Item("a", n))
    q.put(Item("b", 99))
    got = [q.get_nowait() for _ in range(3)]
    assert [getattr(i, "n", None) for i in got] == [3, 4, 99]
    assert q.drops() == {"a": 3}
    assert q.high_water == 3


def test_drop_oldest_never_evicts_end_of_stream() -> None:
    q, _ = make(OverflowPolicy.DROP_OLDEST, 2)
    q.put(EndOfStream("a", 10))
    q.put(Item("b", 1))
    q.put(Item("b", 2))  # evicts b1, not the sentinel
    assert isinstance(q.get_nowait(), EndOfStream)
    assert q.get_nowait() == Item("b", 2)
    assert q.drops() == {"b": 1}


def test_join_waits_until_every_item_is_done_or_dropped() -> None:
    """A sender draining at shutdown: ``join`` returns once the consumer has finished what it took, not when the
    queue is merely empty; dropped items count as finished."""
    q, _ = make(OverflowPolicy.DROP_OLDEST, 2)
    for n in range(4):  # two dropped
        q.put(Item("a", n))
    assert not q.join(0.05)
    taken = [q.get(1.0), q.get(1.0)]
    assert len(q) == 0 and not q.join(0.05), "empty, but two items still in the consumer's hands"
    q.task_done()
    threading.Timer(0.1, q.task_done).start()
    started = time.monotonic()
    assert q.join(5.0)
    assert time.monotonic() - started >= 0.09
    assert [getattr(i, "n", None) for i in taken] == [2, 3] and q.drops() == {"a": 2}


def test_block_waits_for_room_and_loses_nothing() -> None:
    q, _ = make(OverflowPolicy.BLOCK, 2)
    assert q.put(Item("a", 0)) and q.put(Item("a", 1))
    assert not q.put(Item("a", 2), timeout=0.1)  # full: times out instead of dropping
    threading.Timer(0.1, q.get_nowait).start()
    assert q.put(Item("a", 2), timeout=2.0)
    assert q.drops() == {}
    assert [getattr(q.get_nowait(), "n", None) for _ in range(2)] == [1, 2]


@pytest.mark.parametrize("policy", list(OverflowPolicy))
def test_concurrent_producers_and_consumers(policy: OverflowPolicy) -> None:
    q, stop = make(policy, 4)
    producers, per_producer = 4, 500
    received: list[object] = []
    lock = threading.Lock()

    def produce(k: int) -> None:
        for n in range(per_producer):
            q.put(Item(f"s{k}", n))
        q.put(EndOfStream(f"s{k}", per_producer))

    def consume() -> None:
        while True:
            item = q.get(timeout=0.5)
            if item is None:
                return
            with lock:
                received.append(item)

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in consumers + threads:
        t.start()
    for t in threads + consumers:
        t.join(10)
    items = [i for i in received if isinstance(i, Item)]
    eos = [i for i in received if isinstance(i, EndOfStream)]
    assert len(eos) == producers
    dropped = sum(q.drops().values())
    assert len(items) + dropped == producers * per_producer
    assert len(set(items)) == len(items)  # nothing delivered twice
    if policy is OverflowPolicy.BLOCK:
        assert dropped == 0
    for k in range(producers):  # per-producer order survives
        ns = [i.n for i in items if i.stream_id == f"s{k}"]
        assert ns == sorted(ns)
    assert not stop.is_set()


def test_shutdown_unblocks_a_blocked_put_and_get() -> None:
    q, stop = make(OverflowPolicy.BLOCK, 1)
    q.put(Item("a", 0))
    results: dict[str, object] = {}

    def blocked_put() -> None:
        results["put"] = q.put(Item("a", 1))  # no timeout: waits until stop

    empty, stop2 = make(OverflowPolicy.BLOCK, 1)

    def blocked_get() -> None:
        results["get"] = empty.get(timeout=60.0)

    threads = [threading.Thread(target=blocked_put), threading.Thread(target=blocked_get)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert all(t.is_alive() for t in threads)
    t0 = time.monotonic()
    stop.set()
    stop2.set()
    q.wake()
    empty.wake()
    for t in threads:
        t.join(1.0)
    assert not any(t.is_alive() for t in threads)
    assert time.monotonic() - t0 < 0.5
    assert results == {"put": False, "get": None}


def test_fan_in_reads_every_queue_fairly() -> None:
    stop = threading.Event()
    ready = threading.Event()
    qa: BoundedQueue[object] = BoundedQueue("a", 10, OverflowPolicy.BLOCK, stop, ready)
    qb: BoundedQueue[object] = BoundedQueue("b", 10, OverflowPolicy.BLOCK, stop, ready)
    for n in range(3):
        qa.put(Item("a", n))
        qb.put(Item("b", n))
    fan = FanIn([qa, qb], ready)
    order = [getattr(fan.get(0.1), "stream_id", None) for _ in range(6)]
    assert order == ["a", "b", "a", "b", "a", "b"]
    t0 = time.monotonic()
    assert fan.get(0.2) is None
    assert 0.15 < time.monotonic() - t0 < 1.0
    threading.Timer(0.1, qb.put, args=(Item("b", 9),)).start()
    assert fan.get(2.0) == Item("b", 9)


def test_bad_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedQueue("q", 0, OverflowPolicy.BLOCK, threading.Event())
