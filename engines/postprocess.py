"""Turning raw YOLO outputs for a whole batch into boxes in source pixels.

The filtering rules are Ultralytics' ``non_max_suppression`` (best class per
anchor, ``score > conf``, class filter, ``max_nms`` candidates, class-aware
IoU suppression, ``max_det`` per image) and the rescaling is its
``scale_boxes``. The difference is the shape of the work: candidates are picked
for the whole batch in one pass on the model's device and copied to the host
once, so a GPU batch costs a handful of kernel launches whatever its size;
suppression (torchvision's NMS kernel) then runs image by image on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MAX_WH = 7680
"""Per-class box offset that keeps classes apart in one NMS call, as Ultralytics does."""
MAX_NMS = 30000
"""At most this many candidates per image enter NMS."""


@dataclass(frozen=True, slots=True)
class NmsSettings:
    conf: float
    iou: float
    max_det: int
    classes: tuple[int, ...] | None = None
    agnostic: bool = False


def _xywh2xyxy(b: torch.Tensor) -> torch.Tensor:
    xy, wh = b[..., :2], b[..., 2:4] / 2
    return torch.cat((xy - wh, xy + wh), -1)


def batched_nms(preds: torch.Tensor, settings: NmsSettings, nc: int, end2end: bool = False) -> list[np.ndarray]:
    """Per image, the kept rows ``x1, y1, x2, y2, score, class, *extra`` (float32, model-input pixels).

    ``preds`` is ``(B, 4 + nc + extra, anchors)`` for NMS models, or
    ``(B, N, 6 + extra)`` for end-to-end models (only filtered). Anchors over
    ``conf`` are selected on the model's device and copied to the host once.
    """
    if end2end:
        return [_filtered(rows, settings)[: settings.max_det] for rows in preds.float().cpu().numpy()]
    x = preds.transpose(1, 2)  # (B, anchors, channels)
    score, label = x[..., 4 : 4 + nc].max(2)
    image, anchor = (score > settings.conf).nonzero(as_tuple=True)
    picked = x[image, anchor]
    parts = [_xywh2xyxy(picked[:, :4]), score[image, anchor, None], label[image, anchor, None].to(x.dtype)]
    rows = torch.cat([*parts, picked[:, 4 + nc :]], 1).float().cpu().numpy()
    images = image.cpu().numpy()
    return [_suppress(rows[images == i], settings) for i in range(int(preds.shape[0]))]


def top_candidates(preds: torch.Tensor, nc: int, k: int) -> torch.Tensor:
    """The ``k`` best-scoring anchors of each image as ``(B, k, 6 + extra)`` rows ``x1, y1, x2, y2, score, class, …``.

    Fixed shapes and no host synchronisation, so it can run inside a CUDA
    graph right after the model; :func:`nms_candidates` finishes on the host.
    """
    x = preds.transpose(1, 2)
    score, label = x[..., 4 : 4 + nc].max(2)
    top = score.topk(min(k, int(score.shape[1])), dim=1).indices
    gather = top[..., None]
    rows = [
        _xywh2xyxy(x[..., :4].gather(1, gather.expand(-1, -1, 4))),
        score.gather(1, top)[..., None],
        label.gather(1, top)[..., None].to(x.dtype),
    ]
    if x.shape[-1] > 4 + nc:
        extra = x.shape[-1] - 4 - nc
        rows.append(x[..., 4 + nc :].gather(1, gather.expand(-1, -1, extra)))
    return torch.cat(rows, -1).float()


def nms_candidates(cands: np.ndarray, settings: NmsSettings) -> list[np.ndarray]:
    """NMS on the host over :func:`top_candidates`' rows; same rules as :func:`batched_nms`."""
    return [_suppress(rows, settings) for rows in cands]


def _filtered(rows: np.ndarray, settings: NmsSettings) -> np.ndarray:
    """Rows over the confidence threshold and of the wanted classes, in their order."""
    keep = rows[:, 4] > settings.conf
    if settings.classes is not None:
        keep &= np.isin(rows[:, 5].astype(np.int64), settings.classes)
    return rows[keep]


def _suppress(rows: np.ndarray, settings: NmsSettings) -> np.ndarray:
    """One image's rows after filtering and class-aware NMS, most confident first, at most ``max_det``.

    Image by image, because suppression costs grow with (candidates × kept):
    one call over a whole batch of crowded images would cost batch-size times more.
    """
    import torchvision

    rows = _filtered(rows, settings)
    if not len(rows):
        return rows
    rows = rows[np.argsort(-rows[:, 4], kind="stable")[:MAX_NMS]]
    boxes = rows[:, :4] if settings.agnostic else rows[:, :4] + rows[:, 5:6] * MAX_WH
    kept = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(rows[:, 4]), settings.iou).numpy()
    return np.ascontiguousarray(rows[kept[: settings.max_det]])


def scale_to_sources(
    per_image: Sequence[np.ndarray], input_hw: tuple[int, int], source_shapes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Ultralytics' ``scale_boxes`` (undo letterbox, clip) for each image's rows, in place."""
    from ultralytics.utils import ops

    for rows, shape in zip(per_image, source_shapes, strict=True):
        if len(rows):
            rows[:, :4] = ops.scale_boxes(input_hw, rows[:, :4], shape)
    return list(per_image)
