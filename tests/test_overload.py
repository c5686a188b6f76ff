"""Live cameras past capacity: latency is set by the model, not by queues, and every camera loses frames evenly."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from helpers import serve_rtsp, stop_server
from test_sources import FakeEngine

from engines.base import EngineInfo, ReadyDetections
from pipeline.config import build_config
from pipeline.report import RunReport
from pipeline.runner import Pipeline
from pipeline.schema import DetectionsMessage
from pipeline.subscriber import Subscriber

PASS_S = 0.1
"""The model's time for one batch: three cameras at 20 fps offer twice what it takes (3 frames a pass)."""
CAMERAS = 3
FPS = 20.0


class SlowEngine(FakeEngine):
    """A scripted engine whose every batch, of up to three frames, takes :data:`PASS_S`."""

    def __init__(self) -> None:
        super().__init__()
        self.info = EngineInfo("fake", "cpu", "fp32", "slow.pt", "detect", 64, {0: "person"}, max_batch=CAMERAS)

    def submit(self, inputs: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]]) -> ReadyDetections:
        time.sleep(PASS_S)
        return ReadyDetections(self.infer(list(inputs), list(shapes)))


def _collect(endpoint: str, until: float, out: list[tuple[float, str, float]]) -> None:
    with Subscriber(endpoint, ["detections."]) as sub:
        while time.time() < until:
            msg = sub.recv(0.1)
            if isinstance(msg, DetectionsMessage):
                out.append((time.time(), msg.stream_id, (msg.published_at - msg.captured_at) * 1000.0))


def _overloaded(endpoint: str, sources: list[dict[str, Any]]) -> tuple[list[tuple[float, str, float]], RunReport]:
    """Run the cameras into :class:`SlowEngine` for 10 s: what the subscriber got after 2 s of settling (when, which
    camera, capture→publish ms) and the run's report."""
    config = build_config(
        {
            "streams": [{"id": f"cam{i}", "source": source} for i, source in enumerate(sources)],
            "publish": {"endpoint": endpoint},
            "tracking": {"enabled": False},
        },
        "test",
    )
    engine = SlowEngine()
    pipeline = Pipeline(config, engine_factory=lambda _spec, _name: engine)
    got: list[tuple[float, str, float]] = []
    listener = threading.Thread(target=_collect, args=(endpoint, time.time() + 10.0, got))
    listener.start()
    pipeline.start()
    listener.join(30)
    pipeline.stop()
    report = pipeline.report()
    pipeline.close()
    assert report.failure is None
    assert got, "nothing published"
    return [g for g in got if g[0] > got[0][0] + 2.0], report


def _assert_bounded_and_even(steady: list[tuple[float, str, float]], report: RunReport) -> None:
    latency = np.array([ms for _, _, ms in steady])
    bound_ms = (2 * PASS_S + 1 / FPS) * 1000.0  # the frame waits for the running pass, then its own
    assert np.percentile(latency, 99) <= bound_ms + 100.0, f"p99 {np.percentile(latency, 99):.0f} ms"
    third = len(steady) // 3
    early, late = np.median(latency[:third]), np.median(latency[-third:])
    assert late <= early + 50.0, f"a backlog grows: median {early:.0f} ms, then {late:.0f} ms"
    per_camera = [sum(1 for _, sid, _ in steady if sid == f"cam{i}") for i in range(CAMERAS)]
    assert min(per_camera) >= 0.85 * max(per_camera), f"uneven: {per_camera}"
    offered = FPS * (steady[-1][0] - steady[0][0])
    assert all(n < 0.75 * offered for n in per_camera), "the model cannot keep up: frames must have been dropped"
    assert all(sum(s.drops.values()) > 0 for s in report.streams), "each camera lost its oldest frames"


def test_past_capacity_latency_stays_at_two_passes_and_drops_are_even(endpoint: str, tiny_video: Path) -> None:
    source = {"type": "file", "path": str(tiny_video), "realtime": True, "loop": True}
    _assert_bounded_and_even(*_overloaded(endpoint, [source] * CAMERAS))


def test_cameras_decoded_in_a_group_past_capacity_hand_over_only_the_frames_the_model_takes(
    endpoint: str, h264_video: Path
) -> None:
    """Real RTSP cameras in a decoding group keep their latest frame there: the pipeline asks for a frame when it
    can queue one, so it spends nothing on the frames it would drop, and the rest are counted as drops."""
    server, url = serve_rtsp(h264_video, "s3cret")
    try:
        sources = [
            {"type": "url", "url": f"{url[:-1]}{i}", "decode_process": True, "decode_group": "overload"}
            for i in range(CAMERAS)
        ]
        steady, report = _overloaded(endpoint, sources)
    finally:
        stop_server(server)
    _assert_bounded_and_even(steady, report)
    for stream in report.streams:
        assert stream.frames <= stream.published + 2 * CAMERAS, f"{stream.stream_id}: frames read that were dropped"
        assert sum(stream.drops.values()) >= 0.5 * stream.frames, f"{stream}: the frames let go of are counted"
