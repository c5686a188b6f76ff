"""Shared fixtures: an offline detection model, test media, free ports."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engines.architecture import save_architecture_weights
from pipeline.config import DEFAULT_ENDPOINT

MEDIA_ENV = "EDGESIGHT_TEST_MEDIA"


@pytest.fixture(scope="session", autouse=True)
def engine_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """ONNX exports and engines go to a cache of this test session, not the user's (subprocesses inherit it)."""
    home = tmp_path_factory.mktemp("xdg-cache")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(home)
    yield home
    if old is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session", autouse=True)
def default_port_held() -> Iterator[None]:
    """Hold the default publish port while the tests run: a test that binds it (instead of a free port) fails
    here every time, not only on a machine where something else happens to use it."""
    port = int(DEFAULT_ENDPOINT.rsplit(":", 1)[1])
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
    except OSError:  # something else on this machine holds it already, which has the same effect
        holder.close()
        yield
        return
    with holder:
        yield


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
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 20.0, (160, 120))
    rng = np.random.default_rng(0)
    for i in range(40):
        frame = np.full((120, 160, 3), 40, np.uint8)
        frame[20:60, (i * 3) % 120 : (i * 3) % 120 + 30] = rng.integers(0, 255, 3)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def h264_video(tmp_path: Path) -> Path:
    """A 40-frame 160x120 H.264 MP4 at 20 fps (a keyframe every 20), encoded here with PyAV's libx264."""
    av = pytest.importorskip("av", reason="PyAV is not installed")
    path = tmp_path / "h264.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt, stream.options = 160, 120, "yuv420p", {"g": "20"}
        for i in range(40):
            frame = np.full((120, 160, 3), 40, np.uint8)
            frame[20:60, (i * 3) % 120 : (i * 3) % 120 + 30] = 200
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        out.mux(stream.encode())
    return path


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _tensorrt_importable() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``trt`` tests where TensorRT does not import, saying why."""
    needs_gpu = [i for i in items if "gpu" in i.keywords]
    needs_trt = [i for i in items if "trt" in i.keywords]
    if needs_gpu and not _cuda_available():
        for item in needs_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))
    if needs_trt and not _tensorrt_importable():
        for item in needs_trt:
            item.add_marker(pytest.mark.skip(reason="tensorrt does not import on this machine"))
