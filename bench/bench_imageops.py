"""What each image operation costs per frame, at 640x360 and 1920x1080: OpenCV on the CPU, and torch on the GPU.

    python bench/bench_imageops.py [--frames 60] [--video people1_1080p.mp4]

Prints one JSON document: milliseconds per frame for each operation alone, and for a typical chain
(undistort, rotate, crop, CLAHE, gamma). With a CUDA GPU, the same again on frames already on the GPU (the
device is synchronized after every frame, so the figure is the whole cost, not the launch), the chain with the
upload included, and the ratio of CPU to GPU time. Frames come from the video when given, else from a generated
scene.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

OPS: list[dict[str, Any]] = [
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
    out: list[np.ndarray] = []
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


def time_ops(specs: list[dict[str, object]], frames: list[Any], upload: bool = False) -> float:
    """Milliseconds per frame; frames may be CUDA tensors (``upload``: host frames copied to the GPU first)."""
    from pipeline.config import StreamConfig
    from pipeline.imageops import build_ops

    stream = StreamConfig.model_validate({"id": "b", "source": "x.mp4", "preprocess": specs})
    ops = build_ops(stream.preprocess)
    on_gpu = upload or not isinstance(frames[0], np.ndarray)
    sync = _cuda_sync if on_gpu else (lambda: None)

    def one(frame: Any) -> None:
        if upload:
            import torch

            frame = torch.from_numpy(frame).cuda()
        ops.apply(frame)
        sync()

    for frame in frames[:3]:  # warm up (remap tables, CLAHE object, CUDA kernels)
        one(frame)
    started = time.perf_counter()
    for frame in frames:
        one(frame)
    return round(1000.0 * (time.perf_counter() - started) / len(frames), 3)


def _cuda_sync() -> None:
    import torch

    torch.cuda.synchronize()


def cuda_figures(frames: list[np.ndarray], specs: list[dict[str, Any]], cpu: dict[str, float]) -> dict[str, Any]:
    import torch

    on_gpu = [torch.from_numpy(f).cuda() for f in frames]
    per_op = {str(s["op"]): time_ops([s], on_gpu) for s in specs}
    chain = chain_of(specs)
    return {
        "ms_per_frame": per_op,
        "chain_undistort_rotate_crop_clahe_gamma": time_ops(chain, on_gpu),
        "chain_with_upload": time_ops(chain, frames, upload=True),
        "cpu_over_gpu": {op: round(cpu[op] / max(ms, 1e-6), 1) for op, ms in per_op.items()},
    }


def chain_of(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [specs[4], specs[1], specs[0], specs[5], specs[6]]


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
    import torch

    gpu = torch.cuda.is_available()
    result: dict[str, object] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if gpu else None,
        }
    }
    for name, frames in sizes.items():
        h, w = frames[0].shape[:2]
        lens = str(lens_file(tmp, w, h))
        specs = [dict(s, calibration=lens) if s["op"] == "undistort" else s for s in OPS]
        per_op = {str(s["op"]): time_ops([s], frames) for s in specs}
        figures: dict[str, Any] = {
            "ms_per_frame": per_op,
            "chain_undistort_rotate_crop_clahe_gamma": time_ops(chain_of(specs), frames),
        }
        if gpu:
            figures["cuda"] = cuda_figures(frames, specs, per_op)
        result[name] = figures
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
