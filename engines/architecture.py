"""Seeded architecture-only weights whose outputs vary, for tests and benchmarks offline.

An Ultralytics architecture built from YAML has the real compute of the
trained model but random weights; these helpers make such a model produce
boxes, so speed and fidelity can be measured without downloading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from engines.weights import coco_names


def save_architecture_weights(path: Path, architecture: str = "yolo11n.yaml", seed: int = 0) -> Path:
    """Save ``architecture`` with seeded random weights whose scores vary, so boxes come out.

    Ultralytics' default init leaves the head's class logits almost constant;
    re-initializing convolutions (Kaiming) and scaling the class convolutions
    on a reference frame gives varied classes, scores and boxes.
    """
    import torch
    from ultralytics import YOLO

    torch.manual_seed(seed)
    yolo = YOLO(architecture)
    model: Any = yolo.model
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
        ref = calibration_image(seed)
        model.eval()(torch.from_numpy(ref[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255)
        for h in hooks:
            h.remove()
        for k, h in enumerate(heads):
            h.weight.mul_(0.05 / max(stds[k], 1e-12))
            h.bias.fill_(-1.5)
    model.names = coco_names()
    yolo.save(str(path))
    return path


def calibration_image(seed: int, width: int = 640, height: int = 384) -> np.ndarray:
    """A fixed reference frame (smooth texture, a few flat boxes, noise) that sets the class head's scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    texture = 90 + 25 * np.sin(xx / 17.0) * np.cos(yy / 23.0) + rng.normal(0, 6, (height, width))
    image = np.clip(np.stack([texture, texture * 0.95, texture * 0.9], axis=-1), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 7))):
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0.2 * height, 0.8 * height))
        rng.choice([-1, 1]), rng.uniform(1.5, 5.0)  # (kept: the draws that made this reference frame)
        w, h = float(rng.uniform(0.05, 0.18) * width), float(rng.uniform(0.1, 0.3) * height)
        colour = rng.integers(30, 250, 3)
        x1, y1 = int(x - w), int(y - h / 2)
        image[max(y1, 0) : max(y1 + int(h), 0), max(x1, 0) : max(x1 + int(w), 0)] = colour
    noise = np.random.default_rng(seed * 100_003).integers(-4, 5, image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
