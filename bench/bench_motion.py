"""What motion gating saves: the same clip (still, busy, still) with gating off and on.

    python bench/bench_motion.py [--still 150] [--busy 90] [--device cpu]

Prints one JSON document: frames/s, frames the model saw, and the infer stage's busy time, per run, with the
ratios. The clip is made here from a generated scene (the still parts repeat one frame).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def run(clip: Path, device: str, motion: dict[str, Any] | None) -> dict[str, Any]:
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    stream: dict[str, Any] = {"id": "lot", "source": str(clip)}
    if motion is not None:
        stream["motion"] = motion
    config = build_config(
        {
            "streams": [stream],
            "model": {"path": "edgesight-det", "device": device},
            "publish": {"endpoint": _endpoint()},
            "tracking": {"enabled": False},
        },
        "bench",
    )
    pipeline = Pipeline(config)
    report = pipeline.run()
    gate = pipeline.motion_gates.get("lot")
    seen = report.frames_published - (gate.gated if gate else 0)
    return {
        "fps": round(report.frames_published / report.elapsed_s, 2),
        "frames": report.frames_published,
        "model_frames": seen,
        "infer_ms_per_model_frame": report.stage_ms.get("infer"),
        "preprocess_ms_per_frame": report.stage_ms.get("preprocess"),
        "elapsed_s": round(report.elapsed_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--still", type=int, default=150)
    parser.add_argument("--busy", type=int, default=90)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_motion import still_and_busy_clip

    from pipeline.cli import configure_threads

    configure_threads()
    with tempfile.TemporaryDirectory() as tmp:
        clip = still_and_busy_clip(Path(tmp), args.still, args.busy)
        run(clip, args.device, None)  # warm up (engine export, caches)
        off = run(clip, args.device, None)
        on = run(clip, args.device, {"keepalive_s": 2.0})
    print(
        json.dumps(
            {
                "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
                "clip": {"still_frames": 2 * args.still, "busy_frames": args.busy},
                "gating_off": off,
                "gating_on": on,
                "model_frames_ratio": round(on["model_frames"] / off["model_frames"], 3),
                "speedup": round(on["fps"] / off["fps"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
