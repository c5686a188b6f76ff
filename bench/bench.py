"""edgesight end to end against Ultralytics' streaming predictor, the bare engine and plain decoding.

One command, one JSON document on stdout. Every measurement runs in a fresh
process (thread-pool settings of one never leak into another) on the same
video and weights:

- ``ultralytics``: ``YOLO(weights).predict(video, stream=True)``, one stream;
- ``engine``: the backend edgesight picks, alone, on frames decoded beforehand
  (prepare + infer; batch 1, and larger batches on a GPU);
- ``decode``: decoding alone (``--decoder``), one thread per stream, or one process per stream with
  ``--decode-process`` (``gpu``: into a ring on the GPU, as the pipeline then does) (the ceiling); with
  ``--decode-process`` also in threads, for comparison;
- ``edgesight``: the whole pipeline with N streams of the video, every message
  delivered to a subscriber in another process; frames/s, per-stage ms,
  capture→publish latency percentiles, mean batch, queue peaks, GPU memory;
- ``live`` (``--live``): one stream paced at its own frame rate, for latency.

    python bench/bench.py --video people1.mp4 [--arch yolo11n.yaml | --model w.pt] [--streams 1,8] [--live]

Without ``--model`` an architecture with seeded random weights is used: the
same compute as the trained model, offline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError, StopIteration):
        info["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return info


def gpu_memory_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_reserved() / 2**20, 1)


def video_frames(video: Path) -> int:
    return int(cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_COUNT))


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def bench_edgesight(args: argparse.Namespace, streams: int, live: bool = False) -> dict[str, Any]:
    from pipeline.cli import configure_threads

    configure_threads()  # as the edgesight command does at start
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    endpoint = _endpoint()
    source: dict[str, Any] = {"type": "file", "path": str(args.video), "realtime": live, "decoder": args.decoder}
    source["decode_process"] = decode_process(args)
    stream_list = [{"id": f"cam{i}", "source": source} for i in range(streams)]
    if args.frames:
        stream_list = [{**s, "max_frames": args.frames} for s in stream_list]
    model: dict[str, Any] = {"path": str(args.model), "imgsz": args.imgsz, "device": args.device}
    model["engine"] = args.engine
    config = build_config(
        {
            "streams": stream_list,
            "model": model,
            "publish": {"endpoint": endpoint, "wait_for_subscriber": True, "subscriber_timeout_s": 30},
            # Detection throughput, as Ultralytics' predictor does it; bench/bench_tracking.py measures tracking.
            "tracking": {"enabled": args.tracking},
            **({"preprocess_threads": args.preprocess_threads} if args.preprocess_threads else {}),
        },
        "bench",
    )
    expected = streams * (args.frames or video_frames(args.video))
    # A real subscriber in its own process (as another service would be), so every message is delivered.
    listen = ["subscribe", "--endpoint", endpoint, "--topic", "detections.", "--count", str(expected)]
    listener = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *listen, "--timeout", "120", "--quiet"], stdout=subprocess.DEVNULL
    )
    pipeline = Pipeline(config)
    pipeline.start()
    while not pipeline.wait(0.1):
        pass
    pipeline.stop()
    report = pipeline.report()
    pipeline.close()
    listener_code = listener.wait(60)
    n = report.frames_published
    info = report.engine
    out: dict[str, Any] = {
        "streams": streams,
        "frames": n,
        "seconds": round(report.elapsed_s, 3),
        "fps": round(n / report.elapsed_s, 2),
        "engine": f"{info.backend} {info.device} {info.precision}",
        "stage_ms": report.stage_ms,
        "latency_ms": report.latency_ms,
        "mean_batch": report.mean_batch,
        "queue_peaks": report.queue_peaks,
        "drops": sum(sum(s.drops.values()) for s in report.streams),
        "gpu_memory_mb": gpu_memory_mb(),
        "subscriber_ok": listener_code == 0,
    }
    if live:
        fps = cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS)
        out["source_fps"] = round(fps, 3)
        out["p99_in_frame_intervals"] = round(report.latency_ms.get("p99", 0.0) * fps / 1000.0, 3)
    return out


def bench_ultralytics(args: argparse.Namespace) -> dict[str, Any]:
    from ultralytics import YOLO

    model = YOLO(str(args.model))
    dev = "cpu" if args.device == "cpu" else None
    half = args.device != "cpu" and _cuda()
    model.predict(np.zeros((360, 640, 3), np.uint8), imgsz=args.imgsz, device=dev, half=half, verbose=False)
    n = 0
    t0 = time.perf_counter()
    stream = model.predict(source=str(args.video), stream=True, imgsz=args.imgsz, device=dev, half=half, verbose=False)
    for _ in stream:
        n += 1
        if args.frames and n >= args.frames:
            break
    elapsed = time.perf_counter() - t0
    return {"frames": n, "seconds": round(elapsed, 3), "fps": round(n / elapsed, 2), "gpu_memory_mb": gpu_memory_mb()}


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _decoded(video: Path, limit: int | None) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    images: list[np.ndarray] = []
    while limit is None or len(images) < limit:
        ok, img = cap.read()
        if not ok:
            break
        images.append(img)
    cap.release()
    return images


def bench_engine(args: argparse.Namespace) -> dict[str, Any]:
    """The engine alone on frames decoded beforehand: prepare + infer at batch 1 (and larger batches on a GPU)."""
    from pipeline.cli import configure_threads

    configure_threads()
    import torch

    from engines.base import ModelSpec
    from engines.registry import load_engine

    batches = [1, 8, 16, 32] if _cuda() and args.device != "cpu" else [1]
    spec = ModelSpec(str(args.model), imgsz=args.imgsz, device=args.device, max_batch=max(batches))
    engine = load_engine(spec, args.engine)
    images = _decoded(args.video, min(args.frames or 10**9, 320))
    out: dict[str, Any] = {"engine": f"{engine.info.backend} {engine.info.device} {engine.info.precision}"}
    for b in batches:
        chunks = [images[i : i + b] for i in range(0, len(images) - b + 1, b)]
        engine.infer([engine.prepare(i) for i in chunks[0]], [i.shape[:2] for i in chunks[0]])
        t0 = time.perf_counter()
        for chunk in chunks:
            engine.infer([engine.prepare(i) for i in chunk], [i.shape[:2] for i in chunk])
        if _cuda():
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        n = sum(len(c) for c in chunks)
        out[f"batch{b}_fps"] = round(n / elapsed, 2)
    out["fps"] = out["batch1_fps"]
    if _cuda() and engine.info.device.startswith("cuda"):
        out["model_only_ips"] = _model_only(engine, batches, args.imgsz)
    out["gpu_memory_mb"] = gpu_memory_mb()
    engine.close()
    return out


def _model_only(engine: Any, batches: list[int], imgsz: int, iterations: int = 100) -> dict[str, float]:
    """Images/s of the model's forward pass alone on a ready ``(B, 3, S, S)`` input: no decode, letterbox or NMS."""
    import torch

    runner = engine.runner
    out = {}
    for b in batches:
        x = torch.zeros((b, 3, imgsz, imgsz), dtype=runner.input_dtype, device="cuda")
        for _ in range(3):
            runner.forward(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iterations):
            runner.forward(x)
        torch.cuda.synchronize()
        out[f"batch{b}"] = round(b * iterations / (time.perf_counter() - t0), 1)
    return out


def bench_decode(args: argparse.Namespace, streams: int) -> dict[str, Any]:
    """Decoding alone (OpenCV, PyAV or NVDEC, as ``--decoder`` says), one thread per stream (each reading from its
    own decoding process with ``--decode-process``): the pipeline's ceiling."""
    from pipeline.config import FileSourceConfig
    from pipeline.sources import make_source

    counts = [0] * streams
    config = FileSourceConfig(path=args.video, decoder=args.decoder, decode_process=decode_process(args))
    sources = [make_source(config) for _ in range(streams)]
    for source in sources:  # opened before the clock starts, as the pipeline opens its sources
        source.open()

    def decode(i: int) -> None:
        while (args.frames is None or counts[i] < args.frames) and sources[i].read() is not None:
            counts[i] += 1
        sources[i].release()

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"streams": streams, "frames": sum(counts), "fps": round(sum(counts) / elapsed, 2)}


def run_child(
    args: argparse.Namespace,
    only: str,
    weights: Path,
    streams: int = 1,
    decoder: str | None = None,
    process: bool | None = None,
) -> dict[str, Any]:
    """One measurement in a fresh process (``decoder`` and ``process`` override ``--decoder``, ``--decode-process``)."""
    cmd = [sys.executable, __file__, "--video", str(args.video), "--model", str(weights), "--imgsz", str(args.imgsz)]
    cmd += ["--device", args.device, "--engine", args.engine, "--only", only, "--streams", str(streams)]
    cmd += ["--decoder", decoder or args.decoder]
    if args.decode_process and process is not False:
        cmd += ["--decode-process", args.decode_process]
    if args.tracking:
        cmd.append("--tracking")
    if args.preprocess_threads:
        cmd += ["--preprocess-threads", str(args.preprocess_threads)]
    if args.frames:
        cmd += ["--frames", str(args.frames)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:  # reported in the JSON, so the other measurements of a long run are kept
        print(f"bench: {only} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
        return {"fps": 0.0, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def decode_process(args: argparse.Namespace) -> bool | str:
    """The sources' ``decode_process`` for ``--decode-process [cpu|gpu]``."""
    choice: dict[str | None, bool | str] = {None: False, "cpu": True, "gpu": "gpu"}
    return choice[args.decode_process]


def best_of(args: argparse.Namespace, only: str, weights: Path, streams: int = 1, **override: Any) -> dict[str, Any]:
    """The fastest of ``--repeat`` runs of :func:`run_child`."""
    runs = [run_child(args, only, weights, streams, **override) for _ in range(args.repeat)]
    return max(runs, key=lambda r: float(r["fps"]))


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--model", type=Path, help="trained weights (.pt)")
    parser.add_argument("--arch", default="yolo11n.yaml", help="architecture for seeded random weights")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--engine", default="auto", choices=["auto", "tensorrt", "torch", "onnxruntime"])
    parser.add_argument(
        "--decoder", default="cpu", choices=["auto", "cpu", "pyav", "nvdec"], help="how files are decoded"
    )
    parser.add_argument(
        "--decode-process",
        nargs="?",
        const="cpu",
        choices=["cpu", "gpu"],
        help="decode each stream in its own process (decode_process; gpu: the process puts frames on the GPU)",
    )
    parser.add_argument("--streams", default="1", help="comma-separated stream counts for edgesight, e.g. 1,8")
    parser.add_argument("--live", action="store_true", help="also run one stream paced at the video's frame rate")
    parser.add_argument("--frames", type=int, help="limit frames per stream")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the best is kept")
    parser.add_argument("--skip-ultralytics", action="store_true", help="leave out the Ultralytics predictor")
    parser.add_argument("--tracking", action="store_true", help="track objects in the edgesight runs (off by default)")
    parser.add_argument("--preprocess-threads", type=int, help="preprocess threads (default: the pipeline's choice)")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if not args.video.is_file():
        raise SystemExit(f"bench: video not found: {args.video}")
    if args.only:
        streams = int(args.streams)
        child = {
            "ultralytics": lambda: bench_ultralytics(args),
            "engine": lambda: bench_engine(args),
            "decode": lambda: bench_decode(args, streams),
            "edgesight": lambda: bench_edgesight(args, streams),
            "live": lambda: bench_edgesight(args, 1, live=True),
        }[args.only]
        print(json.dumps(child()))
        return
    counts = [int(n) for n in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.model
        if weights is None:
            from engines.architecture import save_architecture_weights

            weights = save_architecture_weights(Path(tmp) / f"{Path(args.arch).stem}-arch.pt", args.arch)
        runs: dict[str, Any] = {"engine": best_of(args, "engine", weights)}
        runs["engine"].setdefault("engine", "unavailable")
        if not args.skip_ultralytics:
            runs["ultralytics"] = best_of(args, "ultralytics", weights)
        for n in counts:
            runs[f"decode_x{n}"] = best_of(args, "decode", weights, n)
            if args.decode_process:  # the same decoder in threads, as without --decode-process
                runs[f"decode_threads_x{n}"] = best_of(args, "decode", weights, n, process=False)
            if args.decoder != "cpu":  # OpenCV's decoding too: the ceiling of the default decoder
                runs[f"decode_opencv_x{n}"] = best_of(args, "decode", weights, n, decoder="cpu", process=False)
            runs[f"edgesight_x{n}"] = best_of(args, "edgesight", weights, n)
        if args.live:
            runs["live"] = run_child(args, "live", weights)
    summary: dict[str, Any] = {
        "video": args.video.name,
        "model": str(args.model.name if args.model else args.arch + " (seeded random weights)"),
        "imgsz": args.imgsz,
        "device": args.device,
        "engine": runs["engine"]["engine"],
        "decoder": args.decoder,
        "decode_process": decode_process(args),
    }
    one = runs.get("edgesight_x1")
    if one:
        summary["edgesight_fps"] = one["fps"]
        summary["engine_fps"] = runs["engine"]["fps"]
        summary["edgesight_vs_engine"] = ratio(one["fps"], runs["engine"]["fps"])
        if "ultralytics" in runs:
            summary["ultralytics_fps"] = runs["ultralytics"]["fps"]
            summary["edgesight_vs_ultralytics"] = ratio(one["fps"], runs["ultralytics"]["fps"])
    for n in counts:
        e, d = runs[f"edgesight_x{n}"], runs[f"decode_x{n}"]
        summary[f"streams_{n}"] = {"fps": e["fps"], "decode_fps": d["fps"], "vs_decode": ratio(e["fps"], d["fps"])}
        if f"decode_threads_x{n}" in runs:
            threads = runs[f"decode_threads_x{n}"]["fps"]
            summary[f"streams_{n}"].update(threads_decode_fps=threads, vs_threads_decode=ratio(e["fps"], threads))
        if f"decode_opencv_x{n}" in runs:
            cv = runs[f"decode_opencv_x{n}"]["fps"]
            summary[f"streams_{n}"].update(opencv_decode_fps=cv, vs_opencv_decode=ratio(e["fps"], cv))
    if "live" in runs:
        summary["live_latency_ms"] = runs["live"].get("latency_ms")
        summary["live_p99_in_frame_intervals"] = runs["live"].get("p99_in_frame_intervals")
    print(json.dumps({**summary, "runs": runs, "machine": machine()}))


if __name__ == "__main__":
    main()
