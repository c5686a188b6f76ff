"""Redaction: no pixel of a redacted region survives in images that leave the box."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from pipeline.privacy import grown_box as grown
from pipeline.privacy import redact
from pipeline.recorder import VideoRecorder
from pipeline.schema import EventMessage
from pipeline.synth.scene import StreetScene


@pytest.mark.parametrize("method", ["pixelate", "blur", "fill"])
def test_no_pixel_of_a_redacted_box_survives_and_nothing_else_changes(method: str) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    boxes = [(20, 10, 60, 70), (150, 80, 199, 119), (0, 0, 12, 9)]
    out = redact(image, np.array(boxes, float), method)
    outside = np.ones(image.shape[:2], bool)
    for box in boxes:
        x1, y1, x2, y2 = grown(box, 200, 120)
        survived = np.all(out[y1:y2, x1:x2] == image[y1:y2, x1:x2], axis=2)
        assert not survived.any(), f"{method}: {int(survived.sum())} pixels of {box} unchanged"
        outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], image[outside])


def region(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = grown(box, w, h)
    return image[y1:y2, x1:x2].astype(np.float32)


def test_thumbnails_and_recordings_carry_the_redaction_not_the_person(endpoint: str, tmp_path: Path) -> None:
    seed, frames = 5, 60
    stream = {
        "id": "street",
        "source": {"type": "synthetic", "seed": seed, "frames": frames},
        "privacy": {"redact": ["person", "car", "bicycle"], "method": "pixelate"},
    }
    config = config_for(endpoint, [stream], {"path": "edgesight-det"}, events={"thumbnails": True})
    video = tmp_path / "out.mp4"
    got = run_and_collect(config, sink=VideoRecorder(video, "street", 30.0))
    scene = StreetScene(seed, frames)
    thumbs = [m for m in events_of(got) if m.thumbnail is not None]
    assert thumbs, "no thumbnails were sent"
    for event in thumbs:
        original = scene.render(event.frame_index).image
        shown = cv2.imdecode(np.frombuffer(event.thumbnail or b"", np.uint8), cv2.IMREAD_COLOR)
        orig_crop = region(original, event.box)
        hidden_crop = region(redact(original, np.array([event.box]), "pixelate"), event.box)
        shown = cv2.resize(shown, (orig_crop.shape[1], orig_crop.shape[0])).astype(np.float32)
        to_original = float(np.abs(shown - orig_crop).mean())
        to_hidden = float(np.abs(shown - hidden_crop).mean())
        assert to_hidden < to_original / 2, f"event {event.event_id}: the thumbnail looks like the object"
    cap = cv2.VideoCapture(str(video))
    checked = 0
    totals = [0.0, 0.0]  # distance of the recording to the redacted and to the original frames
    for msg in got.detections("street")[10:20]:
        cap.set(cv2.CAP_PROP_POS_FRAMES, msg.frame_index)
        ok, recorded = cap.read()
        assert ok
        original = scene.render(msg.frame_index).image
        hidden = redact(original, np.array([d.box for d in msg.detections]).reshape(-1, 4), "pixelate")
        for det in msg.detections:
            if min(det.box[2] - det.box[0], det.box[3] - det.box[1]) < 24:
                continue  # box outlines and labels are drawn over small regions
            x1, y1, x2, y2 = (int(v) for v in det.box)
            core = (slice(y1 + 4, y2 - 4), slice(x1 + 4, x2 - 4))  # inside the drawn outline
            shown = recorded[core].astype(np.float32)
            to_original = float(np.median(np.abs(shown - original[core].astype(np.float32))))
            to_hidden = float(np.median(np.abs(shown - hidden[core].astype(np.float32))))
            assert to_hidden < to_original, f"frame {msg.frame_index}: {det.box} looks like the object"
            totals[0] += to_hidden
            totals[1] += to_original
            checked += 1
    assert checked >= 5 and totals[0] < totals[1] / 2


def events_of(got: object) -> list[EventMessage]:
    return [m for m in got.messages if isinstance(m, EventMessage)]  # type: ignore[attr-defined]
