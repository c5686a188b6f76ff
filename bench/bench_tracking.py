"""What tracking, lines, zones and events cost: edgesight on a generated scene with them off and on.

    python bench/bench_tracking.py [--frames 600] [--seed 31337] [--device cpu]

Each configuration runs in this process on the same decoded video (written
first). Prints one JSON document: frames/s, the publish stage's ms per frame
(tracking and analytics run there), and the analytics alone per frame, from
a replay of the published detections through a fresh tracker.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run(video: Path, device: str, analytics: bool) -> dict[str, Any]:
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    stream: dict[str, Any] = {"id": "s", "source": str(video)}
    if analytics:
        stream["lines"] = [{"name": "gate", "points": [[0.5, 0], [0.5, 1]]}]
        stream["zones"] = [{"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1], [0.1, 1]]}]
    config = build_config(
        {
            "streams": [stream],
            "model": {"path": "edgesight-det", "device": device},
            "publish": {"endpoint": _endpoint()},
            "tracking": {"enabled": analytics},
        },
        "bench",
    )
    report = Pipeline(config).run()
    return {
        "fps": round(report.frames_published / report.elapsed_s, 2),
        "publish_ms_per_frame": report.stage_ms.get("publish"),
        "stage_ms": report.stage_ms,
    }


def analytics_alone(video: Path, device: str) -> dict[str, float]:
    """Detections computed once (threshold as with tracking on), then tracker + line + zone timed alone."""
    import cv2

    from engines.base import ModelSpec
    from engines.registry import load_engine
    from pipeline.analytics.stream import StreamAnalytics
    from pipeline.analytics.tracking import TRACKER_LOW_CONF
    from pipeline.config import EventsConfig, StreamConfig, TrackingConfig
    from pipeline.messages import Frame, FrameResult

    engine = load_engine(ModelSpec("edgesight-det", conf=TRACKER_LOW_CONF, device=device), "auto")  # type: ignore[arg-type]
    cap = cv2.VideoCapture(str(video))
    frames: list[FrameResult] = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        rows = engine.infer([engine.prepare(image)], [image.shape[:2]])[0]
        frames.append(FrameResult(Frame("s", len(frames), len(frames) * 33.3, 0.0, image), rows, engine.info.names))
    stream = StreamConfig(
        id="s",
        source=str(video),
        lines=[{"name": "gate", "points": [[0.5, 0], [0.5, 1]]}],
        zones=[{"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1], [0.1, 1]]}],
    )
    analytics = StreamAnalytics(stream, TrackingConfig(), EventsConfig(), 0.25)
    t0 = time.perf_counter()
    for result in frames:
        analytics.process(result)
    elapsed = time.perf_counter() - t0
    boxes = sum(len(r) for r in frames) / max(1, len(frames))
    return {"ms_per_frame": round(1000 * elapsed / len(frames), 3), "boxes_per_frame": round(boxes, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = ap.parse_args()
    from pipeline.cli import configure_threads
    from pipeline.synth.writer import write_scene

    configure_threads()
    with tempfile.TemporaryDirectory() as tmp:
        video = write_scene(Path(tmp), args.seed, args.frames) / "scene.mp4"
        out = {
            "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            "scene": {"seed": args.seed, "frames": args.frames},
            "detections_only": run(video, args.device, analytics=False),
            "tracking_lines_zones_events": run(video, args.device, analytics=True),
            "analytics_alone": analytics_alone(video, args.device),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
