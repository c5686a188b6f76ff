"""tests/tools/rtsp_file_server.py: a file's H.264 served over RTSP/TCP with a password, read as edgesight reads
a camera (the loopback server the live-density benchmark uses where GStreamer is not installed)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import serve_rtsp, stop_server

from pipeline.errors import PermanentSourceError
from pipeline.sources.video import StreamUrlSource


@pytest.fixture
def served(h264_video: Path) -> Iterator[str]:
    """``rtsp://127.0.0.1:PORT`` serving ``h264_video`` to user ``cam`` with password ``pw``."""
    server, url = serve_rtsp(h264_video, "pw")
    try:
        yield url.replace("cam:pw@", "").removesuffix("/cam0")
    finally:
        stop_server(server)


def test_the_file_plays_paced_and_looped_to_the_right_password(served: str) -> None:
    source = StreamUrlSource(served.replace("rtsp://", "rtsp://cam:pw@") + "/cam0", 10.0, 10.0)
    source.open()
    try:
        frames = [source.read() for _ in range(40)]  # what the client buffered while opening, and more
        started = time.monotonic()
        frames += [source.read() for _ in range(30)]  # past the file's 40: it loops
        elapsed = time.monotonic() - started
    finally:
        source.release()
    assert all(f is not None and f.image.shape == (120, 160, 3) for f in frames)
    assert elapsed > 1.0, f"30 frames in {elapsed:.2f} s: paced at 20 fps (1.5 s), not as fast as it can"
    bright = [int(f.image[40, :, 0].argmax()) for f in frames[:10] if f is not None]
    assert len(set(bright)) > 5, "the square moves: real pictures, not a still"


def test_a_wrong_password_is_refused(served: str) -> None:
    source = StreamUrlSource(served.replace("rtsp://", "rtsp://cam:wrong@") + "/cam0", 5.0, 5.0)
    with pytest.raises(PermanentSourceError, match="401"):
        source.open()
    source.release()


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(v) for v in listed.split()]


def test_several_processes_serve_cameras_at_once_and_end_with_the_first(h264_video: Path) -> None:
    server, url = serve_rtsp(h264_video, "pw", processes=3)
    try:
        children = _children(server.pid)
        counts = [0] * 4

        def watch(i: int) -> None:
            source = StreamUrlSource(url.replace("/cam0", f"/cam{i}"), 10.0, 10.0)
            source.open()
            try:
                counts[i] = sum(source.read() is not None for _ in range(45))
            finally:
                source.release()

        cameras = [threading.Thread(target=watch, args=(i,)) for i in range(4)]
        for camera in cameras:
            camera.start()
        for camera in cameras:
            camera.join(timeout=60)
    finally:
        stop_server(server)
    assert len(children) == 2, f"three processes accept: the first and {children}"
    assert counts == [45] * 4, f"frames each camera read: {counts}"
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], "the forked processes end with the first"
