"""Supervision of live sources: backoff, states, stall versus slow consumer, and a real RTSP server killed and
restarted under a running pipeline."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port
from helpers import config_for, wait_for_message

from engines.base import FrameFormat
from pipeline.config import ReconnectConfig
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.runner import Pipeline
from pipeline.schema import DetectionsMessage, StatusMessage
from pipeline.sources.base import RawFrame
from pipeline.subscriber import Subscriber
from pipeline.supervision import Backoff, StateChange, SupervisedSource

SERVER = Path(__file__).resolve().parent / "tools" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def test_backoff_doubles_up_to_the_cap_with_jitter_and_resets() -> None:
    exact = Backoff(0.5, 4.0, 0.0)
    assert [exact.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    exact.reset()
    assert exact.next_delay() == 0.5
    jittered = Backoff(1.0, 8.0, 0.25, random.Random(1))
    delays = [jittered.next_delay() for _ in range(200)]
    assert all(0.75 <= d <= 10.0 for d in delays)
    assert len({round(d, 6) for d in delays[5:]}) > 100, "capped waits still differ (cameras do not retry in step)"


class ScriptedCamera:
    """A fake camera at the source seam. ``script`` per connection: an int = frames then a failure,
    ``"refuse"`` = open fails, ``"stall"`` = the next read takes ``stall_s`` then returns a frame, ``"slow"`` =
    open takes ``stall_s``, then 3 frames."""

    live = True
    description = "scripted camera"

    def __init__(self, script: list[Any], stall_s: float = 0.0) -> None:
        self.script = script
        self.stall_s = stall_s
        self.frames = 0
        self.opened = 0
        self.released = 0

    def factory(self) -> Any:
        parent = self

        class Connection:
            live = True
            description = "scripted camera"
            frame_format = FrameFormat((8, 8, 3))

            def __init__(self) -> None:
                self.step: Any = None
                self.left = 0

            def open(self) -> None:
                parent.opened += 1
                self.step = parent.script.pop(0) if parent.script else 10**9
                if self.step == "refuse":
                    raise SourceError("scripted camera: connection refused")
                if self.step == "404":
                    raise PermanentSourceError("scripted camera: the server answered 404 Not Found")
                if self.step == "slow":
                    time.sleep(parent.stall_s)
                self.left = 1 if self.step == "stall" else 3 if self.step == "slow" else int(self.step)

            def read(self) -> RawFrame | None:
                if self.step == "stall":
                    time.sleep(parent.stall_s)
                if self.left <= 0:
                    raise SourceError("scripted camera: stream stopped delivering frames")
                self.left -= 1
                parent.frames += 1
                return RawFrame(np.zeros((8, 8, 3), np.uint8), 40.0 * (3 - self.left))

            def release(self) -> None:
                parent.released += 1

            def interrupt(self) -> None:
                pass

        return Connection()


def supervised(camera: ScriptedCamera, **reconnect: Any) -> tuple[SupervisedSource, list[StateChange]]:
    changes: list[StateChange] = []
    cfg = ReconnectConfig(**{"base_s": 0.01, "cap_s": 0.05, "jitter": 0.0, **reconnect})
    return SupervisedSource("cam", camera.factory, cfg, changes.append), changes


def test_a_camera_that_refuses_then_drops_out_is_reconnected_and_reported() -> None:
    camera = ScriptedCamera(["refuse", "refuse", 3, "refuse", 2])
    source, changes = supervised(camera)
    source.open()
    frames = [source.read() for _ in range(5)]
    assert all(f is not None for f in frames)
    pts = [f.pts_ms for f in frames if f is not None]
    assert pts == sorted(pts) and len(set(pts)) == 5, "timestamps keep rising across reconnects"
    states = [(c.state, c.attempt) for c in changes]
    assert states == [("connecting", 0), ("reconnecting", 1), ("online", 0), ("reconnecting", 1), ("online", 0)]
    assert changes[1].reason == "scripted camera: connection refused" and changes[1].retry_in_s == 0.01
    assert source.reconnects == 1 and camera.opened == 5


def test_giving_up_and_permanent_errors_end_the_stream() -> None:
    source, _ = supervised(ScriptedCamera(["refuse"] * 5), max_attempts=3)
    source.open()
    with pytest.raises(SourceError, match="gave up after 3 attempts"):
        source.read()
    source, changes = supervised(ScriptedCamera(["404"]))
    source.open()
    with pytest.raises(PermanentSourceError, match="404"):
        source.read()
    assert [c.state for c in changes] == ["connecting"]


def test_a_first_connection_made_early_gives_the_format_before_any_read_and_its_error_to_the_first_read() -> None:
    """Start-up connects cameras while the model loads, so the warm-up knows their frames' format."""
    camera = ScriptedCamera([3])
    source, changes = supervised(camera)
    source.open()
    assert source.frame_format is None, "not connected yet"
    source.connect_early()
    source.wait_connected(5.0)
    assert camera.opened == 1 and source.frame_format == FrameFormat((8, 8, 3))
    assert source.read() is not None and camera.opened == 1, "the first read uses the early connection"
    assert [c.state for c in changes] == ["connecting", "online"]

    refused, _ = supervised(ScriptedCamera(["404"]))
    refused.open()
    refused.connect_early()
    refused.wait_connected(5.0)
    with pytest.raises(PermanentSourceError, match="404"):  # reported by the capture thread, as before
        refused.read()

    slow = ScriptedCamera(["slow"], stall_s=0.3)
    stopped, _ = supervised(slow)
    stopped.open()
    stopped.connect_early()
    time.sleep(0.05)
    stopped.interrupt()  # the pipeline stops while the camera connects
    stopped.wait_connected(5.0)
    assert slow.opened == 1 and slow.released == 1, "a connection finished after the stop is not left open"
    assert stopped.read() is None


class AnnouncingCamera:
    """A fake camera whose stream announces its picture size as it opens (NVDEC cameras read it from the stream's
    description), then waits for ``go_on`` before its first frame; ``fail`` makes that first frame never come."""

    live = True
    description = "announcing camera"

    def __init__(self, go_on: threading.Event, fail: bool = False) -> None:
        self.go_on = go_on
        self.fail = fail
        self.announced = threading.Event()
        self.frame_format: FrameFormat | None = None

    def open(self) -> None:
        self.frame_format = FrameFormat((6, 10, 3))
        self.announced.set()
        self.go_on.wait(5.0)
        if self.fail:
            raise SourceError("announcing camera: no frame could be decoded")

    def read(self) -> RawFrame | None:
        return RawFrame(np.zeros((6, 10, 3), np.uint8), 0.0)

    def release(self) -> None:
        pass

    def interrupt(self) -> None:
        pass


@pytest.mark.parametrize("fail", [False, True], ids=["connects", "fails-after-announcing"])
def test_a_camera_s_announced_format_is_known_while_it_connects(fail: bool) -> None:
    """Start-up warms up on a camera's announced format without waiting for its first frame to decode; a camera
    whose connection then fails has no format."""
    go_on = threading.Event()
    camera = AnnouncingCamera(go_on, fail)
    source = SupervisedSource("cam", lambda: camera, ReconnectConfig(), lambda change: None)
    source.open()
    assert source.frame_format is None
    source.connect_early()
    assert camera.announced.wait(5.0)
    assert source.connecting and source.frame_format == FrameFormat((6, 10, 3))
    go_on.set()
    source.wait_connected(5.0)
    assert not source.connecting
    assert source.frame_format == (None if fail else FrameFormat((6, 10, 3)))


def test_a_refusal_after_the_first_attempt_is_retried() -> None:
    camera = ScriptedCamera([2, "404", "404", 1])  # online, then a rebooting camera's answers
    source, changes = supervised(camera)
    source.open()
    assert all(source.read() is not None for _ in range(3))
    assert [c.state for c in changes] == ["connecting", "online", "reconnecting", "online"]
    assert camera.opened == 4
    camera = ScriptedCamera(["refuse", "404", 1])  # unreachable at first, then not ready
    source, changes = supervised(camera)
    source.open()
    assert source.read() is not None and camera.opened == 3


def test_a_long_outage_goes_offline_and_comes_back() -> None:
    source, changes = supervised(ScriptedCamera(["refuse"] * 8 + [1]), offline_after_s=0.1)
    source.open()
    assert source.read() is not None
    assert [c.state for c in changes] == ["connecting", "reconnecting", "offline", "online"]


def test_a_stalled_read_is_a_lost_camera_but_a_slow_consumer_is_not() -> None:
    camera = ScriptedCamera([2, 2, 2])
    source, changes = supervised(camera, idle_timeout_s=0.2)
    source.open()
    for _ in range(2):
        assert source.read() is not None
        time.sleep(0.5)  # the consumer is slow: longer than the idle timeout, outside read()
    assert [c.state for c in changes] == ["connecting", "online"], "time outside read() never counts"
    stalled = ScriptedCamera(["stall", 2], stall_s=0.3)
    source, changes = supervised(stalled, idle_timeout_s=0.2)
    source.open()
    assert source.read() is not None
    assert [c.state for c in changes] == ["connecting", "reconnecting", "online"]
    assert "no frame for 0.2 s" in (changes[1].reason or "")


def test_interrupt_ends_a_backoff_wait_at_once() -> None:
    source, _ = supervised(ScriptedCamera(["refuse"] * 100), base_s=30.0, cap_s=30.0)
    source.open()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(source.read()))
    reader.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    source.interrupt()
    reader.join(2)
    assert not reader.is_alive() and got == [None] and time.monotonic() - t0 < 0.5


# -- a real RTSP server on loopback ---------------------------------------------------------------------------
def _server_works() -> str | None:
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return "GStreamer's RTSP server is not installed (apt: gir1.2-gst-rtsp-server-1.0 python3-gi)"
    if (
        shutil.which("gst-inspect-1.0")
        and subprocess.run(["gst-inspect-1.0", "x264enc"], capture_output=True).returncode
    ):
        return "x264enc is missing (apt: gstreamer1.0-plugins-ugly)"
    return None


class RtspServer:
    """``tests/tools/rtsp_server.py`` on ``port``; ``options`` (its command-line options) apply from the next start."""

    def __init__(self, port: int, *options: str) -> None:
        self.port = port
        self.options = list(options)
        self.url = f"rtsp://127.0.0.1:{port}/live"
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), str(self.port), *self.options],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    reason = _server_works()
    if reason:
        pytest.skip(reason)
    server = RtspServer(free_port())
    server.start()
    yield server
    server.kill()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_killing_and_restarting_the_rtsp_server_ten_times(rtsp_server: RtspServer, tiny_video: Path) -> None:
    streams = [
        {"id": "cam", "source": rtsp_server.url, "reconnect": {"base_s": 0.2, "cap_s": 1.0, "jitter": 0.1}},
        {"id": "file", "source": {"type": "file", "path": str(tiny_video), "loop": True, "realtime": True}},
    ]
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = config_for(endpoint, streams, {"path": "unused"}, publish={"wait_for_subscriber": False})
    from test_sources import FakeEngine

    pipeline = Pipeline(config, engine_factory=lambda _s, _n: FakeEngine())
    runner = threading.Thread(target=pipeline.run, daemon=True)
    seen: list[Any] = []
    with Subscriber(endpoint) as sub:
        runner.start()

        def wait_for(pred: Any, timeout: float) -> None:
            wait_for_message(sub, pred, timeout, seen)

        def cam_frame(m: Any) -> bool:
            return isinstance(m, DetectionsMessage) and m.stream_id == "cam"

        def cam_state(state: str) -> Any:
            return lambda m: isinstance(m, StatusMessage) and m.stream_id == "cam" and m.event == state

        wait_for(cam_frame, 30)
        baseline: tuple[int, int] | None = None
        recoveries = []

        def file_frames() -> int:
            return sum(isinstance(m, DetectionsMessage) and m.stream_id == "file" for m in seen)

        during_outage = []
        for cycle in range(10):
            rtsp_server.kill()
            wait_for(cam_state("reconnecting"), 20)
            before = file_frames()
            rtsp_server.start()
            restarted = time.monotonic()
            wait_for(cam_state("online"), 20)
            during_outage.append(file_frames() - before)
            wait_for(cam_frame, 10)
            recoveries.append(round(time.monotonic() - restarted, 2))
            if cycle == 1:
                baseline = (threading.active_count(), _open_fds())
        final = (threading.active_count(), _open_fds())
        pipeline.stop_event.set()
        runner.join(10)
    assert not runner.is_alive()
    assert baseline is not None
    print(f"frames again {recoveries} s after the restart; threads/fds after cycle 2 {baseline}, after 10 {final}")
    # within the backoff cap (1 s) plus the RTSP handshake (about 2 s with this server)
    assert max(recoveries) < 1.0 + 4.0
    assert final[0] <= baseline[0] and final[1] <= baseline[1] + 2, "no thread or socket leaks across cycles"
    file_seq = [m.seq for m in seen if isinstance(m, DetectionsMessage) and m.stream_id == "file"]
    assert file_seq == list(range(file_seq[0], file_seq[0] + len(file_seq))) and len(file_seq) > 100
    print(f"file frames published while the camera was down, per cycle: {during_outage}")
    assert min(during_outage) >= 5, "the file stream kept flowing while the camera was down"
    reconnecting = [m for m in seen if isinstance(m, StatusMessage) and m.event == "reconnecting"]
    assert all(m.raw["reason"] and m.raw["attempt"] >= 1 and m.raw["retry_in_s"] <= 1.1 for m in reconnecting)


def _edgesight(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_wrong_rtsp_path_is_one_clear_line(rtsp_server: RtspServer, arch_weights: Path) -> None:
    wrong = rtsp_server.url.replace("/live", "/nosuch")
    proc = _edgesight(
        "run", "--source", wrong, "--model", str(arch_weights), "--publish", f"tcp://127.0.0.1:{free_port()}"
    )
    _out, err = proc.communicate(timeout=20)
    lines = [line for line in err.splitlines() if line.strip() and " INFO " not in line]
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("edgesight: error: ") and "404" in lines[-1] and "/nosuch" in lines[-1]


def test_an_unreachable_camera_at_start_up_is_retried_and_sigterm_still_stops_at_once(
    arch_weights: Path, tiny_video: Path
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with Subscriber(endpoint) as sub:
        proc = _edgesight(
            "run",
            "--source",
            "rtsp://127.0.0.1:1/live",
            "--source",
            str(tiny_video),
            "--model",
            str(arch_weights),
            "--publish",
            endpoint,
        )
        events: list[tuple[str, str]] = []
        file_frames = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (("cam1", "eos") in events and ("cam0", "reconnecting") in events):
            msg = sub.recv(0.2)
            if isinstance(msg, StatusMessage):
                events.append((msg.stream_id, msg.event))
            elif isinstance(msg, DetectionsMessage) and msg.stream_id == "cam1":
                file_frames += 1
        assert ("cam0", "reconnecting") in events and ("cam1", "eos") in events, events
        assert file_frames == 40, "the other stream ran to its end while the camera was unreachable"
        assert proc.poll() is None, "an unreachable camera is retried, not fatal"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
        while (msg := sub.recv(0.5)) is not None:
            if isinstance(msg, StatusMessage):
                events.append((msg.stream_id, msg.event))
    assert proc.returncode == 0 and elapsed < 2.0, elapsed
    assert ("cam0", "stopped") in events
