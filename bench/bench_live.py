"""Live cameras on one box: how many hold at full rate with low latency.

Each camera is a video file paced at its own frame rate and looped (``realtime: true, loop: true``), as a
camera delivers frames: at its rate, forever; with ``--rtsp``, each camera is a real RTSP stream of the file
(``tests/tools/rtsp_file_server.py`` on loopback: the file's H.264 packets, paced and looped, with a password),
read and decoded as edgesight reads a camera. For each number of cameras in the sweep, the pipeline runs in a
fresh process and an independent subscriber in another measures a steady window after a warm-up:

- per camera: the delivered rate against the source's, frames dropped (by the pipeline's queues, per queue, and
  messages lost on the bus), capture→publish latency p50/p90/p99/max, the longest gap between two results;
- for the run: the time from start until every camera has published, host CPU cores used (the pipeline's process
  and its decoding processes), GPU memory, and what can pause the whole process in the window: garbage
  collections (the longest, and when) and CUDA graph captures (when), to set beside the cameras' longest gaps;
  and where the latency goes: how old the window's frames were at each hand-off (``frame_age_ms``: taken from
  their capture queues, given to the model, out of it, published);
- whether it **holds**: every camera ≥ 99% of its source rate, p99 ≤ 2 frame intervals and max ≤ 250 ms, over a
  window of at least 60 s; and, for a number past what holds, whether it **degrades evenly**: p99 ≤ 3 frame
  intervals, the least-served camera at ≥ 90% of the most-served one's rate, and no camera more than 1 s further
  behind its clock at the window's end than at its start.

One command, one JSON document on stdout (``--out`` also writes it to a file)::

    python bench/bench_live.py --video people1_1080p.mp4 --streams 8,16,32,64 [--arch yolo11n.yaml | --model w.pt]
        [--device cuda --precision fp16] [--decoder nvdec] [--warmup 30 --window 60] [--overload 1.5]

The sweep stops at the first number of cameras that does not hold (``--all`` runs every one); the summary
names the largest that held. ``--overload 1.5`` then runs 1.5 times that many cameras and tells whether they
degrade evenly (``overload`` in the document), so one command measures both targets. ``--group-size 16`` keeps 16
cameras to each decoding process whatever the number of cameras (``--decode-groups`` fixes the number of
processes instead). Without ``--model`` an architecture with seeded random weights is used: the same
compute as the trained model, offline.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

HOLD_RATE = 0.99
"""A camera holds when it delivers at least this share of its source's frame rate..."""
HOLD_P99_INTERVALS = 2.0
"""...with capture→publish p99 at most this many frame intervals..."""
HOLD_MAX_MS = 250.0
"""...and no result later than this."""
HOLD_WINDOW_S = 60.0
"""A shorter window measures, but cannot show that a number of cameras holds."""
OVERLOAD_P99_INTERVALS = 3.0
"""Past capacity, a run degrades evenly when capture→publish p99 stays within this many frame intervals..."""
OVERLOAD_EVEN_SHARE = 0.9
"""...the least-served camera delivers at least this share of the most-served one's rate..."""
OVERLOAD_FELL_BEHIND_S = 1.0
"""...and no camera's frames fall further behind its clock than this over the window (no backlog upstream)."""


# -- the subscriber: its own process, as another service would be ------------------------------------------------


def listen(endpoint: str, streams: int, t0: float, warmup_s: float, window_s: float) -> dict[str, Any]:
    """Read ``detections.*`` from ``t0`` (Unix time the pipeline's process started) to the window's end.

    Bodies are read as plain JSON, for the few fields measured: typed messages cost 0.6 ms each with 300 boxes
    (what a model with random weights finds in every frame), so a typed reader could not keep up with 64 cameras
    and would count its own lag as the pipeline's gaps.
    """
    import orjson
    import zmq

    first: dict[str, float] = {}
    boxes: dict[str, int] = {}
    latency: dict[str, list[float]] = {f"cam{i}": [] for i in range(streams)}
    worst: dict[str, tuple[float, float]] = {}
    gaps: dict[str, tuple[float, float]] = {}
    last_at: dict[str, float] = {}
    last_seq: dict[str, int] = {}
    lost: dict[str, int] = {}
    offsets: dict[str, list[float]] = {}
    start, end = t0 + warmup_s, t0 + warmup_s + window_s
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)  # never drop here: a loss must be the pipeline's
    sub.setsockopt(zmq.SUBSCRIBE, b"detections.")
    sub.connect(endpoint)
    try:
        while time.time() < end:
            if not sub.poll(200):
                continue
            body = orjson.loads(sub.recv_multipart()[1])
            now, sid, seq = time.time(), body["stream_id"], body["seq"]
            first.setdefault(sid, now - t0)
            if now < start:
                last_at[sid], last_seq[sid] = now, seq
                continue
            ms = (body["published_at"] - body["captured_at"]) * 1000.0
            latency.setdefault(sid, []).append(ms)
            offsets.setdefault(sid, []).append(body["published_at"] - body["pts_ms"] / 1000.0)
            boxes[sid] = boxes.get(sid, 0) + len(body["detections"])
            if ms > worst.get(sid, (0.0, 0.0))[0]:
                worst[sid] = (ms, now - t0)
            if sid in last_at and now - last_at[sid] > gaps.get(sid, (0.0, 0.0))[0]:
                gaps[sid] = (now - last_at[sid], now - t0)
            if sid in last_seq and seq > last_seq[sid] + 1:
                lost[sid] = lost.get(sid, 0) + seq - last_seq[sid] - 1
            last_at[sid], last_seq[sid] = now, seq
    finally:
        sub.close(linger=0)
        context.term()
    cameras = {}
    for sid, values in latency.items():
        at = np.array(values) if values else np.zeros(1)
        cameras[sid] = {
            "delivered": len(values),
            "fps": round(len(values) / window_s, 3),
            "bus_lost": lost.get(sid, 0),
            "boxes_per_message": round(boxes.get(sid, 0) / len(values), 1) if values else None,
            "first_publish_s": round(first[sid], 2) if sid in first else None,
            "latency_ms": {q: round(float(np.percentile(at, p)), 1) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))}
            | {"max": round(float(at.max()), 1)},
            "worst_at_s": round(worst[sid][1], 2) if sid in worst else None,
            "longest_gap_ms": round(gaps[sid][0] * 1000.0, 1) if sid in gaps else None,
            "longest_gap_at_s": round(gaps[sid][1], 2) if sid in gaps else None,
            "fell_behind_camera_s": fell_behind(offsets.get(sid, [])),
        }
    return cameras


def fell_behind(offsets: list[float]) -> float | None:
    """How much further behind its camera's clock a stream's frames were published at the window's end than at its
    start (publish time less the frame's own timestamp; medians of each end's fifth): a reader slower than its
    camera leaves the backlog upstream (in the camera or the network), where the capture→publish latency does not
    see it."""
    if len(offsets) < 10:
        return None
    fifth = len(offsets) // 5
    return round(float(np.median(offsets[-fifth:]) - np.median(offsets[:fifth])), 2)


# -- the pipeline: a fresh process per number of cameras -------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def process_tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and every process below it."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parent[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid, seconds in used.items():
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            total += seconds
    return total


def gpu_memory_mb() -> float | None:
    """Memory in use on the GPU (all processes: the pipeline's and its decoding processes'), if there is one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    values = [float(v) for v in out.stdout.split() if v.replace(".", "", 1).isdigit()]
    return values[0] if values and out.returncode == 0 else None


class PauseWatch(logging.Handler):
    """What can stop the whole process, and when (s since ``t0``): garbage collections and CUDA graph captures."""

    def __init__(self, t0: float) -> None:
        super().__init__(logging.DEBUG)
        self.t0 = t0
        self.collections: list[tuple[float, float, int]] = []
        """(when, ms, generation) of each collection."""
        self.captures: list[float] = []
        self._started = 0.0

    def __enter__(self) -> PauseWatch:
        gc.callbacks.append(self._on_gc)
        captures = logging.getLogger("engines.torch_backend")  # logs each graph it captures, at debug level
        captures.addHandler(self)
        captures.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)
        logging.getLogger("engines.torch_backend").removeHandler(self)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._started) * 1000.0
            self.collections.append((time.time() - self.t0, ms, info["generation"]))

    def emit(self, record: logging.LogRecord) -> None:
        if "captured a CUDA graph" in record.getMessage():
            self.captures.append(round(record.created - self.t0, 2))

    def report(self, since: float) -> dict[str, Any]:
        """Collections and captures from ``since`` (s after ``t0``) on: the window's."""
        window = [c for c in self.collections if c[0] >= since]
        longest = max(window, key=lambda c: c[1], default=(None, 0.0, None))
        return {
            "gc_collections": len(window),
            "gc_full": sum(1 for c in window if c[2] == 2),
            "gc_longest_ms": round(longest[1], 1),
            "gc_longest_at_s": None if longest[0] is None else round(longest[0], 2),
            "graph_captures_at_s": [t for t in self.captures if t >= since],
            "startup_graph_captures_at_s": [t for t in self.captures if t < since],
        }


class StartupWatch(logging.Handler):
    """When start-up's steps ended (s since ``t0``): sources opened, engine loaded and warmed up; and each warm-up
    for a camera's frames that start-up could not foresee."""

    LOGGERS = ("pipeline.runner", "pipeline.stages")

    def __init__(self, t0: float) -> None:
        super().__init__(logging.INFO)
        self.t0 = t0
        self.steps: dict[str, Any] = {}

    def __enter__(self) -> StartupWatch:
        for name in self.LOGGERS:
            logging.getLogger(name).addHandler(self)
            logging.getLogger(name).setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        message, at = record.getMessage(), round(record.created - self.t0, 2)
        if ": opened " in message:
            self.steps["sources_opened_s"] = at
        elif message.startswith("cameras:"):
            self.steps["camera_formats"] = f"{at} s: {message}"
        elif message.startswith("engine:"):
            self.steps["engine_ready_s"] = at
        elif message.startswith("model loaded"):
            self.steps["engine"] = message
        elif message.startswith("model warmed up"):
            self.steps.setdefault("later_warmups", []).append(f"{at} s: {message}")


def run_cameras(args: argparse.Namespace, streams: int) -> dict[str, Any]:
    """The pipeline with ``streams`` paced, looped cameras, here, and the subscriber in a child process."""
    t0 = time.time()
    from pipeline.cli import configure_threads

    configure_threads()  # as the edgesight command does at start
    from pipeline.ages import summaries
    from pipeline.config import build_config
    from pipeline.runner import Pipeline

    endpoint = _endpoint()
    listener = subprocess.Popen(
        [sys.executable, __file__, "--listen", endpoint, "--streams", str(streams), "--t0", str(t0), *_window(args)],
        stdout=subprocess.PIPE,
        text=True,
    )
    decoding = {"decode_process": {None: False, "cpu": True, "gpu": "gpu"}[args.decode_process]}
    if args.decode_threads:
        decoding["decode_threads"] = args.decode_threads
    if args.rtsp:
        url_decoder = {"decoder": args.decoder} if args.decoder in ("cpu", "pyav", "nvdec") else {}
        sources = [{"type": "url", "url": f"{args.rtsp}/cam{i}", **url_decoder, **decoding} for i in range(streams)]
    else:
        source = {"type": "file", "path": str(args.video), "realtime": True, "loop": True, "decoder": args.decoder}
        sources = [source | decoding for _ in range(streams)]
    groups = decode_groups(args, streams)
    if groups:  # cameras dealt out in turn to that many shared decoding processes
        for i, source in enumerate(sources):
            source["decode_group"] = f"decode{i % groups}"
    model = {"path": str(args.model), "imgsz": args.imgsz, "device": args.device, "engine": args.engine}
    if args.max_det:
        model["max_det"] = args.max_det
    if args.batch_size:
        model["batch_size"] = args.batch_size
    if args.precision:
        model["precision"] = args.precision
    extra = {"preprocess_threads": args.preprocess_threads} if args.preprocess_threads else {}
    config = build_config(
        {
            "streams": [{"id": f"cam{i}", "source": source} for i, source in enumerate(sources)],
            "model": model,
            "publish": {"endpoint": endpoint},
            "tracking": {"enabled": args.tracking},
            **extra,
        },
        "bench_live",
    )
    with PauseWatch(t0) as watch, StartupWatch(t0) as startup:
        window, report = _run_window(Pipeline(config), t0 + args.warmup, args.window)
    out, _ = listener.communicate(timeout=60)
    cameras = json.loads(out.strip().splitlines()[-1])
    before, after, gpu_mb = window
    for sid, camera in cameras.items():
        s0, s1 = before.streams.get(sid), after.streams.get(sid)
        if s0 is not None and s1 is not None:
            camera["captured"] = s1.captured - s0.captured
            camera["dropped"] = {q: s1.drops.get(q, 0) - s0.drops.get(q, 0) for q in s1.drops}
    info = report.engine
    return {
        "streams": streams,
        "engine": f"{info.backend} {info.device} {info.precision}" if info is not None else None,
        "mean_batch": report.mean_batch,
        "stage_ms": report.stage_ms,
        "frame_age_ms": summaries(after.ages, before.ages),
        "cpu_cores_used": round((after.cpu_s - before.cpu_s) / (after.at - before.at), 2),
        "gpu_memory_mb": gpu_mb,
        "error": report.failure,
        "startup": startup.steps,
        "pauses": watch.report(args.warmup),
        "cameras": cameras,
    }


class Snapshot(NamedTuple):
    """The pipeline at one end of the window."""

    streams: dict[str, Any]
    """Each stream's state and counters, by id."""
    cpu_s: float
    """CPU time of the process tree so far."""
    at: float
    """Unix time."""
    ages: dict[str, Any]
    """Frame ages at each hand-off so far (:mod:`pipeline.ages`)."""

    @staticmethod
    def of(pipeline: Any) -> Snapshot:
        states = {s.stream_id: s for s in pipeline.stream_states()}
        return Snapshot(states, process_tree_cpu_s(os.getpid()), time.time(), pipeline.frame_ages())


def _run_window(pipeline: Any, start: float, seconds: float) -> tuple[Any, Any]:
    """Run ``pipeline`` through the window from ``start`` (Unix time) for ``seconds``: the streams' counters, CPU
    time and frame ages at both ends, GPU memory half-way; and the pipeline's report."""
    pipeline.start()
    try:
        while time.time() < start and not pipeline.wait(0.1):
            pass
        before = Snapshot.of(pipeline)
        gpu_mb = None
        while time.time() < start + seconds and not pipeline.wait(0.1):
            if gpu_mb is None and time.time() > start + seconds / 2:
                gpu_mb = gpu_memory_mb()
        after = Snapshot.of(pipeline)
    finally:
        pipeline.stop()
        report = pipeline.report()
        pipeline.close()
    return (before, after, gpu_mb), report


# -- the sweep -----------------------------------------------------------------------------------------------------


def verdict(run: dict[str, Any], source_fps: float, window_s: float) -> dict[str, Any]:
    """The run's worst camera against the targets, and whether the number of cameras holds."""
    cameras = list(run["cameras"].values())
    interval_ms = 1000.0 / source_fps
    started = [c["first_publish_s"] for c in cameras]
    worst_gap = max(cameras, key=lambda c: c["longest_gap_ms"] or 0.0)
    out = {
        "min_rate_share": round(min(c["fps"] for c in cameras) / source_fps, 4),
        "max_rate_share": round(max(c["fps"] for c in cameras) / source_fps, 4),
        "worst_p99_ms": max(c["latency_ms"]["p99"] for c in cameras),
        "worst_max_ms": max(c["latency_ms"]["max"] for c in cameras),
        "p99_in_frame_intervals": round(max(c["latency_ms"]["p99"] for c in cameras) / interval_ms, 2),
        "all_published_after_s": None if None in started else max(started),
        "longest_stall_ms": worst_gap["longest_gap_ms"],
        "longest_stall_at_s": worst_gap["longest_gap_at_s"],
        "dropped": sum(sum(c.get("dropped", {}).values()) for c in cameras),
        "most_fallen_behind_camera_s": max((c.get("fell_behind_camera_s") or 0.0 for c in cameras), default=None),
    }
    out["holds"] = bool(
        out["min_rate_share"] >= HOLD_RATE
        and out["worst_p99_ms"] <= HOLD_P99_INTERVALS * interval_ms
        and out["worst_max_ms"] <= HOLD_MAX_MS
        and window_s >= HOLD_WINDOW_S
        and not run.get("error")
    )
    out["degrades_evenly"] = bool(
        out["all_published_after_s"] is not None
        and out["min_rate_share"] > 0
        and out["worst_p99_ms"] <= OVERLOAD_P99_INTERVALS * interval_ms
        and out["min_rate_share"] >= OVERLOAD_EVEN_SHARE * out["max_rate_share"]
        and (out["most_fallen_behind_camera_s"] or 0.0) <= OVERLOAD_FELL_BEHIND_S
        and not run.get("error")
    )
    return out


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    info |= {"torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def decode_groups(args: argparse.Namespace, streams: int) -> int | None:
    """How many decoding processes ``streams`` cameras share: ``--decode-groups``, or enough of ``--group-size``
    cameras each."""
    if args.group_size:
        return -(-streams // args.group_size)
    return int(args.decode_groups) if args.decode_groups else None


def overload_streams(largest_holding: int, factor: float) -> int:
    """The number of cameras ``factor`` times past the largest that held (rounded up: never short of it)."""
    return max(largest_holding + 1, math.ceil(round(largest_holding * factor, 6)))


def _window(args: argparse.Namespace) -> list[str]:
    return ["--warmup", str(args.warmup), "--window", str(args.window)]


def child(args: argparse.Namespace, model: Path, streams: int) -> dict[str, Any]:
    """One number of cameras, in a fresh process."""
    cmd = [sys.executable, __file__, "--run", str(streams), "--video", str(args.video), "--model", str(model)]
    cmd += ["--imgsz", str(args.imgsz), "--device", args.device, "--engine", args.engine, "--decoder", args.decoder]
    cmd += [*_window(args), *(["--precision", args.precision] if args.precision else [])]
    cmd += ["--max-det", str(args.max_det)] if args.max_det else []
    cmd += ["--batch-size", str(args.batch_size)] if args.batch_size else []
    cmd += ["--preprocess-threads", str(args.preprocess_threads)] if args.preprocess_threads else []
    cmd += [*(["--decode-process", args.decode_process] if args.decode_process else [])]
    cmd += [*(["--decode-groups", str(groups)] if (groups := decode_groups(args, streams)) else [])]
    cmd += ["--decode-threads", str(args.decode_threads)] if args.decode_threads else []
    cmd += ["--tracking"] if args.tracking else []
    cmd += ["--rtsp", args.rtsp] if args.rtsp else []
    began = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.warmup + args.window + 600)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["failed"]
        print(f"bench_live: {streams} cameras failed:\n{done.stderr[-3000:]}", file=sys.stderr)
        failed: dict[str, Any] = {"streams": streams, "error": tail[0], "exit_code": done.returncode, "cameras": {}}
        failed["ended_after_s"] = round(time.monotonic() - began, 1)
        if args.out:  # the whole log beside the results: a crash's thread dumps (PYTHONFAULTHANDLER=1) run long
            log_path = Path(args.out).with_suffix(f".{streams}.stderr.txt")
            log_path.write_text(done.stderr + (f"\n-- stdout --\n{done.stdout[-3000:]}" if done.stdout else ""))
            failed["log"] = str(log_path)
        return failed
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sent_rate(video: Path) -> float | None:
    """Frames a camera of ``video`` sends per second: its frames over the time their timestamps span (one frame
    interval added for the last). A file cut from a longer one can have holes in its timestamps (frames the cut
    dropped), which the paced and served cameras keep: it then sends fewer frames than its nominal rate says."""
    try:
        import av
    except ImportError:
        return None
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        times = sorted(float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.pts is not None)
        rate = float(stream.average_rate or 0)  # while open: PyAV 19 refuses a closed container's streams
    if len(times) < 2 or rate <= 0:
        return None
    return len(times) / (times[-1] - times[0] + 1.0 / rate)


RTSP_SERVER = Path(__file__).resolve().parents[1] / "tests" / "tools" / "rtsp_file_server.py"
CAMERAS_PER_SERVER_PROCESS = 16
"""Cameras each process of the loopback server sends (about 64 Mbit/s of RTP in small Python writes)."""


def server_processes(cameras: int) -> int:
    """Processes of the loopback server for ``cameras``: one per :data:`CAMERAS_PER_SERVER_PROCESS`."""
    return -(-cameras // CAMERAS_PER_SERVER_PROCESS)


def start_rtsp_server(video: Path, port: int, cameras: int) -> subprocess.Popen[str]:
    """The loopback RTSP server for ``video`` on ``port`` (user ``bench``, password ``s3cret``), one process per
    :data:`CAMERAS_PER_SERVER_PROCESS` cameras: they are separate devices, not one interpreter."""
    cmd = [sys.executable, str(RTSP_SERVER), str(video), str(port), "--user", "bench", "--password", "s3cret"]
    cmd += ["--processes", str(server_processes(cameras))]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    if server.stdout is None or server.stdout.readline().strip() != "ready":
        server.kill()
        sys.exit(f"{Path(sys.argv[0]).stem}: the RTSP server did not start")
    return server


def serve_rtsp(args: argparse.Namespace) -> subprocess.Popen[str]:
    """Start the loopback RTSP server for the file; ``args.rtsp`` becomes its base URL (with a password)."""
    port = free_port()
    cameras = max(int(v) for v in args.streams.split(","))
    server = start_rtsp_server(args.video, port, cameras)
    args.rtsp = f"rtsp://bench:s3cret@127.0.0.1:{port}"
    args.rtsp_processes = server_processes(cameras)
    return server


def emit(document: dict[str, Any], out: Path | None) -> None:
    """The JSON document on stdout, and in ``out`` too."""
    text = json.dumps(document, indent=1)
    if out:
        out.write_text(text + "\n")
    print(text)


def weights(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    from engines.architecture import save_architecture_weights

    path = Path(args.cache) / f"{Path(args.arch).stem}-arch.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path if path.exists() else save_architecture_weights(path, args.arch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, help="the camera's footage (paced at its own rate, looped)")
    parser.add_argument("--streams", default="1,2", help="numbers of cameras to sweep, e.g. 8,16,32,64")
    parser.add_argument("--all", action="store_true", help="go on after a number of cameras that does not hold")
    parser.add_argument("--arch", default="yolo11n.yaml", help="architecture with seeded random weights")
    parser.add_argument("--model", help="trained weights instead of --arch")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--precision")
    parser.add_argument(
        "--max-det",
        type=int,
        help="boxes kept per frame at most (model.max_det; random weights fill all 300 of the default in every frame)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="most frames a forward pass (model.batch_size; default one a camera, at most 32)"
    )
    parser.add_argument(
        "--preprocess-threads", type=int, help="preprocess threads (preprocess_threads; default 1 for cameras)"
    )
    parser.add_argument("--decoder", default="cpu")
    parser.add_argument("--decode-process", choices=["cpu", "gpu"])
    groups = parser.add_mutually_exclusive_group()
    groups.add_argument(
        "--decode-groups", type=int, help="with --decode-process: cameras share this many decoding processes"
    )
    groups.add_argument(
        "--group-size", type=int, help="with --decode-process: this many cameras share each decoding process"
    )
    parser.add_argument("--decode-threads", type=int, help="threads of each CPU decoder (FFmpeg's choice when unset)")
    parser.add_argument("--tracking", action="store_true")
    parser.add_argument(
        "--rtsp",
        nargs="?",
        const="serve",
        help="cameras are RTSP streams of --video from a server on loopback (or give a base URL to use another)",
    )
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds from start before the window")
    parser.add_argument("--window", type=float, default=HOLD_WINDOW_S, help="steady window measured, seconds")
    parser.add_argument(
        "--overload",
        type=float,
        metavar="FACTOR",
        help="after the sweep, run FACTOR times the largest number that held (e.g. 1.5) and tell whether it degrades"
        " evenly",
    )
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "edgesight" / "bench"))
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--listen", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("decode_groups", "group_size", "batch_size", "preprocess_threads"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be at least 1")
    if args.overload is not None and args.overload <= 1:
        parser.error("--overload: a factor past capacity, greater than 1 (e.g. 1.5)")
    return args


def sweep(args: argparse.Namespace, model: Path, source_fps: float) -> list[dict[str, Any]]:
    """Each number of cameras in ``--streams`` in a fresh process, with its verdict; stops at the first that does not
    hold unless ``--all``."""
    runs = []
    for n in [int(v) for v in args.streams.split(",")]:
        run = measured(args, model, n, source_fps)
        runs.append(run)
        if not args.all and not run.get("verdict", {}).get("holds"):
            break
    return runs


def measured(args: argparse.Namespace, model: Path, streams: int, source_fps: float) -> dict[str, Any]:
    """One number of cameras in a fresh process, with its verdict (printed as it comes)."""
    run = child(args, model, streams)
    if run["cameras"]:
        run["verdict"] = verdict(run, source_fps, args.window)
    print(f"bench_live: {streams} cameras: {json.dumps(run.get('verdict', run.get('error')))}", file=sys.stderr)
    return run


def overload(
    args: argparse.Namespace, model: Path, source_fps: float, largest_holding: int | None
) -> dict[str, Any] | None:
    """With ``--overload``: the run past capacity and its verdict, or why there was none."""
    if args.overload is None:
        return None
    summary: dict[str, Any] = {"factor": args.overload, "of": largest_holding}
    if largest_holding is None:
        return summary | {"skipped": "no number of cameras held, so there is no capacity to go past"}
    run = measured(args, model, overload_streams(largest_holding, args.overload), source_fps)
    evenly = bool(run.get("verdict", {}).get("degrades_evenly"))
    return summary | {"streams": run["streams"], "degrades_evenly": evenly, "run": run}


def main() -> None:
    args = parse_args()
    if args.listen:
        print(json.dumps(listen(args.listen, int(args.streams), args.t0, args.warmup, args.window)))
        return
    if args.video is None or not args.video.is_file():
        sys.exit(f"bench_live: --video: not a video file: {args.video}")
    if args.run is not None:
        print(json.dumps(run_cameras(args, args.run)), flush=True)
        sys.stderr.flush()
        os._exit(0)  # as the edgesight command ends: no teardown under a capture thread still in a native read
    model = weights(args)
    nominal_fps = float(cv2.VideoCapture(str(args.video)).get(cv2.CAP_PROP_FPS) or 0.0)
    source_fps = sent_rate(args.video) or nominal_fps
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_live: terminated"))  # unwinds: the server is stopped
    server = serve_rtsp(args) if args.rtsp == "serve" else None
    try:
        runs = sweep(args, model, source_fps)
        held = [r["streams"] for r in runs if r.get("verdict", {}).get("holds")]
        past_capacity = overload(args, model, source_fps, max(held) if held else None)
    finally:
        if server is not None:
            server.kill()
            server.wait()
    document = {
        "machine": machine(),
        "video": args.video.name,
        "cameras": "rtsp" if args.rtsp else "paced looped file",
        "rtsp_server_processes": getattr(args, "rtsp_processes", None),
        "decoding": {
            "decoder": args.decoder,
            "process": args.decode_process,
            "decode_groups": args.decode_groups,
            "group_size": args.group_size,
        },
        "source_fps": round(source_fps, 3),
        "nominal_fps": round(nominal_fps, 3),
        "targets": {"rate_share": HOLD_RATE, "p99_frame_intervals": HOLD_P99_INTERVALS, "max_ms": HOLD_MAX_MS},
        "overload_targets": {
            "p99_frame_intervals": OVERLOAD_P99_INTERVALS,
            "least_to_most_served": OVERLOAD_EVEN_SHARE,
            "fell_behind_s": OVERLOAD_FELL_BEHIND_S,
        },
        "warmup_s": args.warmup,
        "window_s": args.window,
        "largest_holding": max(held) if held else None,
        "runs": runs,
        "overload": past_capacity,
    }
    emit(document, args.out)


if __name__ == "__main__":
    main()
