"""Segmentation through the pipeline: masks as Ultralytics computes them, and close to the scene's truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
from helpers import config_for, run_and_collect

from engines.masks import InstanceMasks
from engines.weights import resolve_weights
from pipeline.schema import DetectionsMessage
from pipeline.synth.writer import write_scene

SCHEMA = Path(__file__).resolve().parents[1] / "edgesight_client" / "schemas" / "detections-1.schema.json"
SEED = 4242  # never used in training (1000-1059) or validation (9000-9007)
FRAMES = 90


@dataclass
class SegRun:
    scene: Path
    messages: list[DetectionsMessage]
    size: tuple[int, int]  # height, width


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> SegRun:
    from conftest import free_port

    scene = write_scene(tmp_path_factory.mktemp("seg") / "scene", SEED, FRAMES)
    config = config_for(
        f"tcp://127.0.0.1:{free_port()}",
        [{"id": "s", "source": str(scene / "scene.mp4")}],
        {"path": "edgesight-seg", "engine": "torch"},
        publish={"masks": {"rle": True}},
        tracking={"enabled": False},
    )
    got = run_and_collect(config)
    messages = got.detections("s")
    assert len(messages) == FRAMES
    return SegRun(scene, messages, (messages[0].height, messages[0].width))


def raster(polygon: Any, size: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(size, np.uint8)
    if polygon is not None and len(polygon) >= 3:
        cv2.fillPoly(canvas, [np.round(np.asarray(polygon, np.float64)).astype(np.int32)], 1)
    return canvas.astype(bool)


def filled(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its holes filled (a polygon is an outline: a bicycle's wheels come out solid)."""
    contours = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0]
    canvas = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(canvas, contours, -1, 1, -1)
    return canvas.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def box_iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def decode(rle: Any) -> np.ndarray:
    from pycocotools import mask as coco_mask

    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_every_detection_carries_a_valid_polygon_and_rle(seg_run: SegRun) -> None:
    schema = json.loads(SCHEMA.read_text())
    total = 0
    for msg in seg_run.messages:
        jsonschema.validate(msg.raw, schema)
        for det in msg.detections:
            total += 1
            assert det.polygon is not None and len(det.polygon) >= 3
            assert det.rle is not None and det.rle["size"] == list(seg_run.size)
            mask = decode(det.rle)
            x1, y1, x2, y2 = det.box
            ys, xs = np.nonzero(mask)
            # the mask lies within its box (Ultralytics crops masks to the box) and fills much of it
            assert xs.min() >= x1 - 2 and xs.max() <= x2 + 2 and ys.min() >= y1 - 2 and ys.max() <= y2 + 2
            if mask.sum() >= 2000:  # (a polygon through the border pixels' centres loses a thin mask's rim)
                assert iou(raster(det.polygon, seg_run.size), filled(mask)) > 0.85
    assert total > 200


def test_masks_equal_the_ultralytics_predictor(seg_run: SegRun) -> None:
    """Same weights, same frames: every box found by both, masks (RLE) and polygons as Ultralytics' ``masks.xy``."""
    from ultralytics import YOLO

    model = YOLO(str(resolve_weights("edgesight-seg")))
    cap = cv2.VideoCapture(str(seg_run.scene / "scene.mp4"))
    rle_ious, poly_ious, theirs_total, matched = [], [], 0, 0
    for msg in seg_run.messages:
        ok, image = cap.read()
        assert ok
        ref = model.predict(image, conf=0.25, iou=0.7, imgsz=640, device="cpu", verbose=False)[0]
        if ref.masks is None:
            assert not msg.detections
            continue
        from ultralytics.utils import ops

        ref_masks = ops.scale_masks(ref.masks.data[None].float(), seg_run.size)[0].numpy() > 0.5
        theirs_total += len(ref.boxes)
        for k, (box, poly) in enumerate(zip(ref.boxes.xyxy.tolist(), ref.masks.xy, strict=True)):
            best = max(msg.detections, key=lambda d, b=box: box_iou(d.box, b), default=None)
            if best is None or box_iou(best.box, box) < 0.99:
                continue
            matched += 1
            rle_ious.append(iou(decode(best.rle), ref_masks[k]))
            theirs = raster(poly, seg_run.size)
            poly_ious.append((iou(raster(best.polygon, seg_run.size), theirs), int(theirs.sum())))
    # Polygons are simplified (0.5 px), Ultralytics' are not: on small masks that half pixel weighs more.
    large = [v for v, area in poly_ious if area >= 1000]
    print(
        f"{matched}/{theirs_total} Ultralytics masks matched; RLE mask IoU min {min(rle_ious):.4f}; polygon IoU "
        f"mean {np.mean([v for v, _ in poly_ious]):.4f}, over {len(large)} masks of >= 1000 px mean "
        f"{np.mean(large):.4f} min {min(large):.4f}"
    )
    assert theirs_total > 200
    assert matched == theirs_total == sum(len(m.detections) for m in seg_run.messages)
    assert min(rle_ious) >= 0.98
    assert np.mean([v for v, _ in poly_ious]) >= 0.98
    assert min(large) >= 0.98


def test_masks_cover_the_truth(seg_run: SegRun) -> None:
    """Against the scene's truth polygons: mean mask IoU over matched objects at least 0.85."""
    truth = [json.loads(line) for line in (seg_run.scene / "truth.jsonl").read_text().splitlines()]
    ious = []
    for msg, frame in zip(seg_run.messages, truth, strict=True):
        assert msg.frame_index == frame["frame_index"]
        objects = [o for o in frame["objects"] if o["visible"] >= 0.4]
        for det in msg.detections:
            candidates = [o for o in objects if o["label"] == det.label]
            best = max(candidates, key=lambda o: box_iou(o["box"], det.box), default=None)
            if best is None or box_iou(best["box"], det.box) < 0.5:
                continue
            objects.remove(best)
            ious.append(iou(raster(det.polygon, seg_run.size), raster(best["polygon"], seg_run.size)))
    print(f"seed {SEED}: {len(ious)} matched objects, mean mask IoU vs truth {np.mean(ious):.4f}")
    assert len(ious) > 200
    assert np.mean(ious) >= 0.85


def test_polygons_follow_the_tolerance_and_undo_the_letterbox() -> None:
    data = np.zeros((1, 384, 640), np.uint8)
    cv2.circle(data[0], (320, 192), 60, 1, -1)  # model input: 640x360 letterboxed to 640x384 (12 px top)
    masks = InstanceMasks(data, (360, 640))
    exact, coarse = masks.polygons(0.0)[0], masks.polygons(3.0)[0]
    assert len(coarse) < len(exact) / 2
    for poly in (exact, coarse):
        pts = np.asarray(poly)
        radius = np.hypot(pts[:, 0] - 320, pts[:, 1] - 180)  # centre moved up by the 12 px padding
        assert np.abs(radius - 60).max() < 4.0
    full = masks.source_masks()[0]
    assert full.shape == (360, 640) and full[180, 320] and not full[180, 400]
    assert InstanceMasks(np.zeros((0, 384, 640), np.uint8), (360, 640)).polygons() == []
    assert masks.subset(np.array([False])).rle() == []
