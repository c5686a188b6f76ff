"""Throughput of edgesight end to end against Ultralytics' streaming predictor and the bare engine.

Measured in one run on the same video and weights; prints one JSON line.

    python bench/bench.py --video people1.mp4 [--model yolo11n.pt | --arch yolo11n.yaml] [--imgsz 640]

Without ``--model``, an architecture (default ``yolo11n.yaml``) with seeded
random weights is used: the same compute as the trained model, offline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": __import__("os").cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return info


def bench_edgesight(video: Path, weights: Path, imgsz: int, device: str, frames: int | None) -> dict[str, Any]:
    from pipeline.cli import configure_threads

    configure_threads()  # as the edgesight command does at start
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    stream: dict[str, Any] = {"id": "bench", "source": str(video)}
    if frames:
        stream["max_frames"] = frames
    config = build_config(
        {
            "streams": [stream],
            "model": {"path": str(weights), "imgsz": imgsz, "device": device},
            "publish": {"endpoint": endpoint, "wait_for_subscriber": True, "subscriber_timeout_s": 10},
        },
        "bench",
    )
    expected = frames or int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))
    # A real subscriber in its own process (as another service would be), so every message is delivered.
    listen = ["subscribe", "--endpoint", endpoint, "--topic", "detections.", "--count", str(expected)]
    listener = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *listen, "--timeout", "60", "--quiet"], stdout=subprocess.DEVNULL
    )
    pipeline = Pipeline(config)
    pipeline.start()
    while not pipeline.wait(0.1):
        pass
    pipeline.stop()
    report = pipeline.report()
    pipeline.close()
    elapsed = report.elapsed_s
    listener_code = listener.wait(30)
    n = report.frames_published
    return {
        "frames": n,
        "seconds": round(elapsed, 3),
        "fps": round(n / elapsed, 2),
        "subscriber_ok": listener_code == 0,
    }


def bench_ultralytics(video: Path, weights: Path, imgsz: int, device: str, frames: int | None) -> dict[str, Any]:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    dev = "cpu" if device == "cpu" else None
    model.predict(np.zeros((360, 640, 3), np.uint8), imgsz=imgsz, device=dev, verbose=False)  # load + warm up
    n = 0
    t0 = time.perf_counter()
    for _ in model.predict(source=str(video), stream=True, imgsz=imgsz, device=dev, verbose=False):
        n += 1
        if frames and n >= frames:
            break
    elapsed = time.perf_counter() - t0
    return {"frames": n, "seconds": round(elapsed, 3), "fps": round(n / elapsed, 2)}


def bench_engine(video: Path, weights: Path, imgsz: int, device: str, frames: int | None) -> dict[str, Any]:
    """The engine alone on frames decoded beforehand: prepare + infer, one frame at a time."""
    from pipeline.cli import configure_threads

    configure_threads()
    from engines.base import ModelSpec
    from engines.registry import load_engine

    engine = load_engine(ModelSpec(str(weights), imgsz=imgsz, device=device))  # type: ignore[arg-type]
    cap = cv2.VideoCapture(str(video))
    images = []
    while frames is None or len(images) < frames:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    engine.infer([engine.prepare(images[0])], [images[0].shape[:2]])
    t0 = time.perf_counter()
    for img in images:
        engine.infer([engine.prepare(img)], [img.shape[:2]])
    elapsed = time.perf_counter() - t0
    engine.close()
    return {"frames": len(images), "seconds": round(elapsed, 3), "fps": round(len(images) / elapsed, 2)}


MEASUREMENTS = {"ultralytics": bench_ultralytics, "engine": bench_engine, "edgesight": bench_edgesight}


def measure_in_subprocess(name: str, args: argparse.Namespace, weights: Path) -> dict[str, Any]:
    """Each measurement runs in a fresh process, so thread-pool settings of one never leak into another."""
    cmd = [sys.executable, __file__, "--video", str(args.video), "--model", str(weights), "--imgsz", str(args.imgsz)]
    cmd += ["--device", args.device, "--only", name]
    if args.frames:
        cmd += ["--frames", str(args.frames)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="trained weights (.pt)")
    parser.add_argument("--arch", default="yolo11n.yaml", help="architecture for seeded random weights")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--frames", type=int, help="limit frames per measurement")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best is kept")
    parser.add_argument("--only", choices=sorted(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not args.video.is_file():
        raise SystemExit(f"bench: video not found: {args.video}")
    if args.only:
        print(json.dumps(MEASUREMENTS[args.only](args.video, args.model, args.imgsz, args.device, args.frames)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.model
        if weights is None:
            from engines.architecture import save_architecture_weights

            weights = save_architecture_weights(Path(tmp) / "arch.pt", args.arch)
        runs: dict[str, dict[str, Any]] = {}
        for name in MEASUREMENTS:
            tries = [measure_in_subprocess(name, args, weights) for _ in range(args.repeat)]
            runs[name] = max(tries, key=lambda r: float(r["fps"]))
    print(
        json.dumps(
            {
                "video": args.video.name,
                "model": str(args.model.name if args.model else args.arch + " (seeded random weights)"),
                "imgsz": args.imgsz,
                "device": args.device,
                "edgesight_fps": runs["edgesight"]["fps"],
                "ultralytics_fps": runs["ultralytics"]["fps"],
                "engine_fps": runs["engine"]["fps"],
                "edgesight_vs_ultralytics": round(runs["edgesight"]["fps"] / runs["ultralytics"]["fps"], 3),
                "edgesight_vs_engine": round(runs["edgesight"]["fps"] / runs["engine"]["fps"], 3),
                "runs": runs,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
