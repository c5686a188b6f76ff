"""Scoring published detections against a generated scene's truth (recall and precision at an IoU)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.synth.scene import MIN_VISIBLE_FRACTION


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Score:
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def recall(self) -> float:
        total = self.true_positives + self.false_negatives
        return self.true_positives / total if total else 1.0

    @property
    def precision(self) -> float:
        total = self.true_positives + self.false_positives
        return self.true_positives / total if total else 1.0


Box = Sequence[float]


def _match(gt: list[tuple[str, Box]], found: list[tuple[str, Box]], iou_min: float) -> tuple[set[int], set[int]]:
    """Greedy one-to-one matching, same label, best IoU first; returns matched truth and detection indices."""
    pairs = sorted(
        ((iou(g[1], d[1]), gi, di) for gi, g in enumerate(gt) for di, d in enumerate(found) if g[0] == d[0]),
        reverse=True,
    )
    used_g: set[int] = set()
    used_d: set[int] = set()
    for value, gi, di in pairs:
        if value < iou_min:
            break
        if gi not in used_g and di not in used_d:
            used_g.add(gi)
            used_d.add(di)
    return used_g, used_d


def score_frames(
    truth: Iterable[dict[str, Any]],
    detections: dict[int, list[tuple[str, Box]]],
    iou_min: float = 0.5,
    min_visible: float = MIN_VISIBLE_FRACTION,
) -> Score:
    """Recall and precision of ``detections`` against ``truth.jsonl`` lines at ``iou_min``.

    Objects less visible than ``min_visible`` (mostly hidden or cut by the frame edge) are "ignore"
    regions, as in KITTI's and COCO's protocols: missing them is no error, and a detection that
    matches one is neither a true nor a false positive.
    """
    tp = fp = fn = 0
    for frame in truth:
        found = list(detections.get(frame["frame_index"], []))
        objects = frame["objects"]
        required = [(o["label"], o["box"]) for o in objects if o.get("visible", 1.0) >= min_visible]
        ignored = [(o["label"], o["box"]) for o in objects if o.get("visible", 1.0) < min_visible]
        used_g, used_d = _match(required, found, iou_min)
        rest = [d for i, d in enumerate(found) if i not in used_d]
        _, ignored_d = _match(ignored, rest, iou_min)
        tp += len(used_g)
        fn += len(required) - len(used_g)
        fp += len(rest) - len(ignored_d)
    return Score(tp, fp, fn)
