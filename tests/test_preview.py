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
