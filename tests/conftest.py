"""Shared fixtures: an offline detection model, test media, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from engines.architecture import save_architecture_weights

MEDIA_ENV = "EDGESIGHT_TEST_MEDIA"


@pytest.fixture(scope="session")
def arch_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolo11n ``.pt`` with seeded random weights (the real architecture, offline)."""
    return save_architecture_weights(tmp_path_factory.mktemp("weights") / "yolo11n-arch.pt")


@pytest.fixture(scope="session")
def media() -> Path:
    """Root of the real test footage; tests using it skip when it is not configured."""
    root = os.environ.get(MEDIA_ENV)
    if not root:
        pytest.skip(f"{MEDIA_ENV} is not set (real footage unavailable)")
    path = Path(root)
    if not (path / "videos" / "people1.mp4").is_file():
        pytest.skip(f"{MEDIA_ENV}={root} has no videos/people1.mp4")
    return path


@pytest.fixture(scope="session")
def people1(media: Path) -> Path:
    return media / "videos" / "people1.mp4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    """A 40-frame 160x120 MP4 written here with OpenCV."""
    import cv2

    path = tmp_path / "tiny.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 20.0, (160, 120))
    rng = np.random.default_rng(0)
    for i in range(40):
        frame = np.full((120, 160, 3), 40, np.uint8)
        frame[20:60, (i * 3) % 120 : (i * 3) % 120 + 30] = rng.integers(0, 255, 3)
        writer.write(frame)
    writer.release()
    return path
