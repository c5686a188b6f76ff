"""The torch backend on CUDA (fp16): same results as Ultralytics' predictor at fp16."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest
from helpers import config_for, run_and_collect
from test_pipeline import match_detections

from engines.architecture import calibration_image

pytestmark = pytest.mark.gpu


def reference_fp16(weights: Path, frames: list, imgsz: int = 640) -> list:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    return [
        model.predict(f, imgsz=imgsz, device=0, half=True, verbose=False)[0].boxes.data.float().cpu().numpy()
        for f in frames
    ]


def test_cuda_fp16_matches_ultralytics(arch_weights: Path, endpoint: str, tmp_path: Path) -> None:
    frames = [calibration_image(seed) for seed in range(1, 7)]
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), frame)
    config = config_for(
        endpoint, [{"id": "gen", "source": str(tmp_path)}], {"path": str(arch_weights), "device": "cuda"}
    )
    got = run_and_collect(config)
    start = got.statuses("gen")[0].raw["engine"]
    assert start["device"].startswith("cuda") and start["precision"] == "fp16"
    for msg, ref in zip(got.detections("gen"), reference_fp16(arch_weights, frames), strict=True):
        match_detections(msg, ref)


def test_cuda_round_trip_on_real_footage(arch_weights: Path, people1: Path, endpoint: str) -> None:
    config = config_for(endpoint, [{"id": "street", "source": str(people1)}], {"path": str(arch_weights)})
    got = run_and_collect(config)
    assert [m.seq for m in got.detections("street")] == list(range(686))
    assert got.statuses("street")[-1].event == "eos"
    cap = cv2.VideoCapture(str(people1))
    frames = [cap.read()[1] for _ in range(4)]
    for msg, ref in zip(got.detections("street")[:4], reference_fp16(arch_weights, frames), strict=True):
        match_detections(msg, ref)
