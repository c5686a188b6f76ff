"""Face detection with facenet-pytorch's pretrained MTCNN through the pipeline, on real footage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.synth.scoring import iou

facenet = pytest.importorskip(
    "facenet_pytorch", reason="facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.5.3)"
)
SCHEMAS = Path(__file__).resolve().parents[1] / "pipeline" / "schemas"
FRAMES = 24


def reference(people1: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """``MTCNN(keep_all=True).detect`` on the same frames, decoded the same way."""
    mtcnn = facenet.MTCNN(keep_all=True, device="cpu")
    cap = cv2.VideoCapture(str(people1))
    out = []
    for _ in range(FRAMES):
        ok, frame = cap.read()
        assert ok
        boxes, _probs, points = mtcnn.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), landmarks=True)
        if boxes is None:
            boxes, points = np.zeros((0, 4)), np.zeros((0, 5, 2))
        out.append((np.asarray(boxes), np.asarray(points)))
    return out


def test_mtcnn_through_the_pipeline_finds_the_faces_facenet_finds(people1: Path, endpoint: str) -> None:
    stream = {"id": "street", "source": str(people1), "max_frames": FRAMES}
    got = run_and_collect(config_for(endpoint, [stream], {"path": "mtcnn", "device": "cpu"}))
    start = got.statuses("street")[0].raw["engine"]
    assert start["backend"] == "mtcnn" and start["model"] == "mtcnn"
    dets = got.detections("street")
    assert [m.frame_index for m in dets] == list(range(FRAMES))
    schema = json.loads((SCHEMAS / "detections-1.schema.json").read_text())
    matched = total = extra = 0
    for msg, (ref_boxes, ref_points) in zip(dets, reference(people1), strict=True):
        jsonschema.validate(msg.raw, schema)
        faces = list(msg.detections)
        assert all(d.label == "face" and d.track_id is not None for d in faces)
        total += len(ref_boxes)
        used: set[int] = set()
        for box, points in zip(ref_boxes.tolist(), ref_points.tolist(), strict=True):
            scores = [(iou(box, d.box), i) for i, d in enumerate(faces) if i not in used]
            best, i = max(scores, default=(0.0, -1))
            if best >= 0.9:
                matched += 1
                used.add(i)
                assert faces[i].landmarks is not None
                assert np.abs(np.array(faces[i].landmarks) - np.array(points)).max() < 1.0
        extra += len(faces) - len(used)
    assert total >= 3 * FRAMES, "people1.mp4 shows several faces a frame"
    assert matched >= 0.98 * total, f"{matched} of {total} faces matched at IoU >= 0.9"
    assert extra <= 0.02 * total, f"{extra} faces that facenet-pytorch did not find"
