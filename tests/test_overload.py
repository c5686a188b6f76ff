"""Live cameras past capacity: latency is set by the model, not by queues, and every camera loses frames evenly."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from test_sources import FakeEngine

from engines.base import EngineInfo, ReadyDetections
from pipeline.config import build_config
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


def test_past_capacity_latency_stays_at_two_passes_and_drops_are_even(endpoint: str, tiny_video: Path) -> None:
    source = {"type": "file", "path": str(tiny_video), "realtime": True, "loop": True}
    config = build_config(
        {
            "streams": [{"id": f"cam{i}", "source": source} for i in range(CAMERAS)],
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
    steady = [g for g in got if g[0] > got[0][0] + 2.0]  # after a 2 s settling
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
