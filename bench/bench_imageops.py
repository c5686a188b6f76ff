"""What each image operation costs per frame (CPU, OpenCV), at 640x360 and 1920x1080.

    python bench/bench_imageops.py [--frames 60] [--video people1_1080p.mp4]

Prints one JSON document: milliseconds per frame for each operation alone, and for a typical chain
(undistort, rotate, crop, CLAHE, gamma). Frames come from the video when given, else from a generated scene.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

OPS = [
    {"op": "crop", "x": 0.1, "y": 0.1, "width": 0.8, "height": 0.8},
    {"op": "rotate", "degrees": 90},
    {"op": "flip", "axis": "horizontal"},
    {"op": "resize", "width": 960},
    {"op": "undistort", "calibration": "LENS"},
    {"op": "clahe"},
    {"op": "gamma", "value": 1.8},
    {"op": "denoise"},
    {"op": "grayscale"},
]


def frames_from(video: Path | None, count: int) -> list[np.ndarray]:
    if video is None:
        from pipeline.synth.writer import write_scene

        video = write_scene(Path(tempfile.mkdtemp()) / "scene", 7, count, 1920, 1080) / "scene.mp4"
    cap = cv2.VideoCapture(str(video))
    out = []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    return out


def lens_file(folder: Path, w: int, h: int) -> Path:
    path = folder / f"lens-{w}x{h}.yaml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("camera_matrix", np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]]))
    fs.write("dist_coeffs", np.array([[-0.2, 0.04, 0, 0, 0]]))
    fs.release()
    return path


def time_ops(specs: list[dict[str, object]], frames: list[np.ndarray]) -> float:
    from pipeline.config import StreamConfig
    from pipeline.imageops import build_ops

    stream = StreamConfig.model_validate({"id": "b", "source": "x.mp4", "preprocess": specs})
    ops = build_ops(stream.preprocess)
    ops.apply(frames[0])  # warm up (remap tables, CLAHE object)
    started = time.perf_counter()
    for frame in frames:
        ops.apply(frame)
    return round(1000.0 * (time.perf_counter() - started) / len(frames), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--video", type=Path)
    args = parser.parse_args()
    full = frames_from(args.video, args.frames)
    sizes = {
        "1920x1080": [cv2.resize(f, (1920, 1080)) for f in full],
        "640x360": [cv2.resize(f, (640, 360)) for f in full],
    }
    tmp = Path(tempfile.mkdtemp())
    result: dict[str, object] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    }
    for name, frames in sizes.items():
        h, w = frames[0].shape[:2]
        lens = str(lens_file(tmp, w, h))
        specs = [dict(s, calibration=lens) if s["op"] == "undistort" else s for s in OPS]
        per_op = {str(s["op"]): time_ops([s], frames) for s in specs}
        chain = [specs[4], specs[1], specs[0], specs[5], specs[6]]
        result[name] = {"ms_per_frame": per_op, "chain_undistort_rotate_crop_clahe_gamma": time_ops(chain, frames)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
