"""What edgesight itself costs per frame: many paced cameras, an engine that answers at once.

    python bench/bench_overhead.py [--cameras 64] [--boxes 10] [--seconds 10] [--fps 24]
    python bench/bench_overhead.py --rtsp tiny.mp4 --cameras 96 --sends kept,pyzmq

With a GPU doing the model, one interpreter runs every camera's capture
thread, the batching, the results and the bus, so the pipeline's own work per
frame decides how many cameras a box holds. Here each camera hands over a
ready 192x108 frame at its rate (no decoding) and the engine returns the same
``--boxes`` boxes for every frame (no model): what is left is the pipeline.
Prints one JSON document: frames/s delivered against the cameras' rate, CPU
time per frame and cores used, measured over a steady window in this process.

With ``--rtsp VIDEO`` the cameras are real RTSP streams of the file from the
loopback server (``tests/tools/rtsp_file_server.py``, a password), decoded by
PyAV in their capture threads, as live cameras are: past some number of them
the stages after capture wait for the interpreter lock behind the capture
threads. ``--sends kept,pyzmq`` measures the bus's sends both ways, each in a
fresh process, and prints the ratio: keeping the interpreter lock through each
non-blocking send (the default, :mod:`pipeline.zmq_direct`) against pyzmq's
send, which gives it up.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CONNECT_S = 20.0
"""How long real cameras get to connect before the window."""


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


def measure(cameras: int, boxes: int, seconds: float, fps: float, rtsp: str | None = None) -> dict[str, Any]:
    """The steady window's figures; ``rtsp``: the base URL of a server with ``cam0``, ``cam1``… (real cameras)."""
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    streams: list[dict[str, Any]] = [
        {"id": f"cam{i}", "source": f"rtsp://camera-{i}.invalid/stream"}
        if rtsp is None
        else {"id": f"cam{i}", "source": {"type": "url", "url": f"{rtsp}/cam{i}", "decoder": "pyav"}}
        for i in range(cameras)
    ]
    config = build_config(
        {"streams": streams, "publish": {"endpoint": "tcp://127.0.0.1:0"}, "tracking": {"enabled": False}},
        "bench_overhead",
    )
    engine = InstantEngine(boxes)
    if rtsp is None:
        pipeline = Pipeline(config, source_factory=lambda _c: PacedCamera(fps), engine_factory=lambda _s, _e: engine)
    else:  # the configured sources: real cameras
        pipeline = Pipeline(config, engine_factory=lambda _s, _e: engine)
    pipeline.start()
    silent = 0
    try:
        if rtsp is None:
            time.sleep(3.0)  # every camera running
        else:
            silent = unconnected(pipeline, cameras, CONNECT_S)
            time.sleep(2.0)  # past start-up's backlogs
        before = pipeline.progress(), {s.stream_id: s.captured for s in pipeline.stream_states()}
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        after = pipeline.progress(), {s.stream_id: s.captured for s in pipeline.stream_states()}
        cpu1, t1 = time.process_time(), time.monotonic()
    finally:
        pipeline.stop()
        report = pipeline.report()
        pipeline.close()
    frames, cpu = after[0].published - before[0].published, cpu1 - cpu0
    captured = sum(n - before[1].get(sid, 0) for sid, n in after[1].items())
    return {
        "cameras": cameras,
        "cameras_never_connected": silent,
        "boxes_per_frame": boxes,
        "frames_per_s": round(frames / (t1 - t0), 1),
        "captured_per_s": round(captured / (t1 - t0), 1),
        "cameras_rate": cameras * fps,
        "cpu_us_per_frame": round(cpu / max(frames, 1) * 1e6, 1),
        "cores_used": round(cpu / (t1 - t0), 3),
        "publish_ms_per_frame": report.stage_ms.get("publish"),
    }


def unconnected(pipeline: Any, cameras: int, limit_s: float) -> int:
    """Wait until every camera has captured a frame (at most ``limit_s``); how many had not by then (a run whose
    cameras did not all connect measures fewer cameras than it says: it is reported, not hidden)."""
    deadline = time.monotonic() + limit_s
    while True:
        states = pipeline.stream_states()
        silent = cameras - sum(1 for s in states if s.captured > 0)
        if silent == 0 or time.monotonic() >= deadline:
            return silent
        time.sleep(0.2)


def through_pyzmq() -> None:
    """Send as pyzmq does, giving the interpreter lock up in every send (the peer ``--sends pyzmq`` measures)."""
    import pipeline.bus

    pipeline.bus.direct_sender = lambda: None  # type: ignore[assignment]


def compare(args: argparse.Namespace, sends: list[str]) -> dict[str, Any]:
    """Each way of sending in a fresh process, on the same cameras; the ratio of frames delivered."""
    runs = []
    for mode in sends:
        cmd = [sys.executable, __file__, "--cameras", str(args.cameras), "--boxes", str(args.boxes)]
        cmd += ["--seconds", str(args.seconds), "--fps", str(args.fps), "--sends", mode, "--base-url", args.base_url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 120)
        if done.returncode != 0:
            sys.exit(f"bench_overhead: the {mode} run failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        runs.append(json.loads(done.stdout)["result"])
    rate = {run["sends"]: run["frames_per_s"] for run in runs}
    ratio = round(rate["kept"] / rate["pyzmq"], 2) if rate.get("pyzmq") and "kept" in rate else None
    return {"runs": runs, "kept_over_pyzmq": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=64)
    parser.add_argument("--boxes", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--rtsp", type=Path, help="real RTSP cameras serving this video (PyAV decodes them)")
    parser.add_argument("--sends", default="kept", help="kept, pyzmq, or both as kept,pyzmq (each in a fresh process)")
    parser.add_argument("--base-url", help=argparse.SUPPRESS)  # a comparison's child: the server already runs
    args = parser.parse_args()
    sends = [m for m in args.sends.split(",") if m]
    if not sends or any(m not in ("kept", "pyzmq") for m in sends):
        sys.exit(f"bench_overhead: --sends: kept, pyzmq or kept,pyzmq, not {args.sends!r}")
    machine = {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    if args.rtsp is not None and not args.rtsp.is_file():
        sys.exit(f"bench_overhead: --rtsp: not a video file: {args.rtsp}")
    if args.base_url or (args.rtsp is None and len(sends) == 1):
        if sends == ["pyzmq"]:
            through_pyzmq()
        result = measure(args.cameras, args.boxes, args.seconds, args.fps, args.base_url) | {"sends": sends[0]}
        document = {"machine": machine, "result": result} if args.base_url else {"machine": machine, **result}
        print(json.dumps(document, indent=1))
        return
    if args.rtsp is None:
        sys.exit("bench_overhead: comparing --sends needs --rtsp (paced cameras do not contend for the lock)")
    from bench_live import free_port, start_rtsp_server

    port = free_port()
    server = start_rtsp_server(args.rtsp, port, args.cameras)
    try:
        args.base_url = f"rtsp://bench:s3cret@127.0.0.1:{port}"
        document = compare(args, sends)
    finally:
        server.kill()
        server.wait()
    print(json.dumps({"machine": machine, "video": args.rtsp.name, "cameras": args.cameras, **document}, indent=1))


if __name__ == "__main__":
    main()
