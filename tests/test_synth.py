"""The generated street scene: deterministic, truthful, and with crossings both ways."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from pipeline.synth.scene import LABELS, MIN_VISIBLE_FRACTION, StreetScene


def test_same_seed_same_frames_and_truth() -> None:
    a, b, c = StreetScene(11, 60), StreetScene(11, 60), StreetScene(12, 60)
    for i in (0, 17, 59):
        fa, fb = a.render(i), b.render(i)
        assert np.array_equal(fa.image, fb.image)
        assert fa.truth_json() == fb.truth_json()
    assert not np.array_equal(a.render(5).image, c.render(5).image)


def test_truth_boxes_and_polygons_match_the_drawn_pixels() -> None:
    """Each polygon (the largest visible part) sits inside its box; unoccluded ones span it."""
    scene = StreetScene(21, 200)
    checked = spanning = 0
    for i in range(0, 200, 25):
        frame = scene.render(i)
        for obj in frame.objects:
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= scene.width and 0 <= y1 < y2 <= scene.height
            mask = np.zeros((scene.height, scene.width), np.uint8)
            cv2.fillPoly(mask, [np.array(obj.polygon, np.int32)], 1)
            ys, xs = np.nonzero(mask)
            assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2
            span_x, span_y = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            spanning += span_x >= 0.9 * (x2 - x1) and span_y >= 0.9 * (y2 - y1)
            checked += 1
    assert checked > 20
    assert spanning >= 0.8 * checked


def test_visibility_accounts_for_occlusion_and_the_frame_edge() -> None:
    scene = StreetScene(3, 300)
    seen = [o for i in range(0, 300, 3) for o in scene.render(i).objects]
    assert all(0 < o.visible <= 1 for o in seen)
    edge = [o for o in seen if o.box[0] == 0 or o.box[2] == scene.width]
    assert edge and min(o.visible for o in edge) < MIN_VISIBLE_FRACTION  # cut by the frame edge
    inner = [o for o in seen if o.box[0] > 0 and o.box[2] < scene.width and o.box[1] > 0 and o.box[3] < scene.height]
    assert any(o.visible < 0.9 for o in inner)  # hidden by a nearer object
    assert sum(o.visible == 1.0 for o in inner) > len(inner) / 2


def test_objects_differ_from_the_empty_street() -> None:
    scene = StreetScene(5, 100)
    empty = StreetScene(5, 100)
    empty.actors = []
    for i in (10, 50, 90):
        frame, street = scene.render(i), empty.render(i)
        for obj in frame.objects:
            x1, y1, x2, y2 = obj.box
            diff = np.abs(frame.image[y1:y2, x1:x2].astype(int) - street.image[y1:y2, x1:x2].astype(int)).max(axis=2)
            assert (diff > 30).mean() > 0.15, f"frame {i}: {obj.label} {obj.track_id} is not visible in its box"
        changed = np.abs(frame.image.astype(int) - street.image.astype(int)).max(axis=2) > 30
        for obj in frame.objects:
            x1, y1, x2, y2 = obj.box
            changed[y1:y2, x1:x2] = False
        assert changed.sum() < 120, f"frame {i}: {changed.sum()} drawn pixels lie outside every truth box"


def test_objects_cross_the_middle_in_both_directions_and_every_label_appears() -> None:
    scene = StreetScene(3, 600, width=320, height=180)  # smaller frames render faster; the motion is the same
    last_side: dict[int, int] = {}
    crossings = {+1: 0, -1: 0}
    labels = set()
    for i in range(600):
        for obj in scene.render(i).objects:
            labels.add(obj.label)
            cx = (obj.box[0] + obj.box[2]) / 2
            side = 1 if cx >= scene.width / 2 else -1
            prev = last_side.get(obj.track_id)
            if prev is not None and prev != side:
                crossings[side] += 1
            last_side[obj.track_id] = side
    assert labels == set(LABELS)
    assert crossings[+1] >= 3 and crossings[-1] >= 3, crossings


def test_synth_command_writes_video_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "scene1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "synth",
            "--seed",
            "123",
            "--frames",
            "30",
            "--out",
            str(out),
            "--size",
            "320x192",
            "--fps",
            "15",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(30))
    assert all(line["width"] == 320 and line["height"] == 192 for line in lines)
    cap = cv2.VideoCapture(str(out / "scene.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 30 and cap.get(cv2.CAP_PROP_FPS) == 15
    truth = StreetScene(123, 30, 320, 192, 15).render(7).truth_json()
    assert lines[7] == truth
