"""Results go to sinks: one failing sink is logged and counted, the others and the run go on; the bus is essential."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.messages import Frame, FrameResult
from pipeline.sinks import Published, ResultSink, SinkSet, StreamEnding


class Broken(ResultSink):
    """Fails on every call, as a full disk would."""

    def __init__(self, name: str, essential: bool = False) -> None:
        self.name = name
        self.essential = essential

    def on_result(self, published: Published) -> None:
        raise OSError("No space left on device")

    def on_stream_end(self, ending: StreamEnding) -> None:
        raise OSError("No space left on device")


class Seen(ResultSink):
    name = "seen"

    def __init__(self) -> None:
        self.results: list[Published] = []
        self.ended: list[str] = []

    def on_result(self, published: Published) -> None:
        self.results.append(published)

    def on_stream_end(self, ending: StreamEnding) -> None:
        self.ended.append(ending.stream_id)


def published(result: FrameResult) -> Published:
    return Published(result, result)


def test_a_failing_sink_is_counted_and_the_next_one_still_gets_every_call(
    caplog: pytest.LogCaptureFixture, some_result: FrameResult
) -> None:
    seen = Seen()
    sinks = SinkSet([Broken("recording"), seen])
    with caplog.at_level(logging.WARNING, logger="pipeline.sinks.base"):
        for _ in range(3):
            sinks.on_result(published(some_result))
        sinks.on_stream_end(StreamEnding("cam"))
    assert len(seen.results) == 3 and seen.ended == ["cam"]
    assert sinks.failures == {"recording": 4, "seen": 0}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "sink 'recording' failed" in warnings[0].getMessage()


def test_an_essential_sink_s_failure_is_not_swallowed(some_result: FrameResult) -> None:
    seen = Seen()
    sinks = SinkSet([Broken("bus", essential=True), seen])
    with pytest.raises(OSError, match="No space"):
        sinks.on_result(published(some_result))
    assert not seen.results


class BrokenRecording:
    """A recording (``Pipeline(sink=…)``) whose disk is full."""

    def __init__(self) -> None:
        self.writes = 0
        self.closed = False

    def write(self, result: FrameResult, track_ids: np.ndarray | None = None) -> None:
        self.writes += 1
        raise OSError("No space left on device")

    def close(self) -> None:
        self.closed = True


def test_a_recording_that_fails_costs_no_published_frame(tiny_video: Path, arch_weights: Path, endpoint: str) -> None:
    """A real run: every frame reaches the bus, the recording's failures are counted in the report."""
    recording = BrokenRecording()
    config = config_for(
        endpoint,
        [{"id": "cam", "source": str(tiny_video)}],
        {"path": str(arch_weights), "device": "cpu", "imgsz": 160},
        tracking={"enabled": True},
    )
    got = run_and_collect(config, sink=recording)
    assert got.report is not None and got.report.ok
    frames = got.report.streams[0].frames
    assert frames > 0 and [m.seq for m in got.detections("cam")] == list(range(frames))
    assert recording.writes == frames and recording.closed
    assert got.report.sink_failures == {"recording": frames}
    assert [s.event for s in got.statuses("cam")] == ["start", "eos"]


@pytest.fixture
def some_result() -> FrameResult:
    frame = Frame("cam", 0, 0.0, 1000.0, np.full((120, 160, 3), 90, np.uint8))
    return FrameResult(frame, np.array([[1.0, 2.0, 30.0, 40.0, 0.9, 0.0]], np.float32), {0: "person"})
