"""Lines, zones and event lifecycles on hand-made tracks: exact rules, no model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from pipeline.analytics.events import Observation
from pipeline.analytics.lines import LineCounter
from pipeline.analytics.stream import StreamAnalytics
from pipeline.analytics.thumbnails import thumbnail
from pipeline.analytics.zones import ZoneMonitor
from pipeline.config import EventsConfig, LineConfig, StreamConfig, TrackingConfig, ZoneConfig, build_config
from pipeline.errors import ConfigError
from pipeline.messages import Frame, FrameResult

SCHEMAS = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas"
SIZE = (100, 100)


def line(confirm: int = 1, **extra: object) -> LineCounter:
    # p1 → p2 points right along y = 50, so (p2 − p1) × (a − p1) = 80 · (y − 50): positive below the line.
    return LineCounter(LineConfig(name="l", points=((10, 50), (90, 50)), confirm_frames=confirm, **extra))


def walk(counter: LineCounter, track: int, points: list[tuple[float, float]], label: str = "person") -> list[str]:
    out = []
    for x, y in points:
        crossing = counter.update(track, label, 0, 0.9, np.array([x, y], float), SIZE)
        if crossing is not None:
            out.append(crossing.direction)
    return out


def test_negative_to_positive_is_in_and_back_is_out() -> None:
    counter = line()
    assert walk(counter, 1, [(50, 40), (50, 45), (50, 55), (50, 60)]) == ["in"]
    assert walk(counter, 2, [(30, 70), (31, 52), (32, 48)]) == ["out"]
    assert counter.to_json() == {"in": {"person": 1}, "out": {"person": 1}}


def test_a_crossing_must_pass_between_the_ends_of_the_segment() -> None:
    counter = line()
    assert walk(counter, 1, [(95, 40), (95, 60)]) == [], "beyond p2"
    assert walk(counter, 2, [(5, 40), (5, 60)]) == [], "before p1"
    assert walk(counter, 3, [(89, 45), (95, 55)]) == [], "the step meets the line at x = 92, past p2"
    assert walk(counter, 4, [(89, 45), (89, 55)]) == ["in"], "just inside the segment"


def test_each_track_counts_once_per_direction() -> None:
    counter = line()
    assert walk(counter, 1, [(50, 40), (50, 60), (50, 40), (50, 60), (50, 40)]) == ["in", "out"]
    assert counter.to_json() == {"in": {"person": 1}, "out": {"person": 1}}


def test_touching_the_line_is_not_crossing_it() -> None:
    counter = line()
    assert walk(counter, 1, [(50, 40), (50, 50), (50, 45)]) == []
    assert walk(counter, 1, [(50, 50), (50, 55)]) == ["in"], "the side before the touch still counts"


def test_jitter_shorter_than_confirm_frames_counts_nothing() -> None:
    counter = line(confirm=3)
    assert walk(counter, 1, [(50, 48), (50, 51), (50, 52), (50, 49), (50, 51), (50, 48)]) == []
    assert walk(counter, 1, [(50, 52), (50, 53), (50, 54)]) == ["in"]


def test_class_and_confidence_filters() -> None:
    counter = line(classes=["car"], min_confidence=0.5)
    assert walk(counter, 1, [(50, 40), (50, 60)], label="person") == []
    assert walk(counter, 2, [(50, 40), (50, 60)], label="car") == ["in"]


def obs(track: int, frame: int, label: str = "person") -> Observation:
    return Observation(track, 0, label, 0.9, (0, 0, 10, 10), frame, frame * 100.0, 1000.0 + frame / 10)


def zone(confirm: int = 1, loiter_s: float | None = None) -> ZoneMonitor:
    config = ZoneConfig(
        name="z", points=[(20, 20), (80, 20), (80, 80), (20, 80)], confirm_frames=confirm, loiter_s=loiter_s
    )
    return ZoneMonitor(config, "cam", update_interval_s=0.5)


def feed(monitor: ZoneMonitor, track: int, xs: list[float], start: int = 0) -> list[tuple[str, str, int]]:
    events = []
    for i, x in enumerate(xs):
        for e in monitor.update(obs(track, start + i), np.array([x, 50.0]), SIZE):
            events.append((e.kind, e.type, e.frame_index))
    return events


def test_zone_enter_exit_and_dwell() -> None:
    monitor = zone()
    assert feed(monitor, 1, [10, 15, 25, 30, 40, 85, 90]) == [("zone_enter", "new", 2), ("zone_exit", "new", 5)]
    assert monitor.dwell_frames == {1: [3]}
    assert monitor.to_json() == {"occupancy": {}, "entered": {"person": 1}, "exited": {"person": 1}}


def test_zone_changes_need_confirm_frames_and_date_from_their_start() -> None:
    monitor = zone(confirm=3)
    assert feed(monitor, 1, [19, 21, 19, 21, 22, 23, 24]) == [("zone_enter", "new", 3)]
    assert monitor.occupancy == {"person": 1}


def test_a_track_that_ends_inside_exits_at_its_last_frame() -> None:
    monitor = zone()
    feed(monitor, 7, [50, 50, 50, 50])
    events = monitor.end_track(7, obs(7, 3))
    assert [(e.kind, e.frame_index, e.dwell_s) for e in events] == [("zone_exit", 3, pytest.approx(0.3))]
    assert monitor.occupancy == {}


def step(monitor: ZoneMonitor, track: int, frame: int, x: float, label: str = "person") -> list[tuple[str, int, int]]:
    """One observation of a 10x20 box standing at ``(x, 50)``."""
    seen = Observation(track, 0, label, 0.9, (x - 5, 30, x + 5, 50), frame, frame * 100.0, 1000.0 + frame / 10)
    return [(e.kind, e.track_id, e.frame_index) for e in monitor.update(seen, np.array([x, 50.0]), SIZE)]


def frame(monitor: ZoneMonitor, index: int, walkers: dict[int, float]) -> list[tuple[str, int, int]]:
    """One frame: which tracks are in view, then each one's observation, in the given order."""
    monitor.begin_frame(set(walkers))
    return [e for track, x in walkers.items() for e in step(monitor, track, index, x)]


def test_a_new_id_where_a_visitor_was_lost_continues_the_visit() -> None:
    """The tracker loses walker 1 inside and calls it 2 a few frames later, a step on: one visit, not two."""
    monitor = zone()
    events = [e for f, x in enumerate([10, 30, 40, 45]) for e in frame(monitor, f, {1: x})]
    assert events == [("zone_enter", 1, 1)]
    for f in (4, 5, 6):
        frame(monitor, f, {})
    assert [e for f, x in enumerate([52, 55, 60, 85, 90], start=7) for e in frame(monitor, f, {2: x})] == [
        ("zone_exit", 2, 10)
    ]
    assert monitor.end_track(1, obs(1, 3)) == [], "the lost id's visit went on with its follower"
    assert monitor.dwell_frames == {2: [9]}, "dwell from the first id's entry"
    assert monitor.to_json()["entered"] == monitor.to_json()["exited"] == {"person": 1}
    assert not monitor._retired and not monitor._followers and not monitor._missing, "nothing left behind"


def test_a_follower_takes_over_when_the_lost_track_ends_and_the_exit_names_the_first_id() -> None:
    monitor = zone()
    for f, x in enumerate([10, 30, 40]):
        frame(monitor, f, {1: x})
    frame(monitor, 3, {2: 42})  # 1 missing for one frame only: 2 follows it, nothing is counted
    assert monitor.end_track(1, obs(1, 2)) == [] and monitor.occupancy == {"person": 1}
    events = monitor.update(
        Observation(2, 0, "person", 0.9, (85, 30, 95, 50), 4, 400.0, 1000.4), np.array([90.0, 50.0]), SIZE
    )
    assert [(e.kind, e.track_id) for e in events] == [("zone_exit", 2)]
    assert events[0].to_json()["entry_track_id"] == 1
    assert not monitor._retired, "an ended id is not kept"


def test_the_same_walker_detected_twice_enters_once_and_a_stranger_still_counts() -> None:
    monitor = zone()
    events = []
    for f, x in enumerate([10, 30, 40, 50, 60]):
        walkers = {2: x + 1, 1: x}  # a second box on the same walker, observed first
        if f >= 3:
            walkers = {3: 22 + f, **walkers}  # someone else, a body apart, walks in (observed before the others)
        events += frame(monitor, f, walkers)
    # whichever of the two boxes is seen first enters for the walker; the other follows it
    assert sorted(events) == [("zone_enter", 2, 1), ("zone_enter", 3, 3)]
    for f, x in enumerate([85, 90], start=5):
        events += frame(monitor, f, {1: x, 2: x + 1, 3: 30})
    assert events[-1] == ("zone_exit", 2, 5) and monitor.occupancy == {"person": 1}


def test_frames_missing_from_the_stream_do_not_hand_a_visible_visit_over() -> None:
    """Frame indexes jump (dropped or gated frames): what counts is being in view, frame by frame."""
    monitor = zone()
    events = [e for f, x in [(0, 10), (5, 30), (11, 40)] for e in frame(monitor, f, {1: x})]
    events += frame(monitor, 20, {1: 41, 2: 42})  # a duplicate box while 1 is in view
    events += frame(monitor, 40, {1: 43, 2: 44})
    assert events == [("zone_enter", 1, 5)] and monitor._followers == {2: 1}


def test_continue_visits_off_counts_every_new_id() -> None:
    config = ZoneConfig(
        name="z", points=[(20, 20), (80, 20), (80, 80), (20, 80)], confirm_frames=1, continue_visits=False
    )
    monitor = ZoneMonitor(config, "cam", update_interval_s=0.5)
    for f, x in enumerate([10, 30, 40, 45]):
        step(monitor, 1, f, x)
    assert step(monitor, 2, 7, 52) == [("zone_enter", 2, 7)]


def test_loitering_opens_updates_and_ends() -> None:
    monitor = zone(loiter_s=1.0)  # frames are 100 ms apart
    got = feed(monitor, 1, [50] * 20 + [95])
    kinds = [(k, t) for k, t, _ in got]
    assert kinds[0] == ("zone_enter", "new")
    assert kinds[1] == ("loiter", "new") and got[1][2] == 10, "after 1 s inside"
    assert kinds.count(("loiter", "update")) == 1, "at most one update per 0.5 s"
    assert kinds[-2:] == [("zone_exit", "new"), ("loiter", "end")]


def result(frame_index: int, boxes: list[list[float]]) -> FrameResult:
    image = np.full((100, 100, 3), 90, np.uint8)
    frame = Frame("cam", frame_index, frame_index * 100.0, 1000.0 + frame_index / 10, image)
    return FrameResult(frame, np.array(boxes, np.float32).reshape(-1, 6), {0: "person", 2: "car"})


def test_object_events_follow_new_update_end_and_match_the_schema() -> None:
    stream = StreamConfig(id="cam", source="synthetic://", lines=[LineConfig(name="g", points=((50, 0), (50, 100)))])
    analytics = StreamAnalytics(stream, TrackingConfig(track_buffer=3), EventsConfig(update_interval_s=0.5), 0.25)
    events = []
    for i in range(12):  # a car drives right across the line, then is gone
        x = 10 + 6 * i
        events += analytics.process(result(i, [[x, 40, x + 20, 60, 0.9, 2]])).events
    for i in range(12, 18):
        events += analytics.process(result(i, [])).events
    final, counts = analytics.finish()
    events += final
    schema = json.loads((SCHEMAS / "event-1.schema.json").read_text())
    for e in events:
        jsonschema.validate(e.to_json(), schema)
    jsonschema.validate(counts, json.loads((SCHEMAS / "counts-1.schema.json").read_text()))
    objects = [e for e in events if e.kind == "object"]
    assert [e.type for e in objects] == ["new", "update", "update", "end"]
    assert len({e.event_id for e in objects}) == 1 and objects[-1].ended_at is not None
    crossings = [e for e in events if e.kind == "line_cross"]
    assert [(e.type, e.direction, e.label) for e in crossings] == [("new", "out", "car")]
    assert counts["lines"] == {"g": {"in": {}, "out": {"car": 1}}}


def test_the_event_schema_rejects_a_crossing_without_a_direction() -> None:
    schema = json.loads((SCHEMAS / "event-1.schema.json").read_text())
    body = {
        "schema": "edgesight.event/1",
        "type": "new",
        "event_id": "x",
        "kind": "line_cross",
        "stream_id": "cam",
        "track_id": 1,
        "label": "car",
        "class_id": 2,
        "started_at": 1.0,
        "ended_at": 1.0,
        "frame_index": 3,
        "pts_ms": 100.0,
        "box": [0, 0, 1, 1],
        "score": 0.5,
        "line": "g",
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)
    jsonschema.validate({**body, "direction": "in"}, schema)


def test_thumbnail_is_a_jpeg_of_the_box() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:60, 100:140] = (0, 0, 255)
    data = thumbnail(image, (100, 20, 140, 60), 90)
    assert data is not None
    crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert crop.shape == (48, 48, 3), "the box plus a 10% margin"
    assert crop[24, 24, 2] > 200 and crop[24, 24, 0] < 50
    assert thumbnail(image, (300, 300, 310, 310), 90) is None


def test_lines_and_zones_need_tracking_and_unique_names() -> None:
    stream = {"id": "a", "source": "synthetic://", "lines": [{"name": "g", "points": [[0, 0], [1, 1]]}]}
    with pytest.raises(ConfigError, match=r"need tracking\.enabled"):
        build_config({"streams": [stream], "tracking": {"enabled": False}}, "t")
    twice = {**stream, "zones": [{"name": "g", "points": [[0, 0], [1, 0], [1, 1]]}]}
    with pytest.raises(ConfigError, match="'g' is used twice"):
        build_config({"streams": [twice]}, "t")
    assert LineConfig(name="p", points=((0, 0), (640, 360))).normalized is False
    assert LineConfig(name="n", points=((0, 0.5), (1, 0.5))).normalized is True


def test_a_frame_with_hundreds_of_boxes_feeds_the_tracker_only_the_most_confident() -> None:
    from pipeline.analytics.tracking import MAX_TRACKER_BOXES, StreamTracker

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 600, (400, 2))
    conf = np.linspace(0.11, 0.9, 400)
    rows = np.column_stack([xy, xy + 20, conf, np.zeros(400)]).astype(np.float32)
    tracker = StreamTracker(TrackingConfig(), 0.25)
    ids = tracker.update(rows, (640, 640))
    published = rows[:, 4] >= 0.25
    assert (ids[published] >= 0).all(), "every publishable box still gets an id"
    assert (ids >= 0).sum() <= published.sum()
    assert len(tracker._tracker.tracked_stracks) <= MAX_TRACKER_BOXES
