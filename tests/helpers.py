"""Running a pipeline in the background while a real ZeroMQ subscriber collects what it publishes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from conftest import free_port

from pipeline.config import PipelineConfig, build_config
from pipeline.runner import Pipeline, RunReport
from pipeline.schema import DetectionsMessage, Message, StatusMessage
from pipeline.subscriber import Subscriber

END_EVENTS = {"eos", "stopped", "error"}


@dataclass
class Collected:
    messages: list[Message] = field(default_factory=list)
    report: RunReport | None = None
    error: BaseException | None = None
    missed: int = 0

    def detections(self, stream_id: str | None = None, topic: str = "detections") -> list[DetectionsMessage]:
        """``detections.<id>`` messages (``topic="faces"``: the face detector's ``faces.<id>``)."""
        return [
            m
            for m in self.messages
            if isinstance(m, DetectionsMessage)
            and m.topic.startswith(topic + ".")
            and (stream_id is None or m.stream_id == stream_id)
        ]

    def statuses(self, stream_id: str | None = None) -> list[StatusMessage]:
        return [
            m for m in self.messages if isinstance(m, StatusMessage) and (stream_id is None or m.stream_id == stream_id)
        ]


def reference_frames(folder: Path, count: int) -> list[np.ndarray]:
    """``count`` fixed reference frames (``calibration_image`` seeds 1…count), also written to ``folder`` as PNGs
    for an image-folder source."""
    from engines.architecture import calibration_image

    frames = [calibration_image(seed) for seed in range(1, count + 1)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return frames


def config_for(
    endpoint: str,
    streams: list[dict[str, Any]],
    model: dict[str, Any],
    publish: dict[str, Any] | None = None,
    **extra: Any,
) -> PipelineConfig:
    publish = {"endpoint": endpoint, "wait_for_subscriber": True, "subscriber_timeout_s": 20, **(publish or {})}
    return build_config({"streams": streams, "model": model, "publish": publish, **extra}, "test")


def wait_for_message(sub: Subscriber, pred: Any, timeout: float, seen: list[Message]) -> None:
    """Receive from ``sub``, keeping every message in ``seen``, until one satisfies ``pred``; fail after ``timeout`` s,
    naming the stream states seen so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(0.1)
        if msg is not None:
            seen.append(msg)
            if pred(msg):
                return
    states = [f"{m.stream_id}:{m.event}" for m in seen if isinstance(m, StatusMessage)]
    raise AssertionError(f"timed out after {timeout} s; states so far {states[-10:]}")


def run_and_collect(config: PipelineConfig, timeout_s: float = 240.0, **pipeline_kwargs: Any) -> Collected:
    """Run ``config`` to its end with a subscriber attached; every stream must end within ``timeout_s``.

    ``pipeline_kwargs`` go to :class:`Pipeline` (fakes at its seams).
    """
    out = Collected()
    pipeline = Pipeline(config, **pipeline_kwargs)

    def target() -> None:
        try:
            out.report = pipeline.run()
        except BaseException as exc:
            out.error = exc

    ids = {s.id for s in config.streams}
    ended: set[str] = set()
    with Subscriber(config.publish.endpoint) as sub:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout_s
        while ended != ids and time.monotonic() < deadline:
            msg = sub.recv(0.5)
            if msg is None:
                if not thread.is_alive():
                    break
                continue
            out.messages.append(msg)
            if isinstance(msg, StatusMessage) and msg.event in END_EVENTS:
                ended.add(msg.stream_id)
        out.missed = sub.missed
    if ended != ids:
        pipeline.stop_event.set()
    thread.join(10)
    assert not thread.is_alive(), "pipeline did not finish"
    if out.error is not None:
        raise out.error
    return out


RTSP_SERVER = Path(__file__).resolve().parent / "tools" / "rtsp_file_server.py"


def serve_rtsp(
    video: Path, password: str, user: str = "cam", processes: int = 1, sets_in_band: bool = True
) -> tuple[subprocess.Popen[str], str]:
    """Start the loopback RTSP server (``tests/tools/rtsp_file_server.py``) on ``video`` at a free port; its
    process and ``rtsp://USER:PASSWORD@127.0.0.1:PORT/cam0``. Stop it with :func:`stop_server`.
    ``sets_in_band=False``: keyframes come without SPS/PPS, which only the SDP carries (some cameras)."""
    port = free_port()
    cmd = [sys.executable, str(RTSP_SERVER), str(video), str(port), "--user", user, "--password", password]
    cmd += ["--processes", str(processes), *([] if sets_in_band else ["--sets-in-sdp-only"])]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if server.stdout is None or server.stdout.readline().strip() != "ready":
        stop_server(server)
        raise AssertionError("the loopback RTSP server did not start")
    return server, f"rtsp://{user}:{password}@127.0.0.1:{port}/cam0"


def stop_server(server: subprocess.Popen[str]) -> None:
    server.kill()
    server.communicate()
