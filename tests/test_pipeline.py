"""End to end through real threads, a real model and real ZeroMQ sockets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import torch
from helpers import config_for, reference_frames, run_and_collect

from pipeline.schema import DetectionsMessage

SCHEMAS = Path(__file__).parent.parent / "edgesight_client" / "schemas"


BORDERLINE = 2e-3
"""A box this close to the confidence threshold may fall on either side of it between two runs."""


def match_detections(ours: DetectionsMessage, ref: np.ndarray, conf_thres: float = 0.25) -> None:
    """Same classes, boxes within 1 px and confidences within 1e-3, one-to-one (borderline scores aside)."""
    unmatched = list(ours.detections)
    for x1, y1, x2, y2, conf, cls in ref.tolist():
        best = None
        for d in unmatched:
            err = max(abs(a - b) for a, b in zip(d.box, (x1, y1, x2, y2), strict=True))
            if d.class_id == int(cls) and err <= 1.0 and abs(d.confidence - conf) <= 1e-3:
                best = d
                break
        if best is None:
            assert conf < conf_thres + BORDERLINE, (
                f"frame {ours.frame_index}: no match for class {int(cls)} box {(x1, y1, x2, y2)} conf {conf}"
            )
            continue
        unmatched.remove(best)
    extra = [d for d in unmatched if d.confidence >= conf_thres + BORDERLINE]
    assert not extra, f"frame {ours.frame_index}: boxes Ultralytics did not find: {extra[:3]}"


def ultralytics_reference(weights: Path, frames: list[np.ndarray], imgsz: int = 640, conf: float = 0.25) -> list:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    model.predict(frames[0], imgsz=imgsz, conf=conf, verbose=False)
    torch.set_num_threads(os.cpu_count() or 1)  # as edgesight runs it (Ultralytics picks cores - 1)
    return [model.predict(f, imgsz=imgsz, conf=conf, verbose=False)[0].boxes.data.cpu().numpy() for f in frames]


def test_fidelity_with_ultralytics_on_generated_frames(arch_weights: Path, endpoint: str, tmp_path: Path) -> None:
    frames = reference_frames(tmp_path, 6)
    config = config_for(
        endpoint,
        [{"id": "gen", "source": str(tmp_path)}],
        {"path": str(arch_weights), "device": "cpu"},
    )
    got = run_and_collect(config)
    dets = got.detections("gen")
    assert [m.frame_index for m in dets] == list(range(len(frames)))
    assert sum(len(m.detections) for m in dets) >= 20, "the test model should find boxes"
    for msg, ref in zip(dets, ultralytics_reference(arch_weights, frames), strict=True):
        match_detections(msg, ref)


def test_fidelity_with_ultralytics_on_real_footage(arch_weights: Path, people1: Path, endpoint: str) -> None:
    n = 8
    config = config_for(
        endpoint,
        [{"id": "street", "source": str(people1), "max_frames": n}],
        {"path": str(arch_weights), "device": "cpu"},
    )
    got = run_and_collect(config)
    cap = cv2.VideoCapture(str(people1))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    dets = got.detections("street")
    assert len(dets) == n
    assert sum(len(m.detections) for m in dets) >= 20, "the test model should find boxes"
    for msg, ref in zip(dets, ultralytics_reference(arch_weights, frames), strict=True):
        match_detections(msg, ref)


def test_real_round_trip_every_frame_once(arch_weights: Path, people1: Path, endpoint: str) -> None:
    config = config_for(
        endpoint,
        [{"id": "street", "source": str(people1)}],
        {"path": str(arch_weights), "device": "cpu", "imgsz": 320},
    )
    got = run_and_collect(config)
    dets = got.detections("street")
    assert [m.seq for m in dets] == list(range(686))
    assert [m.frame_index for m in dets] == list(range(686))
    assert got.missed == 0
    statuses = got.statuses("street")
    assert [s.event for s in statuses] == ["start", "eos"]
    assert statuses[-1].raw["frames"] == 686
    assert got.messages[-1] is statuses[-1], "eos must arrive after the last detections message"
    assert all((m.width, m.height) == (640, 360) for m in dets)
    assert got.report is not None and got.report.ok


def test_several_streams_each_get_contiguous_seq_and_eos(arch_weights: Path, tiny_video: Path, endpoint: str) -> None:
    config = config_for(
        endpoint,
        [
            {"id": "a", "source": {"type": "synthetic", "seed": 1, "frames": 25, "width": 320, "height": 192}},
            {"id": "b", "source": str(tiny_video)},
        ],
        {"path": str(arch_weights), "device": "cpu", "imgsz": 256},
    )
    got = run_and_collect(config)
    for sid, frames in (("a", 25), ("b", 40)):
        assert [m.seq for m in got.detections(sid)] == list(range(frames))
        events = [s.event for s in got.statuses(sid)]
        assert events == ["start", "eos"]
        last_det = max(i for i, m in enumerate(got.messages) if isinstance(m, DetectionsMessage) and m.stream_id == sid)
        eos_at = next(i for i, m in enumerate(got.messages) if m in got.statuses(sid) and m.raw["event"] == "eos")
        assert eos_at > last_det


def test_published_messages_follow_the_json_schemas(arch_weights: Path, endpoint: str) -> None:
    config = config_for(
        endpoint,
        [{"id": "syn", "source": {"type": "synthetic", "seed": 5, "frames": 4, "width": 320, "height": 192}}],
        {"path": str(arch_weights), "device": "cpu", "imgsz": 320, "classes": [0, "car", 2]},
    )
    got = run_and_collect(config)
    det_schema = json.loads((SCHEMAS / "detections-1.schema.json").read_text())
    status_schema = json.loads((SCHEMAS / "status-1.schema.json").read_text())
    for m in got.detections():
        jsonschema.validate(m.raw, det_schema)
        assert {d.class_id for d in m.detections} <= {0, 2}
        assert m.captured_at <= m.published_at
    for s in got.statuses():
        jsonschema.validate(s.raw, status_schema)
    start = got.statuses("syn")[0].raw
    assert start["engine"]["backend"] == "onnxruntime" and start["engine"]["precision"] == "fp32"
    assert start["engine"]["cache"] in ("built", "hit") and start["engine"]["fallback_reason"] is None
    bad = dict(got.detections()[0].raw, seq=-1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, det_schema)
