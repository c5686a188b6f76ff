"""Capture alone: how many RTSP cameras one process reads and decodes at their rate, and what limits it.

No model, no pipeline: N real RTSP cameras (``tests/tools/rtsp_file_server.py`` on loopback, a password, one
server process per 16 cameras) are read by the same sources the pipeline uses, one capture thread each, in a
mode per phase:

- ``demux``: PyAV demuxes, nothing decodes (the network and FFmpeg's RTSP client alone);
- ``cpu`` / ``pyav``: decoded on the CPU by OpenCV / PyAV;
- ``nvdec``: demuxed by PyAV and decoded on NVDEC from each capture thread (``decoder: nvdec``);
- ``nvdec-process``: the same in a decoding process per camera, frames handed over in a ring on the GPU
  (``decoder: nvdec, decode_process: gpu``); ``nvdec-group``: in a few shared ones (``decode_group``);
- ``pyav-process`` / ``pyav-group``: PyAV in a decoding process per camera / in a few shared ones, frames handed
  over in shared memory (what the handover costs this process, without a GPU).

Each phase reports the time until every camera had read a frame (opening them all at once: do they open in
parallel?), per camera the frames read per second against the rate the server sends, the cores this
process (and its decoding processes) and the server used, this process's own CPU time per frame read, and how
long a thread waits for the interpreter lock (the lateness of a 2 ms sleep: a free lock wakes it within a
fraction of a millisecond, a contended one up to the 5 ms switch interval and beyond). Where the pipeline's
capture runs short (``bench_live.py``), this says whether the cameras, the decoders or the interpreter are the
limit::

    python bench/bench_capture.py --video people1_1080p.mp4 --streams 64 --modes demux,nvdec,nvdec-process

One JSON document on stdout (``--out`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_live import emit, free_port, machine, process_tree_cpu_s, sent_rate, start_rtsp_server

from pipeline.config import UrlSourceConfig
from pipeline.sources import make_source
from pipeline.sources.pyav_stream import open_url

MODES: dict[str, dict[str, Any]] = {
    "cpu": {"decoder": "cpu"},
    "pyav": {"decoder": "pyav"},
    "nvdec": {"decoder": "nvdec"},
    "nvdec-process": {"decoder": "nvdec", "decode_process": "gpu"},
    "nvdec-group": {"decoder": "nvdec", "decode_process": "gpu"},
    "pyav-process": {"decoder": "pyav", "decode_process": True},
    "pyav-group": {"decoder": "pyav", "decode_process": True},
}
"""Each decoding mode's source settings (``demux`` reads packets only)."""
GROUPS = 6
"""``*-group``: the cameras share this many decoding processes, dealt out in turn."""
PROBE_SLEEP_S = 0.002


class Cameras:
    """N capture threads of one mode, counting what each reads, until stopped."""

    def __init__(self, urls: list[str], mode: str) -> None:
        self.counts = [0] * len(urls)
        self.first_at: list[float | None] = [None] * len(urls)
        """When each camera read its first frame (``time.monotonic``)."""
        self.started = 0.0
        self.errors: list[str] = []
        self._stop = threading.Event()
        read = self._demux if mode == "demux" else self._decode
        self._threads = [
            threading.Thread(target=self._run, args=(read, i, url, mode), daemon=True) for i, url in enumerate(urls)
        ]

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def all_reading_after_s(self) -> float | None:
        """Seconds from the start until every camera had read a frame (``None``: some never did)."""
        if any(t is None for t in self.first_at):
            return None
        return round(max(t for t in self.first_at if t is not None) - self.started, 2)

    def _count(self, i: int) -> None:
        if self.first_at[i] is None:
            self.first_at[i] = time.monotonic()
        self.counts[i] += 1

    def _run(self, read: Callable[[int, str, str], None], i: int, url: str, mode: str) -> None:
        try:
            read(i, url, mode)
        except Exception as exc:  # one camera's failure is reported with the phase, not raised in its thread
            self.errors.append(f"cam{i}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    def _demux(self, i: int, url: str, mode: str) -> None:
        import av

        container = open_url(av, url, f"cam{i}", 10.0, 10.0)
        try:
            for packet in container.demux(container.streams.video[0]):
                if self._stop.is_set():
                    return
                if packet.size:
                    self._count(i)
        finally:
            container.close()

    def _decode(self, i: int, url: str, mode: str) -> None:
        group = {"decode_group": f"decode{i % GROUPS}"} if mode.endswith("-group") else {}
        source = make_source(UrlSourceConfig(url=url, **MODES[mode], **group))
        source.open()
        try:
            while not self._stop.is_set():
                frame = source.read()
                if frame is None:
                    return
                self._count(i)
                del frame  # let go at once: a decoding process's ring slot is free again
        finally:
            source.release()


class LockProbe(threading.Thread):
    """How late a thread wakes from a short sleep, in ms: the wait for the interpreter lock, mostly."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lateness_ms: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            started = time.perf_counter()
            time.sleep(PROBE_SLEEP_S)
            self.lateness_ms.append((time.perf_counter() - started - PROBE_SLEEP_S) * 1000.0)

    def finish(self) -> dict[str, float]:
        self._done.set()
        self.join()
        values = np.asarray(self.lateness_ms or [0.0])
        return {"mean": round(float(values.mean()), 2), "p99": round(float(np.percentile(values, 99)), 2)}


def phase(urls: list[str], mode: str, server: int, warmup: float, seconds: float, sent_fps: float) -> dict[str, Any]:
    """One mode's cameras: started, given ``warmup`` seconds to connect, then measured for ``seconds``."""
    cameras = Cameras(urls, mode)
    cameras.start()
    try:
        time.sleep(warmup)
        before, ours, theirs = list(cameras.counts), process_tree_cpu_s(os.getpid()), process_tree_cpu_s(server)
        own = time.process_time()  # this process alone: its decoding processes are children
        started = time.monotonic()
        probe = LockProbe()
        probe.start()
        time.sleep(seconds)
        lock = probe.finish()
        elapsed = time.monotonic() - started
        rates = [(b - a) / elapsed for a, b in zip(before, cameras.counts, strict=True)]
        own = time.process_time() - own
        cores = (process_tree_cpu_s(os.getpid()) - ours) / elapsed
        server_cores = (process_tree_cpu_s(server) - theirs) / elapsed
    finally:
        cameras.stop()
    shares = [r / sent_fps for r in rates] if sent_fps else [0.0]
    return {
        "mode": mode,
        "cameras": len(urls),
        "all_reading_after_s": cameras.all_reading_after_s(),
        "fps_min": round(min(rates), 2),
        "fps_mean": round(float(np.mean(rates)), 2),
        "share_min": round(min(shares), 4),
        "share_mean": round(float(np.mean(shares)), 4),
        "cores": round(cores - server_cores, 2),
        "server_cores": round(server_cores, 2),
        "own_cpu_us_per_frame": round(own / max(1.0, sum(rates) * elapsed) * 1e6, 1),
        "lock_wait_ms": lock,
        "errors": cameras.errors[:5],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, required=True, help="H.264 in MP4: each camera's footage, looped")
    parser.add_argument("--streams", type=int, default=8, help="cameras")
    parser.add_argument("--modes", default="demux,pyav", help=f"phases, in order: demux, {', '.join(MODES)}")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds for the cameras to connect")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes.split(",") if m != "demux" and m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)}")
    if not args.video.is_file():
        parser.error(f"--video: not a video file: {args.video}")
    return args


def main() -> None:
    args = parse_args()
    sent_fps = sent_rate(args.video) or 0.0
    port = free_port()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench_capture: terminated"))  # unwinds: the server stops
    server = start_rtsp_server(args.video, port, args.streams)
    try:
        urls = [f"rtsp://bench:s3cret@127.0.0.1:{port}/cam{i}" for i in range(args.streams)]
        phases = []
        for mode in args.modes.split(","):
            phases.append(phase(urls, mode, server.pid, args.warmup, args.seconds, sent_fps))
            print(f"bench_capture: {json.dumps(phases[-1])}", file=sys.stderr)
    finally:
        server.kill()
        server.wait()
    document = {"machine": machine(), "video": args.video.name, "sent_fps": round(sent_fps, 3), "phases": phases}
    emit(document, args.out)


if __name__ == "__main__":
    main()
