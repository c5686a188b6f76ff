"""The infer thread with a scripted engine at the engine seam: which frames it keeps alive."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Container
from dataclasses import replace

import numpy as np
from test_sources import FakeEngine

from pipeline.messages import Frame, FrameResult, PreparedFrame, PreparedItem, ResultItem
from pipeline.queues import BoundedQueue, OverflowPolicy
from pipeline.stages.infer import InferStage


def _frame(stream_id: str, index: int) -> Frame:
    return Frame(stream_id, index, index * 40.0, 0.0, np.zeros((64, 96, 3), np.uint8))


def _run(reuses: Container[str]) -> tuple[bool, FrameResult | None]:
    """Camera ``a`` sends a frame, then camera ``b`` two; whether ``a``'s first picture is still alive once
    every result has been taken, and the result of a still frame of ``a`` sent after that."""
    stop = threading.Event()
    inp: BoundedQueue[PreparedItem] = BoundedQueue("prepared", 4, OverflowPolicy.BLOCK, stop)
    out: BoundedQueue[ResultItem] = BoundedQueue("results", 4, OverflowPolicy.BLOCK, stop)
    failures: list[BaseException] = []
    engine = FakeEngine()
    engine.info = replace(engine.info, max_batch=1)
    stage = InferStage(inp, out, 2, stop, lambda _n, exc: failures.append(exc), lambda: engine, reuses=reuses)
    stage.start()
    try:
        first = _frame("a", 0)
        picture = weakref.ref(first.image)
        for frame in (first, _frame("b", 0), _frame("b", 1)):
            inp.put(PreparedFrame(frame, frame.image))
            result = out.get(10.0)
            assert isinstance(result, FrameResult) and result.frame is frame, "each frame's result comes out"
        del first, frame, result
        gc.collect()
        alive = picture() is not None
        inp.put(PreparedFrame(_frame("a", 1), None, gated="reuse"))
        still = out.get(10.0)
        assert still is None or isinstance(still, FrameResult)
        return alive, still
    finally:
        stop.set()
        stage.join(10.0)
        assert not stage.is_alive() and not failures


def test_a_camera_without_motion_gating_keeps_no_frame_alive_in_the_infer_thread() -> None:
    alive, still = _run(reuses=())
    assert not alive, "the infer thread kept camera a's last frame after its result was published"
    assert still is not None and len(still.boxes) == 0, "with nothing kept, a still frame reuses no detections"


def test_a_motion_gated_camera_keeps_its_last_detections_for_still_frames() -> None:
    alive, still = _run(reuses={"a"})
    assert alive, "a gated camera's last result is kept for its still frames"
    assert still is not None and still.reused and len(still.boxes) == 1
    assert still.frame.frame_index == 1
