"""What edgesight itself costs per frame: many paced cameras, an engine that answers at once.

    python bench/bench_overhead.py [--cameras 64] [--boxes 10] [--seconds 10] [--fps 24]

With a GPU doing the model, one interpreter runs every camera's capture
thread, the batching, the results and the bus, so the pipeline's own work per
frame decides how many cameras a box holds. Here each camera hands over a
ready 192x108 frame at its rate (no decoding) and the engine returns the same
``--boxes`` boxes for every frame (no model): what is left is the pipeline.
Prints one JSON document: frames/s delivered against the cameras' rate, CPU
time per frame and cores used, measured over a steady window in this process.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


class InstantEngine:
    """Answers every frame at once with the same boxes."""

    def __init__(self, boxes: int) -> None:
        from engines.base import EngineInfo

        names = {i: str(i) for i in range(80)}
        self.info = EngineInfo("instant", "cpu", "fp32", "none", "detect", 64, names, max_batch=32)
        rng = np.random.default_rng(0)
        corners = rng.uniform(0, 50, (boxes, 2))
        rows = np.c_[corners, corners + 20, rng.uniform(0.3, 1, (boxes, 1)), rng.integers(0, 80, (boxes, 1))]
        self.rows = rows.astype(np.float32)

    def prepare(self, image: np.ndarray, layout: str = "bgr") -> np.ndarray:
        return image

    def submit(self, inputs: Sequence[Any], shapes: Sequence[tuple[int, int]]) -> Any:
        from engines.base import ReadyDetections

        return ReadyDetections([self.rows for _ in inputs])

    def infer(self, inputs: Sequence[Any], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        return [self.rows for _ in inputs]

    def warmup(self, formats: Sequence[Any] = ()) -> None:
        pass

    def close(self) -> None:
        pass


class PacedCamera:
    """A live source that hands over the same ready frame at ``fps``."""

    live = True
    description = "paced camera"

    def __init__(self, fps: float) -> None:
        self.image = np.zeros((108, 192, 3), np.uint8)
        self.interval = 1.0 / fps
        self.stopped = threading.Event()
        self.count = 0
        self.start: float | None = None

    def open(self) -> None:
        pass

    def read(self) -> Any:
        from pipeline.sources.base import RawFrame

        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.count * self.interval
        if due > time.monotonic():
            self.stopped.wait(due - time.monotonic())
        if self.stopped.is_set():
            return None
        self.count += 1
        return RawFrame(self.image, self.count * self.interval * 1000.0)

    def release(self) -> None:
        pass

    def interrupt(self) -> None:
        self.stopped.set()


def measure(cameras: int, boxes: int, seconds: float, fps: float) -> dict[str, Any]:
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    streams = [{"id": f"cam{i}", "source": f"rtsp://camera-{i}.invalid/stream"} for i in range(cameras)]
    config = build_config(
        {"streams": streams, "publish": {"endpoint": "tcp://127.0.0.1:0"}, "tracking": {"enabled": False}},
        "bench_overhead",
    )
    engine = InstantEngine(boxes)
    pipeline = Pipeline(config, source_factory=lambda _c: PacedCamera(fps), engine_factory=lambda _s, _e: engine)
    pipeline.start()
    try:
        time.sleep(3.0)  # every camera running
        frames0, cpu0, t0 = pipeline.progress().published, time.process_time(), time.monotonic()
        time.sleep(seconds)
        frames1, cpu1, t1 = pipeline.progress().published, time.process_time(), time.monotonic()
    finally:
        pipeline.stop()
        pipeline.close()
    frames, cpu = frames1 - frames0, cpu1 - cpu0
    return {
        "cameras": cameras,
        "boxes_per_frame": boxes,
        "frames_per_s": round(frames / (t1 - t0), 1),
        "cameras_rate": cameras * fps,
        "cpu_us_per_frame": round(cpu / max(frames, 1) * 1e6, 1),
        "cores_used": round(cpu / (t1 - t0), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=64)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=24.0)
    args = parser.parse_args()
    result = measure(args.cameras, args.boxes, args.seconds, args.fps)
    machine = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    print(json.dumps({"machine": machine, **result}, indent=1))


if __name__ == "__main__":
    main()
