"""Soak: run a pipeline at full speed for a long time and watch what it holds.

    python bench/soak.py [--minutes 30] [--streams 2] [--model edgesight-det] [--device cpu]

A generated street scene (600 frames) looped on every stream, tracking with a line and a zone, a live subscriber
draining the bus. Every ``--every`` seconds it samples RSS, GPU memory, threads, open file descriptors,
queue depths and frames published. After the warm-up (the first fifth of the run) the growth of RSS,
threads and descriptors — the mean of the last three samples over the mean of the first three after warm-up —
must stay under 5%; the exit code is 1 otherwise. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

GROWTH_LIMIT = 0.05


def _endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _gpu_mb() -> float | None:
    import torch

    return torch.cuda.memory_allocated() / 2**20 if torch.cuda.is_available() else None


def _drain(endpoint: str, stop: threading.Event, counts: dict[str, int]) -> None:
    from pipeline.subscriber import Subscriber

    with Subscriber(endpoint) as sub:
        while not stop.is_set():
            if sub.recv(0.2) is not None:
                counts["received"] += 1
        counts["missed"] = sub.missed


def growth(samples: list[dict[str, Any]], key: str, warmup: int) -> float:
    after = [s[key] for s in samples[warmup:]]
    if len(after) < 6:
        return 0.0
    base, last = sum(after[:3]) / 3, sum(after[-3:]) / 3
    return (last - base) / base if base else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--model", default="edgesight-det")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from pipeline.cli import configure_threads
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    configure_threads()
    endpoint = _endpoint()
    from pipeline.synth.writer import write_scene

    scene = write_scene(Path(tempfile.mkdtemp(prefix="soak-")) / "scene", 31337, 600) / "scene.mp4"
    streams = [
        {
            "id": f"s{i}",
            "source": {"type": "file", "path": str(scene), "loop": True},
            "lines": [{"name": "gate", "points": [[0.5, 0], [0.5, 1]]}],
            "zones": [{"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1], [0.1, 1]]}],
        }
        for i in range(args.streams)
    ]
    config = build_config(
        {"streams": streams, "model": {"path": args.model, "device": args.device}, "publish": {"endpoint": endpoint}},
        "soak",
    )
    pipeline = Pipeline(config)
    stop = threading.Event()
    counts = {"received": 0, "missed": 0}
    drainer = threading.Thread(target=_drain, args=(endpoint, stop, counts), daemon=True)
    drainer.start()
    pipeline.start()
    samples: list[dict[str, Any]] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60
    try:
        while time.monotonic() < deadline and not pipeline.stop_event.is_set():
            time.sleep(args.every)
            progress = pipeline.progress()
            samples.append(
                {
                    "t_s": round(time.monotonic() - started, 1),
                    "rss_mb": round(_rss_mb(), 1),
                    "gpu_mb": _gpu_mb(),
                    "threads": threading.active_count(),
                    "fds": len(os.listdir("/proc/self/fd")),
                    "published": progress.published,
                    "queues": pipeline.queue_depths(),
                }
            )
            print(json.dumps(samples[-1]), flush=True)
    finally:
        pipeline.stop()
        report = pipeline.report()
        pipeline.close()
        stop.set()
        drainer.join(5)
    warmup = max(1, len(samples) // 5)
    growths = {key: round(growth(samples, key, warmup), 4) for key in ("rss_mb", "threads", "fds")}
    if samples and samples[0]["gpu_mb"] is not None:
        growths["gpu_mb"] = round(growth(samples, "gpu_mb", warmup), 4)
    elapsed = time.monotonic() - started
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "engine": f"{report.engine.backend} {report.engine.device} {report.engine.precision}",
        "minutes": round(elapsed / 60, 1),
        "streams": args.streams,
        "frames_published": report.frames_published,
        "fps": round(report.frames_published / elapsed, 2),
        "received_by_subscriber": counts["received"],
        "failure": report.failure,
        "first_after_warmup": samples[warmup] if len(samples) > warmup else None,
        "last": samples[-1] if samples else None,
        "growth_after_warmup": growths,
        "queue_depth_max": {q: max(s["queues"][q] for s in samples) for q in samples[0]["queues"]} if samples else {},
        "ok": report.failure is None and all(v < GROWTH_LIMIT for v in growths.values()),
    }
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
