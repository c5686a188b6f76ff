"""Turning raw YOLO outputs for a whole batch into boxes in source pixels.

The filtering rules are Ultralytics' ``non_max_suppression`` (best class per
anchor, ``score > conf``, class filter, ``max_nms`` candidates, class-aware
IoU suppression, ``max_det`` per image) and the rescaling is its
``scale_boxes``. The difference is the shape of the work: one pass over the
batch instead of a Python loop per image, and a single device-to-host copy of
the kept rows, so a GPU batch costs a handful of kernel launches and
synchronisations whatever its size. Suppression is torchvision's NMS kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MAX_WH = 7680
"""Per-group box offset that keeps classes (and images) apart in one NMS call, as Ultralytics does."""
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
    ``(B, N, 6 + extra)`` for end-to-end models (only filtered).
    """
    import torchvision

    batch = int(preds.shape[0])
    if end2end:
        rows = preds.float()
        keep = rows[..., 4] > settings.conf
        if settings.classes is not None:
            keep &= torch.isin(rows[..., 5], torch.tensor(settings.classes, device=rows.device, dtype=rows.dtype))
        image, anchor = keep.nonzero(as_tuple=True)
        kept = torch.cat((rows[image, anchor], image[:, None].float()), 1)
        return _split(kept.cpu().numpy(), batch, settings.max_det)

    x = preds.transpose(1, 2)  # (B, anchors, channels)
    box, cls = x[..., :4], x[..., 4 : 4 + nc]
    extra = x[..., 4 + nc :]
    score, label = cls.max(2)
    keep = score > settings.conf
    if settings.classes is not None:
        keep &= torch.isin(label, torch.tensor(settings.classes, device=label.device))
    image, anchor = keep.nonzero(as_tuple=True)
    if image.numel() > MAX_NMS * batch:  # pathological outputs: keep the most confident
        top = score[image, anchor].topk(MAX_NMS * batch).indices
        image, anchor = image[top], anchor[top]
    boxes = _xywh2xyxy(box[image, anchor].float())
    scores = score[image, anchor].float()
    labels = label[image, anchor]
    group = image if settings.agnostic else image * nc + labels
    # float64 so the per-group offsets leave the boxes' precision intact even for large batches.
    shifted = boxes.double() + (group.double() * MAX_WH)[:, None]
    kept_idx = torchvision.ops.nms(shifted, scores.double(), settings.iou)
    parts = [boxes[kept_idx], scores[kept_idx, None], labels[kept_idx, None].float()]
    if extra.shape[-1]:
        parts.append(extra[image[kept_idx], anchor[kept_idx]].float())
    parts.append(image[kept_idx, None].float())
    kept = torch.cat(parts, 1)
    return _split(kept.cpu().numpy(), batch, settings.max_det)


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
    """NMS on the host over :func:`top_candidates`' rows, image by image; same rules as :func:`batched_nms`.

    Image by image because suppression costs grow with (candidates × kept):
    one call over a whole batch of crowded images would cost the batch size
    times more.
    """
    import torchvision

    out = []
    for rows in cands:
        keep = rows[:, 4] > settings.conf
        if settings.classes is not None:
            keep &= np.isin(rows[:, 5].astype(np.int64), settings.classes)
        rows = rows[keep]
        if not len(rows):
            out.append(rows)
            continue
        rows = rows[np.argsort(-rows[:, 4], kind="stable")]
        boxes = rows[:, :4] if settings.agnostic else rows[:, :4] + rows[:, 5:6] * MAX_WH
        kept = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(rows[:, 4]), settings.iou).numpy()
        out.append(np.ascontiguousarray(rows[kept[: settings.max_det]]))
    return out


def _split(rows: np.ndarray, batch: int, max_det: int) -> list[np.ndarray]:
    """Rows (sorted by score, last column the image index) → one array per image, at most ``max_det`` each."""
    image = rows[:, -1].astype(np.int64)
    order = np.argsort(image, kind="stable")  # stable: score order kept within an image
    rows, image = rows[order, :-1], image[order]
    bounds = np.searchsorted(image, np.arange(batch + 1))
    return [np.ascontiguousarray(rows[bounds[i] : bounds[i + 1]][:max_det]) for i in range(batch)]


def scale_to_sources(
    per_image: Sequence[np.ndarray], input_hw: tuple[int, int], source_shapes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Ultralytics' ``scale_boxes`` (undo letterbox, clip) for each image's rows, in place."""
    from ultralytics.utils import ops

    for rows, shape in zip(per_image, source_shapes, strict=True):
        if len(rows):
            rows[:, :4] = ops.scale_boxes(input_hw, rows[:, :4], shape)
    return list(per_image)
