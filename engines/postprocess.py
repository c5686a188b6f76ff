"""Turning raw YOLO outputs for a whole batch into boxes in source pixels.

The filtering rules are Ultralytics' ``non_max_suppression`` (best class per
anchor, ``score > conf``, class filter, ``max_nms`` candidates, class-aware
IoU suppression, ``max_det`` per image) and the rescaling is its
``scale_boxes``. The difference is the shape of the work: candidates are picked
for the whole batch in one pass on the model's device and copied to the host
once, so a GPU batch costs a handful of kernel launches whatever its size.
On a GPU, greedy suppression runs there too, in the same CUDA graph
(:func:`greedy_keep`), and the host only picks the kept rows; elsewhere it is
torchvision's NMS kernel, image by image on the host.
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
    graph right after the model; :func:`greedy_keep` (or :func:`nms_candidates`, on the host) suppresses.
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


GREEDY_ROUNDS = 12
"""Rounds of :func:`greedy_keep`; an image whose keep flags still changed in the last round is left to the host."""


def greedy_keep(
    cands: torch.Tensor, settings: NmsSettings, classes: torch.Tensor | None = None, rounds: int = GREEDY_ROUNDS
) -> torch.Tensor:
    """Greedy NMS over :func:`top_candidates`' rows (best first) on the device, in fixed shapes and without host
    synchronisation, so it runs in the CUDA graph after the model.

    Returns ``(B, K + 1)`` uint8: a 1 for each kept candidate, then a 1 when that image's answer is exact. Greedy
    NMS keeps a candidate when no kept, better candidate overlaps it more than ``iou``; its answer is the one fixed
    point of that rule, so the rule is applied to every candidate at once, round after round, and an image whose
    flags no longer change has exactly greedy NMS's answer (the same boxes, IoU arithmetic and order as
    :func:`_suppress`). Ones still changing (long suppression chains, rare) are done on the host. ``classes``:
    the wanted class ids on the device, when filtered.
    """
    score, label = cands[..., 4], cands[..., 5]
    valid = score > settings.conf
    if classes is not None:
        valid &= torch.isin(label, classes)
    boxes = cands[..., :4] if settings.agnostic else cands[..., :4] + label[..., None] * MAX_WH
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    w = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    h = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = w * h
    iou = inter / (area[:, :, None] + area[:, None, :] - inter)
    k = int(cands.shape[1])
    better = torch.ones(k, k, dtype=torch.bool, device=cands.device).triu_(1)  # [i, j]: i ranks before j
    suppresses = (iou > settings.iou) & better & valid[:, :, None]
    keep = previous = valid
    for _ in range(rounds):
        previous, keep = keep, valid & ~(suppresses & keep[:, :, None]).any(1)
    exact = (keep == previous).all(1, keepdim=True)
    return torch.cat([keep, exact], 1).to(torch.uint8)


def pack_kept(
    cands: torch.Tensor,
    keep: torch.Tensor,
    max_det: int,
    input_hw: tuple[int, int],
    source_hw: tuple[int, int],
) -> torch.Tensor:
    """:func:`greedy_keep`'s answer made ready for the host, on the device (inside the CUDA graph), as one ``(B, K +
    1, C + 5)`` float32 tensor, so a batch reaches the host in one copy and the host only slices it.

    Row by row, each image's kept candidates (at most ``max_det``, best first), then the others. Each row holds the
    candidate's ``C`` columns with its box in ``source_hw`` pixels (Ultralytics' ``scale_boxes`` from ``input_hw``),
    then its box as the model saw it, then its rank among the candidates. The last row holds the count of kept rows
    and whether greedy NMS settled for that image (see :func:`unpack_kept`).
    """
    from ultralytics.utils import ops

    b, k, c = (int(n) for n in cands.shape)
    kept = keep[:, :k].bool()
    kept &= kept.cumsum(1) <= max_det
    count = kept.sum(1, keepdim=True)
    # Kept rows first, the rest after them, each in rank order: where each candidate goes, then who goes where.
    place = torch.where(kept, kept.cumsum(1) - 1, count + (~kept).cumsum(1) - 1)
    rank = torch.arange(k, device=cands.device).expand(b, k)
    order = torch.empty_like(place).scatter_(1, place, rank)
    rows = cands.gather(1, order[..., None].expand(-1, -1, c))
    boxes = rows[..., :4].clone()
    ops.scale_boxes(input_hw, boxes, source_hw)  # in place
    body = torch.cat([boxes, rows[..., 4:], rows[..., :4], order[..., None].to(rows.dtype)], 2)
    tail = torch.cat([count.to(rows.dtype), keep[:, k:].to(rows.dtype), body.new_zeros(b, c + 3)], 1)
    return torch.cat([body, tail[:, None]], 1)


def unpack_kept(
    packed: np.ndarray,
    settings: NmsSettings,
    input_hw: tuple[int, int],
    source_shapes: Sequence[tuple[int, int]],
    scaled: bool = True,
) -> list[np.ndarray]:
    """Per image, the rows :func:`pack_kept` kept (copies): in source pixels when ``scaled``, else as the model saw
    them. An image whose greedy NMS had not settled gets the host's NMS over all its candidates instead."""
    k, c = packed.shape[1] - 1, packed.shape[2] - 5

    def as_model_saw(rows: np.ndarray) -> np.ndarray:
        return np.concatenate([rows[:, c : c + 4], rows[:, 4:c]], 1)

    out = []
    for i, (count, exact) in enumerate(packed[:, k, :2].tolist()):
        body = packed[i, :k]
        if exact and scaled:  # the common case: a slice
            out.append(body[: int(count), :c].copy())
            continue
        if exact:
            rows = as_model_saw(body[: int(count)])
        else:
            ranked = body[np.argsort(body[:, -1])]  # as top_candidates ordered them
            rows = _suppress(as_model_saw(ranked), settings)
            if scaled:
                scale_to_sources([rows], input_hw, [source_shapes[i]])
        out.append(rows)
    return out


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

    same: dict[tuple[int, int], list[np.ndarray]] = {}
    for rows, shape in zip(per_image, source_shapes, strict=True):
        if len(rows):
            same.setdefault((int(shape[0]), int(shape[1])), []).append(rows)
    for shape, group in same.items():  # row by row, so one call per source size does a whole batch of streams
        boxes = ops.scale_boxes(input_hw, np.concatenate([rows[:, :4] for rows in group]), shape)
        start = 0
        for rows in group:
            rows[:, :4] = boxes[start : start + len(rows)]
            start += len(rows)
    return list(per_image)
