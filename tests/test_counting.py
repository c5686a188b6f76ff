"""Tracking, counting and events end to end on generated scenes, against their truth (bundled detector, CPU).

The truth's counts come from the same analytics code fed the truth's boxes and
track ids, so anchors, crossings and zone rules are identical on both sides.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import Collected, config_for, run_and_collect

from pipeline.schema import CountsMessage, EventMessage
from pipeline.subscriber import Subscriber
from pipeline.synth.scoring import id_switches, truth_analytics
from pipeline.synth.writer import write_scene

SCHEMAS = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas"
GATE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}
LOW = {"name": "low", "points": [[0.0, 0.75], [1.0, 0.75]]}
ZONE = {"name": "kerb", "points": [[0.1, 0.55], [0.6, 0.55], [0.6, 1.0], [0.1, 1.0]]}


def run_scene(scene: Path, endpoint: str, **extra: Any) -> tuple[Collected, Any]:
    stream = {"id": "s", "source": str(scene / "scene.mp4"), "lines": [GATE, LOW], "zones": [ZONE]}
    config = config_for(endpoint, [stream], {"path": "edgesight-det"}, **extra)
    got = run_and_collect(config)
    truth = [json.loads(line) for line in (scene / "truth.jsonl").read_text().splitlines()]
    return got, (config, truth)


def final_counts(got: Collected) -> CountsMessage:
    counts = [m for m in got.messages if isinstance(m, CountsMessage)]
    assert counts, "no counts message"
    return counts[-1]


def events(got: Collected) -> list[EventMessage]:
    return [m for m in got.messages if isinstance(m, EventMessage)]


def visits(items: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    return sorted(items)


def test_a_simple_scene_counts_exactly(tmp_path: Path, endpoint: str) -> None:
    """Seed 23 here; seed 5's crossings are checked through the command line below."""
    scene = write_scene(tmp_path / "scene", 23, 300, occlusion=False)
    got, (config, truth) = run_scene(scene, endpoint)
    want, want_events = truth_analytics(truth, config.streams[0])
    counts = final_counts(got)
    assert counts.lines == want["lines"]
    assert counts.zones == want["zones"]
    assert sum(sum(c.values()) for line in want["lines"].values() for c in line.values()) >= 3, "a scene with crossings"
    # Dwell in the zone: each visit, matched by label and entering frame, within ±2 frames.
    ours = visits(
        [
            (e.frame_index - e.raw["dwell_frames"], e.label, e.raw["dwell_frames"])
            for e in events(got)
            if e.kind == "zone_exit"
        ]
    )
    theirs = visits(
        [
            (e.frame_index - e.extra["dwell_frames"], e.label, e.extra["dwell_frames"])
            for e in want_events
            if e.kind == "zone_exit"
        ]
    )
    assert len(ours) == len(theirs) >= 1
    for (start, label, dwell), (t_start, t_label, t_dwell) in zip(ours, theirs, strict=True):
        assert label == t_label and abs(start - t_start) <= 2 and abs(dwell - t_dwell) <= 2
    dets = [d for m in got.detections("s") for d in m.detections]
    assert dets and all(d.track_id is not None for d in dets), "every detection carries a track id"


def within(ours: int, truth: int) -> bool:
    return abs(ours - truth) <= max(1.0, 0.05 * truth)


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Collected, Any]:
    """600 frames from a seed no model saw in training, occlusion on, one run shared by the tests below."""
    from conftest import free_port

    scene = write_scene(tmp_path_factory.mktemp("crowded"), 31337, 600)
    return run_scene(scene, f"tcp://127.0.0.1:{free_port()}")


def test_line_counts_on_a_crowded_scene_are_within_tolerance(crowded: tuple[Collected, Any]) -> None:
    got, (config, truth) = crowded
    want, _ = truth_analytics(truth, config.streams[0])
    ours = final_counts(got).lines["gate"]
    labels = {label for d in ("in", "out") for label in want["lines"]["gate"][d]}
    assert sum(want["lines"]["gate"]["in"].values()) >= 10, "enough crossings to mean something"
    for direction in ("in", "out"):
        for label in labels:
            o, t = ours[direction].get(label, 0), want["lines"]["gate"][direction].get(label, 0)
            assert within(o, t), f"gate {direction} {label}: {o} counted, truth {t}"


def test_zone_counts_on_a_crowded_scene(crowded: tuple[Collected, Any]) -> None:
    """Every label within tolerance. Walkers who cross each other in the crowd lose their track id now and then;
    the new id continues the visit instead of entering again (zones' continue_visits; without it, 23 people)."""
    got, (config, truth) = crowded
    want, _ = truth_analytics(truth, config.streams[0])
    ours = final_counts(got).zones["kerb"]
    for label in ("car", "bicycle", "person"):
        for way in ("entered", "exited"):
            o, t = ours[way].get(label, 0), want["zones"]["kerb"][way].get(label, 0)
            assert within(o, t), f"kerb {way} {label}: {o} counted, truth {t}"
    assert ours["entered"] == ours["exited"] and ours["occupancy"] == {}, "every visit closed at the end"


def test_identity_switches_on_a_crowded_scene_are_bounded(crowded: tuple[Collected, Any]) -> None:
    got, (_config, truth) = crowded
    tracked = {m.frame_index: [(d.label, d.box, d.track_id) for d in m.detections] for m in got.detections("s")}
    score = id_switches(truth, tracked)
    print(f"identity switches: {score.switches} over {score.truth_tracks} truth tracks")
    assert score.unmatched_ids == 0
    assert score.truth_tracks >= 30 and score.switches <= 40


def test_event_lifecycles_and_schemas_on_a_crowded_scene(crowded: tuple[Collected, Any]) -> None:
    got, _ = crowded
    event_schema = json.loads((SCHEMAS / "event-1.schema.json").read_text())
    counts_schema = json.loads((SCHEMAS / "counts-1.schema.json").read_text())
    order = {"new": 0, "update": 1, "end": 2}
    seen: dict[str, list[str]] = {}
    for e in events(got):
        jsonschema.validate(e.raw, event_schema)
        seen.setdefault(e.event_id, []).append(e.type)
    for m in got.messages:
        if isinstance(m, CountsMessage):
            jsonschema.validate(m.raw, counts_schema)
    assert len(seen) > 50
    for event_id, types in seen.items():
        assert types[0] == "new" and types.count("new") == 1, event_id
        assert [order[t] for t in types] == sorted(order[t] for t in types), f"{event_id}: {types}"
    objects = [e for e in events(got) if e.kind == "object"]
    ended = {e.event_id for e in objects if e.type == "end"}
    assert ended == {e.event_id for e in objects}, "every object event ends by the end of the stream"


def test_run_with_line_on_the_command_line_publishes_crossings_with_thumbnails(tmp_path: Path) -> None:
    """The issue's example: ``edgesight run --source scene.mp4 --line gate=0.5,0,0.5,1``."""
    from conftest import free_port

    scene = write_scene(tmp_path / "scene", 5, 150, occlusion=False)  # three crossings
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    received: list[Any] = []
    sub = Subscriber(endpoint, ["events.", "counts.", "status."])

    def listen() -> None:
        while True:
            msg = sub.recv(20)
            if msg is None:
                return
            received.append(msg)
            if getattr(msg, "event", None) in ("eos", "error"):
                return

    listener = threading.Thread(target=listen)
    listener.start()
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "run",
        "--source",
        str(scene / "scene.mp4"),
        "--model",
        "edgesight-det",
    ]
    cmd += ["--line", "gate=0.5,0,0.5,1", "--thumbnails", "--publish", endpoint, "--wait-for-subscriber", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    listener.join(30)
    sub.close()
    assert proc.returncode == 0, proc.stderr
    truth = [json.loads(line) for line in (scene / "truth.jsonl").read_text().splitlines()]
    from pipeline.config import StreamConfig

    want, _ = truth_analytics(truth, StreamConfig(id="cam0", source="x.mp4", lines=[GATE]))
    crossings = [m for m in received if isinstance(m, EventMessage) and m.kind == "line_cross"]
    tally: dict[str, dict[str, int]] = {"in": {}, "out": {}}
    for c in crossings:
        assert c.direction is not None
        tally[c.direction][c.label] = tally[c.direction].get(c.label, 0) + 1
    assert tally == want["lines"]["gate"] and crossings
    for c in crossings:
        assert c.thumbnail is not None and c.raw["thumbnail"] == "jpeg"
        image = cv2.imdecode(np.frombuffer(c.thumbnail, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape[0] > 8
