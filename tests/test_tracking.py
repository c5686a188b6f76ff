"""Track ids: the stitcher's hand-overs on scripted tracker ids."""

from __future__ import annotations

import itertools

import numpy as np

from pipeline.analytics.tracking import TrackStitcher

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
