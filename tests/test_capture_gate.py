"""The capture gate: a graph capture waits for GPU work in flight and holds new work until it ends."""

from __future__ import annotations

import threading
import time

from engines.capture_gate import CaptureGate


def test_a_capture_waits_for_work_in_flight_and_holds_new_work() -> None:
    gate = CaptureGate()
    order: list[str] = []
    working, captured = threading.Event(), threading.Event()
    release_work = threading.Event()

    def decoder() -> None:
        with gate.work():
            order.append("work 1 starts")
            working.set()
            release_work.wait(5)
            order.append("work 1 ends")

    def engine() -> None:
        working.wait(5)
        with gate.capture():
            order.append("capture")
            captured.set()
            time.sleep(0.05)
            order.append("capture ends")

    threads = [threading.Thread(target=decoder), threading.Thread(target=engine)]
    for t in threads:
        t.start()
    working.wait(5)
    time.sleep(0.1)
    assert not captured.is_set(), "the capture waits for the work in flight"
    release_work.set()
    assert captured.wait(5)
    with gate.work():  # new work waits for the capture to end
        order.append("work 2")
    for t in threads:
        t.join(5)
    assert order == ["work 1 starts", "work 1 ends", "capture", "capture ends", "work 2"]


def test_work_alone_is_never_held() -> None:
    gate = CaptureGate()
    done = []
    for i in range(100):
        with gate.work(), gate.work():  # shared: nested and concurrent work do not wait for each other
            done.append(i)
    assert len(done) == 100
