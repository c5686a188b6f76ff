"""Secondary models on the primary detections: text read from plates, classes of crops, and only where asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import Collected, config_for, run_and_collect

from engines.base import EngineInfo, ReadyDetections

pytest.importorskip("rapidocr_onnxruntime", reason="rapidocr-onnxruntime is not installed")
SCHEMA = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas" / "detections-1.schema.json"
PLATES = ["KX 4721", "BRT 905", "M 21 ZA", "HZ 3386"]
PLATE_BOX = (200, 150, 440, 210)
CAR_BOX = (20, 20, 180, 120)


def alnum(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def plate_frames(folder: Path) -> Path:
    """Frames with a plate (known text) in a fixed place and a plain 'car' patch elsewhere."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, text in enumerate(PLATES):
        frame = cv2.GaussianBlur(rng.integers(60, 140, (360, 640, 3), dtype=np.uint8), (9, 9), 0)
        x1, y1, x2, y2 = PLATE_BOX
        frame[y1:y2, x1:x2] = 235
        cv2.putText(frame, text, (x1 + 12, y2 - 16), cv2.FONT_HERSHEY_SIMPLEX, 1.3, (20, 20, 20), 3)
        cx1, cy1, cx2, cy2 = CAR_BOX
        frame[cy1:cy2, cx1:cx2] = (40 * i, 90, 200 - 40 * i)
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


class PlateDetector:
    """A scripted primary model: a 'plate' and a 'car' box on every frame (the seam the secondary models hang on)."""

    def __init__(self) -> None:
        self.info = EngineInfo("scripted", "cpu", "fp32", "plates", "detect", 0, {0: "plate", 1: "car"})

    def prepare(self, image: np.ndarray, layout: str = "bgr") -> np.ndarray:
        return image

    def submit(self, inputs: list[Any], shapes: list[tuple[int, int]]) -> ReadyDetections:
        rows = np.array([[*PLATE_BOX, 0.9, 0], [*CAR_BOX, 0.8, 1]], np.float32)
        return ReadyDetections([rows.copy() for _ in inputs])

    def warmup(self, formats: object = ()) -> None:
        pass

    def close(self) -> None:
        pass


def run_gate(endpoint: str, stream: dict[str, Any], secondary: list[dict[str, Any]], detector: Any) -> Collected:
    """One stream through a scripted primary detector and the secondary models, tracking off."""
    config = config_for(endpoint, [stream], {"path": "plates"}, secondary=secondary, tracking={"enabled": False})
    return run_and_collect(config, engine_factory=lambda _s, _n: detector)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classification architecture with its initial weights (the compute of yolo11n-cls, offline)."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("cls") / "cls.pt"
    YOLO("yolo11n-cls.yaml").save(str(path))
    return path


def test_plates_are_read_and_cars_classified(classifier: Path, tmp_path: Path, endpoint: str) -> None:
    from ultralytics import YOLO

    frames = plate_frames(tmp_path / "frames")
    secondary = [
        {"kind": "ocr", "classes": ["plate"]},
        {"kind": "classify", "model": str(classifier), "classes": ["car"], "top_k": 2},
    ]
    got = run_gate(endpoint, {"id": "gate", "source": str(frames)}, secondary, PlateDetector())
    msgs = got.detections("gate")
    assert len(msgs) == len(PLATES)
    schema = json.loads(SCHEMA.read_text())
    reference = YOLO(str(classifier))
    for msg, text, i in zip(msgs, PLATES, range(len(PLATES)), strict=True):
        jsonschema.validate(msg.raw, schema)
        plate = next(d for d in msg.raw["detections"] if d["label"] == "plate")
        car = next(d for d in msg.raw["detections"] if d["label"] == "car")
        assert alnum(plate["text"]) == alnum(text), (plate["text"], text)  # a plate's characters, not its spacing
        assert plate["text_confidence"] > 0.8
        assert "classes" not in plate and "text" not in car, "each model looks only at its own labels"
        image = cv2.imread(str(frames / f"{i:03d}.png"))
        x1, y1, x2, y2 = CAR_BOX
        x1, y1 = max(0, x1 - 8), max(0, y1 - 5)  # the 5% margin the config's default adds
        crop = image[y1 : y2 + 5, x1 : x2 + 8]
        probs = reference.predict(crop, imgsz=224, verbose=False, device="cpu")[0].probs.data.numpy()
        best = int(np.argmax(probs))
        assert len(car["classes"]) == 2
        assert car["classes"][0]["label"] == reference.names[best]
        assert abs(car["classes"][0]["score"] - float(probs[best])) < 1e-3


def test_whole_frame_classification(classifier: Path, tmp_path: Path, endpoint: str) -> None:
    from ultralytics import YOLO

    frames = plate_frames(tmp_path / "frames")
    secondary = [{"kind": "classify", "model": str(classifier), "whole_frame": True, "top_k": 1}]
    got = run_gate(endpoint, {"id": "gate", "source": str(frames)}, secondary, PlateDetector())
    reference = YOLO(str(classifier))
    for i, msg in enumerate(got.detections("gate")):
        jsonschema.validate(msg.raw, json.loads(SCHEMA.read_text()))
        probs = reference.predict(cv2.imread(str(frames / f"{i:03d}.png")), imgsz=224, verbose=False, device="cpu")
        top = probs[0].probs.data.numpy()
        assert msg.raw["classes"] == [
            {"label": reference.names[int(np.argmax(top))], "score": round(float(top.max()), 4)}
        ]
        assert all("classes" not in d for d in msg.raw["detections"])


@pytest.mark.parametrize(
    ("secondary", "error"),
    [
        ({"kind": "embed", "match": False, "classes": ["face"]}, "match, embedding or both"),
        ({"kind": "embed", "whole_frame": True, "classes": ["face"]}, "not whole_frame"),
        ({"kind": "embed", "match": True}, "embed needs classes"),
        ({"kind": "ocr", "gallery": "faces.db", "threshold": 0.5}, "gallery, threshold apply to kind embed only"),
        ({"kind": "classify", "margin": 2}, r"secondary\[0\]\.margin"),
        ({"kind": "segment"}, r"secondary\[0\]\.kind: .*embed"),
    ],
)
def test_bad_secondary_models_are_config_errors(secondary: dict[str, object], error: str) -> None:
    from pipeline.config import build_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=error):
        build_config({"streams": [{"id": "a", "source": "a.mp4"}], "secondary": [secondary]}, "c.yaml")


class RecordingPlateDetector(PlateDetector):
    """:class:`PlateDetector` that keeps what it was given (the picture after the stream's operations)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[np.ndarray] = []

    def submit(self, inputs: list[Any], shapes: list[tuple[int, int]]) -> ReadyDetections:
        self.seen.extend(inputs)
        return super().submit(inputs, shapes)


def test_a_sideways_camera_rotated_cropped_enhanced_gated_detected_classified_and_read(
    classifier: Path, tmp_path: Path, endpoint: str
) -> None:
    """The whole preprocess-and-chain story in one config: a camera mounted sideways is rotated upright, cropped
    and equalized, still frames skip the model, and the plates are read and the cars classified from the upright
    picture; boxes come out in the sideways frame and every message fits the schema."""
    upright = plate_frames(tmp_path / "upright")
    sideways = tmp_path / "sideways"
    sideways.mkdir()
    held = 3  # each plate stays in view for three identical frames: two of them are still
    for i in range(len(PLATES)):
        frame = cv2.rotate(cv2.imread(str(upright / f"{i:03d}.png")), cv2.ROTATE_90_COUNTERCLOCKWISE)
        for k in range(held):
            cv2.imwrite(str(sideways / f"{i * held + k:03d}.png"), frame)
    ops = [
        {"op": "rotate", "degrees": 90},
        {"op": "crop", "x": 0, "y": 0, "width": 480, "height": 240},
        {"op": "clahe", "clip_limit": 2.0},
    ]
    stream = {"id": "gate", "source": str(sideways), "preprocess": ops, "motion": {"keepalive_s": 60}}
    secondary = [
        {"kind": "ocr", "classes": ["plate"]},
        {"kind": "classify", "model": str(classifier), "classes": ["car"], "top_k": 2},
    ]
    detector = RecordingPlateDetector()
    got = run_gate(endpoint, stream, secondary, detector)

    from pipeline.config import StreamConfig
    from pipeline.imageops import build_ops

    assert len(detector.seen) == len(PLATES), "only the first frame of each still stretch reaches the model"
    chain = build_ops(StreamConfig.model_validate(stream).preprocess)
    for i, given in enumerate(detector.seen):
        want, _ = chain.apply(cv2.rotate(cv2.imread(str(upright / f"{i:03d}.png")), cv2.ROTATE_90_COUNTERCLOCKWISE))
        assert given.shape == (240, 480, 3) and np.array_equal(given, want), "upright, cropped, equalized"
    msgs = got.detections("gate")
    assert len(msgs) == len(PLATES) * held
    schema = json.loads(SCHEMA.read_text())
    for n, msg in enumerate(msgs):
        jsonschema.validate(msg.raw, schema)
        assert (msg.width, msg.height) == (360, 640), "the sideways frame's size"
        assert bool(msg.raw.get("reused")) == (n % held != 0)
        plate = next(d for d in msg.raw["detections"] if d["label"] == "plate")
        car = next(d for d in msg.raw["detections"] if d["label"] == "car")
        # the upright plate (200, 150)-(440, 210) lands at (150, 640 - 440)-(210, 640 - 200) in the sideways frame
        assert np.allclose(plate["box"], [150, 200, 210, 440], atol=1.0), plate["box"]
        assert alnum(plate["text"]) == alnum(PLATES[n // held]), (plate["text"], PLATES[n // held])
        assert len(car["classes"]) == 2 and "text" not in car


def test_crops_from_the_frame_when_asked(tmp_path: Path, endpoint: str) -> None:
    """``crops: frame`` cuts from the camera's own frame, whatever the operations did to the model's picture (here a
    quarter-size gray copy, where the plate is 15 px tall): the plate is read there. From the operated picture it
    is under ``min_size_px`` (16), measured in that picture, and left alone."""
    frames = plate_frames(tmp_path / "frames")
    ops = [{"op": "resize", "width": 160}, {"op": "grayscale"}]
    stream = {"id": "gate", "source": str(frames), "preprocess": ops}
    box = np.array([[v / 4 for v in PLATE_BOX] + [0.9, 0]], np.float32)  # where the plate is in the model's picture

    class Quartered(RecordingPlateDetector):
        def submit(self, inputs: list[Any], shapes: list[tuple[int, int]]) -> ReadyDetections:
            self.seen.extend(inputs)
            return ReadyDetections([box.copy() for _ in inputs])

    for crops in ("frame", "operated"):
        detector = Quartered()
        got = run_gate(endpoint, stream, [{"kind": "ocr", "classes": ["plate"], "crops": crops}], detector)
        assert detector.seen and all(s.shape == (90, 160, 3) for s in detector.seen)
        msgs = got.detections("gate")
        assert len(msgs) == len(PLATES)
        for msg, text in zip(msgs, PLATES, strict=True):
            plate = msg.raw["detections"][0]
            assert np.allclose(plate["box"], PLATE_BOX, atol=1.0), "boxes come back to the frame either way"
            if crops == "frame":
                assert alnum(plate["text"]) == alnum(text), (plate["text"], text)
            else:
                assert "text" not in plate
