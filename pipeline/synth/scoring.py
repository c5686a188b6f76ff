"""Scoring published detections against a generated scene's truth (recall and precision at an IoU)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.analytics.geometry import iou
from pipeline.synth.scene import LABELS, MIN_VISIBLE_FRACTION

if TYPE_CHECKING:
    from pipeline.analytics.events import Event
    from pipeline.config import EventsConfig, StreamConfig


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


def _pairs(gt: list[tuple[str, Box]], found: list[tuple[str, Box]], iou_min: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, same label, best IoU first: ``(truth index, detection index)`` pairs."""
    candidates = sorted(
        ((iou(g[1], d[1]), gi, di) for gi, g in enumerate(gt) for di, d in enumerate(found) if g[0] == d[0]),
        reverse=True,
    )
    used_g: set[int] = set()
    used_d: set[int] = set()
    pairs = []
    for value, gi, di in candidates:
        if value < iou_min:
            break
        if gi not in used_g and di not in used_d:
            used_g.add(gi)
            used_d.add(di)
            pairs.append((gi, di))
    return pairs


def _match(gt: list[tuple[str, Box]], found: list[tuple[str, Box]], iou_min: float) -> tuple[set[int], set[int]]:
    """Matched truth and detection indices (see :func:`_pairs`)."""
    pairs = _pairs(gt, found, iou_min)
    return {g for g, _ in pairs}, {d for _, d in pairs}


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


def truth_analytics(
    truth: Iterable[dict[str, Any]], stream: StreamConfig, events: EventsConfig | None = None, fps: float = 30.0
) -> tuple[dict[str, Any], list[Event]]:
    """Final counts and all events for a scene's truth, worked out by the pipeline's own analytics.

    The truth's track ids stand in for the tracker; anchors, crossings, zones and
    track endings follow exactly the rules applied to detections.
    """
    import numpy as np

    from pipeline.analytics.stream import StreamAnalytics
    from pipeline.config import EventsConfig, TrackingConfig
    from pipeline.messages import Frame, FrameResult

    label_ids = {label: i for i, label in enumerate(LABELS)}
    names = dict(enumerate(LABELS))
    # true ids never fragment: every zone entry counts
    zones = [zone.model_copy(update={"continue_visits": False}) for zone in stream.zones]
    stream = stream.model_copy(update={"zones": zones})
    analytics = StreamAnalytics(stream, TrackingConfig(), events or EventsConfig(objects=False), 0.25)
    out: list[Event] = []
    for record in truth:
        objs = record["objects"]
        boxes = np.array([[*o["box"], 1.0, label_ids[o["label"]]] for o in objs], dtype=np.float32).reshape(-1, 6)
        ids = np.array([o["track_id"] for o in objs], dtype=np.int64)
        image = np.zeros((record["height"], record["width"], 3), np.uint8)
        index = int(record["frame_index"])
        frame = Frame(stream.id, index, index * 1000.0 / fps, 0.0, image)
        out += analytics.process(FrameResult(frame, boxes, names), ids).events
    events_at_end, counts = analytics.finish()
    return counts, out + events_at_end


@dataclass(frozen=True)
class TrackScore:
    truth_tracks: int
    """Truth tracks matched by a detection at least once."""
    switches: int
    """Times a truth track's matched detection changed track id (MOT's IDSW)."""
    unmatched_ids: int
    """Detections matched to truth that carried no track id."""


def id_switches(
    truth: Iterable[dict[str, Any]],
    tracked: dict[int, list[tuple[str, Box, int | None]]],
    iou_min: float = 0.5,
    min_visible: float = MIN_VISIBLE_FRACTION,
) -> TrackScore:
    """Identity switches of tracked detections (``frame → [(label, box, track_id)]``) against the truth's tracks."""
    last: dict[int, int | None] = {}
    switches = missing = 0
    for frame in truth:
        objects = [o for o in frame["objects"] if o.get("visible", 1.0) >= min_visible]
        found = list(tracked.get(frame["frame_index"], []))
        gt = [(o["label"], o["box"]) for o in objects]
        for gi, di in _pairs(gt, [(d[0], d[1]) for d in found], iou_min):
            truth_id, track_id = objects[gi]["track_id"], found[di][2]
            missing += track_id is None
            if truth_id in last and last[truth_id] != track_id:
                switches += 1
            last[truth_id] = track_id
    return TrackScore(len(last), switches, missing)
