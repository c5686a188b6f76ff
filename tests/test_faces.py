"""Face detection with facenet-pytorch's pretrained MTCNN through the pipeline, on real footage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.synth.scoring import iou

facenet = pytest.importorskip(
    "facenet_pytorch", reason="facenet-pytorch is not installed (pip install --no-deps facenet-pytorch==2.5.3)"
)
SCHEMAS = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas"
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


def faces_matched(found: list[tuple[float, ...]], ref_boxes: np.ndarray, min_iou: float = 0.9) -> int:
    used: set[int] = set()
    for box in ref_boxes.tolist():
        best, i = max(((iou(box, f), i) for i, f in enumerate(found) if i not in used), default=(0.0, -1))
        if best >= min_iou:
            used.add(i)
    return len(used)


def test_a_face_detector_runs_at_its_own_rate_beside_the_main_model(
    people1: Path, arch_weights: Path, endpoint: str
) -> None:
    """Main model on every frame; MTCNN on every 3rd (or fewer, when busy), published on ``faces.<id>``."""
    stream = {"id": "street", "source": str(people1), "max_frames": FRAMES}
    faces = {"detector": "mtcnn", "every_n_frames": 3, "conf": 0.25}  # as the reference: every face MTCNN keeps
    got = run_and_collect(config_for(endpoint, [stream], {"path": str(arch_weights), "device": "cpu"}, faces=faces))
    main = got.detections("street")
    assert [m.frame_index for m in main] == list(range(FRAMES)), "the main model saw every frame"
    face_msgs = got.detections("street", topic="faces")
    indexes = [m.frame_index for m in face_msgs]
    assert indexes and all(i % 3 == 0 for i in indexes) and indexes == sorted(indexes)
    assert [m.seq for m in face_msgs] == list(range(len(face_msgs)))
    schema = json.loads((SCHEMAS / "detections-1.schema.json").read_text())
    ref = reference(people1)
    matched = total = 0
    for msg in face_msgs:
        jsonschema.validate(msg.raw, schema)
        assert msg.raw["model"] == "mtcnn"
        found = [d.box for d in msg.detections]
        assert all(d.label == "face" and d.track_id is not None for d in msg.detections)
        ref_boxes = ref[msg.frame_index][0]
        total += len(ref_boxes)
        matched += faces_matched(found, ref_boxes)
    assert total >= 3 * len(face_msgs) and matched >= 0.98 * total


class PersonBoxes:
    """A scripted main model: one 'person' box per face MTCNN finds, three face-heights tall, frame by frame."""

    def __init__(self, faces: list[tuple[np.ndarray, np.ndarray]]) -> None:
        from engines.base import EngineInfo

        self.info = EngineInfo("scripted", "cpu", "fp32", "persons", "detect", 0, {0: "person"})
        self._faces = faces
        self._next = 0

    def prepare(self, image: np.ndarray, layout: str = "bgr") -> np.ndarray:
        return image

    def submit(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> Any:
        from engines.base import ReadyDetections

        out = []
        for _ in inputs:
            boxes = self._faces[self._next][0]
            self._next += 1
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            rows = np.stack([boxes[:, 0] - w, boxes[:, 1] - 0.5 * h, boxes[:, 2] + w, boxes[:, 3] + 2 * h], 1)
            rows = np.concatenate([rows, np.full((len(rows), 1), 0.9), np.zeros((len(rows), 1))], 1)
            out.append(rows.astype(np.float32))
        return ReadyDetections(out)

    def warmup(self, formats: object = ()) -> None:
        pass

    def close(self) -> None:
        pass


def test_faces_on_person_crops_take_the_person_track(people1: Path, endpoint: str) -> None:
    ref = reference(people1)
    stream = {"id": "street", "source": str(people1), "max_frames": FRAMES}
    faces = {"detector": "mtcnn", "search": "persons", "every_n_frames": 2, "conf": 0.25}
    config = config_for(endpoint, [stream], {"path": "persons"}, faces=faces)
    got = run_and_collect(config, engine_factory=lambda _spec, _name: PersonBoxes(ref))
    tracks = {m.frame_index: {d.track_id: d.box for d in m.detections} for m in got.detections("street")}
    face_msgs = got.detections("street", topic="faces")
    assert face_msgs
    matched = total = 0
    for msg in face_msgs:
        frame = msg.frame_index
        assert frame % 2 == 0
        for face in msg.detections:
            person = tracks[frame][face.track_id]  # the face carries its person's track id …
            assert person[0] <= face.box[0] and face.box[2] <= person[2]  # … and lies inside that person
        total += len(ref[frame][0])
        # MTCNN's image pyramid starts from the crop's size, so a face's box moves a little (IoU 0.87-0.94)
        matched += faces_matched([d.box for d in msg.detections], ref[frame][0], min_iou=0.7)
    assert matched >= 0.95 * total, f"{matched} of {total} faces found on person crops"
