"""What clips cost a camera: the CPU time per frame of keeping a clip ring, the camera's own packets (kept as the
demuxer reads them) against frames encoded here (libx264), on the same footage in one run.

    python bench/bench_clips.py [--video people1.mp4] [--frames 600]

Prints one JSON document: per mode, CPU milliseconds per frame spent on clips (the recorder's thread and the
packet copies), the clip it wrote and its size, and the ratio between the two.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.config import ClipsConfig, EventStoreConfig
from pipeline.media.clips import ClipRecorder
from pipeline.media.packets import PacketRing
from pipeline.media.store import EventStore
from pipeline.sources.pyav import PyAvFileSource

DEFAULT_VIDEO = Path(__file__).resolve().parents[2] / "shared" / "assets" / "videos" / "people1.mp4"


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def decode_only(video: Path, frames: int) -> float:
    """CPU seconds to decode ``frames`` frames and convert them to BGR (what every mode pays anyway)."""
    source = PyAvFileSource(video)
    source.open()
    started = cpu_s()
    for _ in range(frames):
        frame = source.read()
        assert frame is not None, "the video is shorter than --frames"
        to_bgr(frame)
    spent = cpu_s() - started
    source.release()
    return spent


def to_bgr(frame: Any) -> Any:
    import cv2

    image = frame.image
    return cv2.cvtColor(image, cv2.COLOR_YUV2BGR_I420) if frame.layout == "i420" else image


def one_mode(video: Path, frames: int, passthrough: bool, folder: Path) -> dict[str, Any]:
    store = EventStore(EventStoreConfig(dir=folder))
    store.record({"event_id": "e", "stream_id": "cam", "kind": "line_cross", "label": "person", "started_at": 0.0,
                  "score": 1.0})  # fmt: skip
    config = ClipsConfig(pre_s=5.0, post_s=5.0, max_s=600.0)
    ring = PacketRing(config.pre_s + 10.0) if passthrough else None
    source = PyAvFileSource(video, packets=ring)
    source.open()
    recorder = ClipRecorder("cam", config, store, live=False, camera=ring)
    started, wall = cpu_s(), time.perf_counter()
    for i in range(frames):
        frame = source.read()
        assert frame is not None, "the video is shorter than --frames"
        recorder.frame(functools.partial(to_bgr, frame), frame.pts_ms)
        if i == frames // 2:
            recorder.open("e", frame.pts_ms)
            recorder.close("e", frame.pts_ms)
    recorder.finish()
    spent, wall = cpu_s() - started, time.perf_counter() - wall
    source.release()
    stored = store.get("e")
    store.close()
    clip = folder / stored.clip if stored is not None and stored.clip else None
    return {
        "mode": "camera's packets" if passthrough else "encoded here (libx264)",
        "cpu_s": round(spent, 3),
        "wall_s": round(wall, 3),
        "clip_bytes": clip.stat().st_size if clip else None,
        "clip_s": round(stored.clip_end - stored.clip_start, 3)
        if stored and stored.clip_end is not None and stored.clip_start is not None
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=600)
    args = parser.parse_args()
    base = decode_only(args.video, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_mode(args.video, args.frames, mode, Path(tmp) / str(mode)) for mode in (True, False)]
    for run in runs:
        run["clips_cpu_ms_per_frame"] = round((run["cpu_s"] - base) * 1000.0 / args.frames, 3)
    own, encoded = runs
    print(
        json.dumps(
            {
                "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
                "video": args.video.name,
                "frames": args.frames,
                "decode_cpu_ms_per_frame": round(base * 1000.0 / args.frames, 3),
                "runs": runs,
                "encoded_over_own_cpu": round(
                    encoded["clips_cpu_ms_per_frame"] / max(own["clips_cpu_ms_per_frame"], 1e-3), 1
                ),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
