"""Track ids: the stitcher's hand-overs on scripted tracker ids, and the id invariants on real footage."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.analytics.tracking import StreamTracker, TrackStitcher
from pipeline.config import PipelineConfig, build_config

FRAMES = 300
PEOPLE1_SHAPE = (360, 640)
NEW_IDS = 1000


def stitcher() -> TrackStitcher:
    return TrackStitcher(30, itertools.count(NEW_IDS).__next__)


def frame(stitch: TrackStitcher, *tracks: tuple[int, float]) -> list[int]:
    """One frame of tracker ids, each a 30×80 person box whose left edge is at ``x``; the ids it publishes."""
    boxes = np.array([[x, 100, x + 30, 180, 0.9, 0] for _, x in tracks], np.float32).reshape(-1, 6)
    ids = np.array([raw for raw, _ in tracks], np.int64)
    return [int(t) for t in stitch(ids, boxes)]


def test_a_lost_track_found_again_after_its_id_went_to_another_gets_a_new_id() -> None:
    stitch = stitcher()
    assert frame(stitch, (1, 100)) == [1]
    frame(stitch)
    frame(stitch)
    assert frame(stitch, (2, 102)) == [1], "a new track where the lost one would be continues its id"
    assert frame(stitch, (2, 104), (1, 300)) == [1, NEW_IDS], "the tracker found track 1 again: not id 1"
    assert frame(stitch, (1, 106)) == [NEW_IDS], "and it keeps its new id, even where id 1 would be"


def test_an_id_handed_on_twice_stays_with_its_last_track() -> None:
    stitch = stitcher()
    frame(stitch, (1, 100))
    frame(stitch)
    assert frame(stitch, (2, 101)) == [1]
    frame(stitch)
    assert frame(stitch, (3, 102)) == [1]
    assert frame(stitch, (3, 103), (2, 250)) == [1, NEW_IDS]
    assert frame(stitch, (3, 104), (2, 251), (1, 400)) == [1, NEW_IDS, NEW_IDS + 1]


def test_the_stitcher_forgets_tracks_long_gone_so_memory_stays_flat() -> None:
    stitch = stitcher()
    for n in range(2_000):  # a new person every 5 frames, each in view for 12 frames, on a run that goes on
        t = n // 5
        frame(stitch, *((raw, 10.0 * (raw % 50)) for raw in range(max(0, t - 2), t + 1)))
    assert len(stitch._alias) <= 2 * 30 and len(stitch._owner) <= 2 * 30 and len(stitch._seen) <= 30


# -- real footage ------------------------------------------------------------------------------------


def street_config(people1: Path) -> PipelineConfig:
    """``edgesight run --source people1.mp4`` offline: the bundled detector, default tracking."""
    model = {"path": "edgesight-det", "device": "cpu"}
    return build_config({"streams": [{"id": "street", "source": str(people1)}], "model": model}, "test")


@pytest.fixture(scope="module")
def street_detections(people1: Path) -> list[np.ndarray]:
    """The bundled detector's boxes on the first frames of people1.mp4, down to the tracker's threshold."""
    from engines.registry import load_engine
    from pipeline.assembly import model_spec

    engine = load_engine(model_spec(street_config(people1)))
    cap = cv2.VideoCapture(str(people1))
    out = []
    try:
        for _ in range(FRAMES):
            ok, image = cap.read()
            assert ok, "people1.mp4 ended early"
            out.append(engine.infer([engine.prepare(image)], [image.shape[:2]])[0])
    finally:
        cap.release()
        engine.close()
    return out


def test_on_real_footage_an_id_is_one_object(
    street_detections: list[np.ndarray], people1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = street_config(people1)
    tracker = StreamTracker(config.tracking, config.model.conf)
    stitch, carried = tracker._stitch, []
    assert stitch is not None

    def recording(ids: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        out = stitch(ids, boxes)
        carried.append(dict(zip(out.tolist(), ids.tolist(), strict=True)))  # published id → tracker track
        return out

    monkeypatch.setattr(tracker, "_stitch", recording)
    doubled, returned, handed_back = set(), [], []
    last_seen: dict[int, int] = {}
    carriers: dict[int, list[int]] = {}  # published id → the tracker tracks that carried it, in turn
    for index, boxes in enumerate(street_detections):
        ids = [t for t in tracker.update(boxes, PEOPLE1_SHAPE).tolist() if t >= 0]
        doubled |= {index for n in Counter(ids).values() if n > 1}
        for t in ids:
            if index - last_seen.get(t, index) > config.tracking.track_buffer:
                returned.append((index, t))
            last_seen[t] = index
            track, tracks = carried[-1][t], carriers.setdefault(t, [carried[-1][t]])
            if tracks[-1] != track:
                if track in tracks:
                    handed_back.append((index, t, track))
                tracks.append(track)
    assert not doubled, f"{len(doubled)} of {FRAMES} frames show an id twice, first {sorted(doubled)[:5]}"
    assert not handed_back, f"ids went back to a track that had given them up (frame, id, track): {handed_back[:5]}"
    assert not returned, f"ids came back after they ended (frame, id): {returned[:5]}"
    assert any(len(c) > 1 for c in carriers.values()), "no id was stitched: the footage no longer tests hand-overs"
