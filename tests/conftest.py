"""Shared fixtures: an offline detection model, test media, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

MEDIA_ENV = "EDGESIGHT_TEST_MEDIA"


def make_architecture_weights(path: Path, seed: int = 0) -> Path:
    """Save a yolo11n with seeded random weights whose scores vary, so boxes come out.

    Ultralytics' default init leaves the head's class logits almost constant;
    re-initializing convolutions (Kaiming) and scaling the class convolutions
    on a reference frame gives varied classes, scores and boxes.
    """
    import torch
    from ultralytics import YOLO

    from engines.weights import coco_names
    from pipeline.sources.synthetic import SyntheticSource

    torch.manual_seed(seed)
    yolo = YOLO("yolo11n.yaml")
    model = yolo.model
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        heads = [branch[-1] for branch in model.model[-1].cv3]
        stds: dict[int, float] = {}
        hooks = [
            h.register_forward_hook(lambda _m, _i, out, k=k: stds.__setitem__(k, float(out.std())))
            for k, h in enumerate(heads)
        ]
        for h in heads:
            h.bias.zero_()
        ref = SyntheticSource(seed, width=640, height=384).render(0)
        model.eval()(torch.from_numpy(ref[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255)
        for h in hooks:
            h.remove()
        for k, h in enumerate(heads):
            h.weight.mul_(2.0 / max(stds[k], 1e-12))
            h.bias.fill_(-5.0)
    model.names = coco_names()
    yolo.save(str(path))
    return path


@pytest.fixture(scope="session")
def arch_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A yolo11n ``.pt`` with seeded random weights (the real architecture, offline)."""
    return make_architecture_weights(tmp_path_factory.mktemp("weights") / "yolo11n-arch.pt")


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
