"""tests/tools/rtsp_file_server.py: a file's H.264 served over RTSP/TCP with a password, read as edgesight reads
a camera (the loopback server the live-density benchmark uses where GStreamer is not installed)."""

from __future__ import annotations

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
