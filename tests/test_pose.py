"""Pose models through the pipeline: boxes and keypoints as Ultralytics' own predictor gives them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import config_for, reference_frames, run_and_collect

from engines.architecture import save_architecture_weights

SCHEMA = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas" / "detections-1.schema.json"


@pytest.fixture(scope="module")
def pose_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_architecture_weights(tmp_path_factory.mktemp("pose") / "pose.pt", "yolo11n-pose.yaml", seed=2)


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_keypoints_equal_the_ultralytics_predictor(
    pose_weights: Path, engine: str, endpoint: str, tmp_path: Path
) -> None:
    import jsonschema
    from ultralytics import YOLO

    frames = reference_frames(tmp_path, 4)
    config = config_for(
        endpoint,
        [{"id": "p", "source": str(tmp_path)}],
        {"path": str(pose_weights), "engine": engine, "device": "cpu"},
        tracking={"enabled": False},
    )
    got = run_and_collect(config)
    model = YOLO(str(pose_weights))
    compared = 0
    for msg, frame in zip(got.detections("p"), frames, strict=True):
        jsonschema.validate(msg.raw, json.loads(SCHEMA.read_text()))
        ref = model.predict(frame, imgsz=640, conf=0.25, device="cpu", verbose=False)[0]
        ref_boxes = ref.boxes.xyxy.numpy()
        ref_kpts = ref.keypoints.data.numpy() if ref.keypoints is not None else np.zeros((0, 17, 3))
        for det in msg.detections:
            err = np.abs(ref_boxes - np.array(det.box)).max(axis=1) if len(ref_boxes) else np.array([np.inf])
            k = int(np.argmin(err))
            if err[k] > 1.0:
                assert det.confidence < 0.3, f"a box Ultralytics did not find: {det}"  # borderline scores aside
                continue
            assert det.keypoints is not None and len(det.keypoints) == 17
            ours = np.array(det.keypoints)
            assert np.abs(ours[:, :2] - ref_kpts[k][:, :2]).max() < 1.0
            assert np.abs(ours[:, 2] - ref_kpts[k][:, 2]).max() < 1e-2
            compared += 1
    assert compared >= 5, "the seeded pose model finds boxes on the reference frames"
