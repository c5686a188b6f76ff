"""The browser preview: MJPEG frames arrive, and headless Chromium shows them with their overlays."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import free_port

from pipeline.config import build_config
from pipeline.runner import Pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def previewing() -> Iterator[Pipeline]:
    config = build_config(
        {
            "streams": [
                {
                    "id": "street",
                    "source": {"type": "synthetic", "seed": 5, "frames": 3000},
                    "lines": [{"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}],
                    "zones": [{"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1.0], [0.1, 1.0]]}],
                }
            ],
            "model": {"path": "edgesight-det", "device": "cpu"},
            "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
            "preview": {"port": 0, "max_fps": 5},
        },
        "t",
    )
    pipeline = Pipeline(config)
    pipeline.start()
    yield pipeline
    pipeline.stop()
    pipeline.close()


def mjpeg_frames(port: int, count: int, timeout_s: float = 60) -> list[np.ndarray]:
    frames = []
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream/street.mjpg", timeout=timeout_s) as reply:
        assert reply.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        buffer = b""
        while len(frames) < count:
            buffer += reply.read1(65536)
            start, end = buffer.find(b"\xff\xd8"), buffer.find(b"\xff\xd9")
            if start >= 0 and end > start:
                frames.append(cv2.imdecode(np.frombuffer(buffer[start : end + 2], np.uint8), cv2.IMREAD_COLOR))
                buffer = buffer[end + 2 :]
    return frames


def overlay_pixels(image_bgr: np.ndarray) -> tuple[int, int]:
    """Pixels of the line's yellow and the zone's magenta (BGR (0, 255, 255) and (255, 0, 255), JPEG-tolerant)."""
    b, g, r = (image_bgr[..., i].astype(int) for i in range(3))
    yellow = (b < 90) & (g > 200) & (r > 200)
    magenta = (b > 200) & (g < 90) & (r > 200)
    return int(yellow.sum()), int(magenta.sum())


def test_mjpeg_frames_arrive_with_overlays(previewing: Pipeline) -> None:
    assert previewing.preview is not None
    port = previewing.preview.port
    frames = mjpeg_frames(port, 3)
    assert all(f is not None and f.shape == (360, 640, 3) for f in frames)
    assert not np.array_equal(frames[0], frames[-1]), "the picture moves"
    yellow, magenta = overlay_pixels(frames[-1])
    assert yellow > 300 and magenta > 300, (yellow, magenta)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
        assert b'src="/stream/street.mjpg"' in page.read()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt: chromium)")
def test_headless_chromium_shows_the_annotated_stream(previewing: Pipeline, tmp_path: Path) -> None:
    assert previewing.preview is not None
    port = previewing.preview.port
    mjpeg_frames(port, 1)  # a frame is there before the browser comes
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=700,420",
            "--virtual-time-budget=4000",
            f"--screenshot={shot}",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    image = cv2.imread(str(shot))
    assert image is not None, "Chromium wrote no screenshot"
    picture = image[8:368, 8:648]  # the <img> sits 8 px in (the figure's margin)
    assert picture.std() > 20, "the page shows a picture, not an empty box"
    yellow, magenta = overlay_pixels(picture)
    assert yellow > 300 and magenta > 300, (yellow, magenta)


def test_the_processed_view_shows_what_the_model_saw_with_overlays_where_they_land() -> None:
    """``preview.processed``: a sideways camera's frame is shown turned upright, cropped and gray, and the line and
    a box are drawn where they land in that picture, in colour."""
    from pipeline.config import LineConfig, StreamConfig
    from pipeline.imageops import build_ops
    from pipeline.messages import Frame, FrameResult
    from pipeline.preview import PreviewServer
    from pipeline.recorder import Overlays

    rng = np.random.default_rng(3)
    frame = rng.integers(40, 200, (200, 320, 3), dtype=np.uint8)  # 320 wide, 200 tall
    stream = StreamConfig.model_validate(
        {
            "id": "s",
            "source": "a.mp4",
            "preprocess": [
                {"op": "rotate", "degrees": 90},  # -> 200 wide, 320 tall; frame (x, y) lands at (200 - y, x)
                {"op": "crop", "x": 0, "y": 20, "width": 200, "height": 280},  # -> 200 x 280; y - 20
                {"op": "grayscale"},
            ],
        }
    )
    line = LineConfig(name="gate", points=((0.0, 100.0), (320.0, 100.0)))  # frame row y = 100
    box = np.array([[100.0, 30.0, 160.0, 70.0, 0.9, 0]], np.float32)  # lands at x 130..170, y 80..140
    result = FrameResult.from_rows(Frame("s", 0, 0.0, 0.0, frame), box, {0: "person"})
    server = PreviewServer(
        "127.0.0.1", 0, ["s"], Overlays({"s": ([line], [])}), views={"s": build_ops(stream.preprocess)}
    )
    try:
        server.write(result)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/snapshot/s.jpg", timeout=10) as reply:
            shown = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
    finally:
        server.close()
    assert shown.shape == (280, 200, 3)
    b, g, r = (shown[..., i].astype(int) for i in range(3))
    yellow = (b < 90) & (g > 200) & (r > 200)
    xs = np.nonzero(yellow.any(axis=0))[0]
    assert yellow.sum() > 300 and np.abs(xs.mean() - 100) < 4, "the frame's row y=100 is the view's column x=100"
    red = (r > 200) & (g < 90) & (b < 90)  # class 0's box colour (56, 56, 255)
    red[:84] = False  # the label sits on top of the box, and runs past its right side
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - 130) <= 2 and abs(xs.max() - 170) <= 2 and abs(ys.max() - 140) <= 2, (xs, ys)
    untouched = (np.abs(b - g) < 12) & (np.abs(g - r) < 12)
    assert untouched.mean() > 0.9, "the picture itself went through grayscale"
