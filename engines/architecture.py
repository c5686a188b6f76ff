"""Seeded architecture-only weights whose outputs vary, for tests and benchmarks offline.

An Ultralytics architecture built from YAML has the real compute of the
trained model but random weights; these helpers make such a model produce
boxes, so speed and fidelity can be measured without downloading anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.weights import coco_names


def save_architecture_weights(path: Path, architecture: str = "yolo11n.yaml", seed: int = 0) -> Path:
    """Save ``architecture`` with seeded random weights whose scores vary, so boxes come out.

    Ultralytics' default init leaves the head's class logits almost constant;
    re-initializing convolutions (Kaiming) and scaling the class convolutions
    on a reference frame gives varied classes, scores and boxes.
    """
    import torch
    from ultralytics import YOLO

    from pipeline.sources.synthetic import SyntheticSource

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
        ref = SyntheticSource(seed, width=640, height=384).render(0)
        model.eval()(torch.from_numpy(ref[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255)
        for h in hooks:
            h.remove()
        for k, h in enumerate(heads):
            h.weight.mul_(0.05 / max(stds[k], 1e-12))
            h.bias.fill_(-1.5)
    model.names = coco_names()
    yolo.save(str(path))
    return path
