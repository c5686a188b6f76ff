"""Backends, the shared post-processing and the auto ladder, with real models; fakes only at the backend seam."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from engines import registry
from engines.architecture import calibration_image
from engines.base import EngineInfo, ModelSpec
from engines.letterbox import CpuLetterbox, TorchLetterbox, geometry
from engines.postprocess import NmsSettings, batched_nms
from engines.registry import BackendEntry, load_engine
from pipeline.errors import BackendUnavailable, ModelError


def ultralytics_boxes(weights: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    torch.set_num_threads(os.cpu_count() or 1)
    return [model.predict(f, device="cpu", verbose=False)[0].boxes.data.cpu().numpy() for f in frames]


def assert_same_boxes(ours: np.ndarray, ref: np.ndarray, box_tol: float = 1.0, conf_tol: float = 2e-3) -> None:
    """One-to-one: same class, boxes within ``box_tol`` px, confidences within ``conf_tol`` (borderline aside)."""
    left = list(range(len(ours)))
    for row in ref:
        hit = next(
            (
                i
                for i in left
                if ours[i, 5] == row[5]
                and np.abs(ours[i, :4] - row[:4]).max() <= box_tol
                and abs(ours[i, 4] - row[4]) <= conf_tol
            ),
            None,
        )
        if hit is None:
            assert row[4] < 0.25 + conf_tol, f"no match for {row}"
            continue
        left.remove(hit)
    assert all(ours[i, 4] < 0.25 + conf_tol for i in left), f"extra boxes: {ours[left]}"


@pytest.fixture(scope="module")
def frames(media: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(media / "videos" / "people1.mp4"))
    out = []
    for i in range(60):
        ok, img = cap.read()
        assert ok
        if i % 12 == 0:
            out.append(img)
    return out


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_cpu_backends_match_ultralytics_on_real_footage(
    backend: str, arch_weights: Path, frames: list[np.ndarray], tmp_path: Path
) -> None:
    engine = load_engine(ModelSpec(str(arch_weights), device="cpu", cache_dir=tmp_path), backend)
    assert engine.info.backend == backend and engine.info.precision == "fp32"
    ours = [engine.infer([engine.prepare(f)], [f.shape[:2]])[0] for f in frames]
    engine.close()
    refs = ultralytics_boxes(arch_weights, frames)
    assert sum(len(r) for r in refs) >= 10, "the test model should find boxes"
    for o, r in zip(ours, refs, strict=True):
        assert_same_boxes(o, r)


def test_a_batch_across_streams_gives_what_single_frames_give(arch_weights: Path, tmp_path: Path) -> None:
    """Different frame sizes in one batch: grouped by letterbox shape, each scaled back to its own source."""
    engine = load_engine(ModelSpec(str(arch_weights), device="cpu", cache_dir=tmp_path, max_batch=4), "onnxruntime")
    images = [calibration_image(s) for s in range(1, 4)] + [cv2.resize(calibration_image(4), (480, 360))]
    singles = [engine.infer([engine.prepare(i)], [i.shape[:2]])[0] for i in images]
    batched = engine.infer([engine.prepare(i) for i in images], [i.shape[:2] for i in images])
    assert sum(len(s) for s in singles) >= 10
    for s, b in zip(singles, batched, strict=True):
        assert_same_boxes(b, s, box_tol=0.05, conf_tol=1e-4)


def test_auto_picks_the_best_backend_here_and_says_why(tmp_path: Path) -> None:
    engine = load_engine(ModelSpec("edgesight-det", cache_dir=tmp_path))
    info = engine.info
    engine.close()
    if torch.cuda.is_available():
        assert info.backend in ("tensorrt", "torch") and info.device.startswith("cuda")
    else:
        assert (info.backend, info.device) == ("onnxruntime", "cpu")
        assert info.fallback_reason is not None
        assert "tensorrt-cuda" in info.fallback_reason and "torch-cuda" in info.fallback_reason
    assert info.to_json()["fallback_reason"] == info.fallback_reason


def test_onnx_export_is_cached_then_reused_and_a_corrupt_one_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = ModelSpec("edgesight-det", device="cpu", cache_dir=tmp_path)
    first = load_engine(spec, "onnxruntime")
    assert first.info.cache == "built" and first.info.artifact is not None
    artifact = Path(first.info.artifact)
    first.close()
    assert artifact.parent == tmp_path and Path(f"{artifact}.json").is_file()
    second = load_engine(spec, "onnxruntime")
    assert second.info.cache == "hit" and second.info.artifact == str(artifact)
    second.close()
    artifact.write_bytes(artifact.read_bytes()[:1000])  # truncated by a crash or a full disk
    with caplog.at_level(logging.WARNING):
        third = load_engine(spec, "onnxruntime")
    assert third.info.cache == "built"
    assert "stale" in caplog.text and "truncated" in caplog.text
    third.close()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


# -- post-processing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        NmsSettings(0.25, 0.7, 300),
        NmsSettings(0.1, 0.45, 300, classes=(0, 2)),
        NmsSettings(0.25, 0.7, 300, agnostic=True),
        NmsSettings(0.05, 0.5, 7),
    ],
)
def test_batched_nms_equals_ultralytics_per_image_nms(settings: NmsSettings) -> None:
    from ultralytics.utils import nms

    gen = torch.Generator().manual_seed(7)
    batch, nc, anchors = 3, 5, 2000
    xy = torch.rand(batch, 2, anchors, generator=gen) * 600
    wh = torch.rand(batch, 2, anchors, generator=gen) * 80 + 4
    scores = torch.rand(batch, nc, anchors, generator=gen) ** 4
    preds = torch.cat((xy, wh, scores), 1)
    ours = batched_nms(preds, settings, nc)
    ref = nms.non_max_suppression(
        preds.clone(),
        settings.conf,
        settings.iou,
        list(settings.classes) if settings.classes else None,
        settings.agnostic,
        max_det=settings.max_det,
    )
    assert sum(len(r) for r in ref) > 3 * batch
    for o, r in zip(ours, ref, strict=True):
        r = r.numpy()
        assert o.shape == r.shape
        order_o, order_r = np.lexsort(o.T[::-1]), np.lexsort(r.T[::-1])
        np.testing.assert_allclose(o[order_o], r[order_r], rtol=1e-5, atol=1e-3)


def test_letterbox_geometry_and_torch_letterbox_match_ultralytics() -> None:
    from ultralytics.data.augment import LetterBox

    for h, w in [(360, 640), (1080, 1920), (480, 640), (100, 1000), (640, 360), (17, 23)]:
        for auto in (True, False):
            image = np.random.default_rng(h * w).integers(0, 255, (h, w, 3), dtype=np.uint8)
            ref = LetterBox(640, auto=auto, stride=32)(image=image)
            g = geometry(h, w, 640, 32, auto)
            assert (g.out_h, g.out_w) == ref.shape[:2]
            cpu = CpuLetterbox(640, 32, auto=auto)(image)
            np.testing.assert_array_equal(cpu, ref[..., ::-1].transpose(2, 0, 1))
            ours = TorchLetterbox(640, 32, torch.float32, auto=auto)(torch.from_numpy(image))
            assert ours.shape == (3, *ref.shape[:2])
            diff = np.abs(ours.numpy() * 255 - cpu.astype(np.float32))
            assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3.0


# -- the auto ladder, with scripted backends at the registry seam -----------------------------------


class _Engine:
    def __init__(self, name: str) -> None:
        self.info = EngineInfo(name, "cpu", "fp32", "m.pt", "detect", 640, {0: "person"})


_LOG: list[str] = []
_OPENED: list[str] = []


def _unavailable(spec: ModelSpec) -> Any:
    _LOG.append(f"unavailable:{spec.device}")
    raise BackendUnavailable("no such hardware")


def _breaks(spec: ModelSpec) -> Any:
    _LOG.append(f"breaks:{spec.device}")
    _OPENED.append("session")
    try:
        raise RuntimeError("out of memory while loading")
    finally:
        _OPENED.remove("session")  # a loader releases what it opened before raising


def _works(spec: ModelSpec) -> Any:
    _LOG.append(f"works:{spec.device}")
    return _Engine("works")


def _bad_model(spec: ModelSpec) -> Any:
    _LOG.append("bad_model")
    raise ModelError("model file not found: 'x.pt'")


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    _LOG.clear()
    here = __name__
    monkeypatch.setattr(
        registry,
        "BACKENDS",
        {
            "tensorrt": BackendEntry("tensorrt", f"{here}:_unavailable"),
            "torch": BackendEntry("torch", f"{here}:_breaks"),
            "onnxruntime": BackendEntry("onnxruntime", f"{here}:_works"),
            "missing": BackendEntry("missing", "engines.no_such_backend:load"),
            "bad": BackendEntry("bad", f"{here}:_bad_model"),
        },
    )


def test_auto_ladder_logs_each_rejection_tries_each_rung_once_and_reports_why(scripted: None) -> None:
    engine = load_engine(ModelSpec("m.pt"))
    assert engine.info.backend == "works"
    assert _LOG == ["unavailable:cuda", "breaks:cuda", "works:cpu"]
    assert not _OPENED
    reason = engine.info.fallback_reason or ""
    assert "tensorrt-cuda: no such hardware" in reason
    assert "torch-cuda: failed to load (RuntimeError: out of memory while loading)" in reason


def test_auto_ladder_follows_the_configured_device(scripted: None) -> None:
    engine = load_engine(ModelSpec("m.pt", device="cpu"))
    assert _LOG == ["works:cpu"] and engine.info.fallback_reason is None


def test_a_model_error_stops_the_ladder_and_a_named_backend_has_no_fallback(
    scripted: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "auto_ladder", lambda device: [("bad", "cpu"), ("onnxruntime", "cpu")])
    with pytest.raises(ModelError, match=r"x\.pt"):
        load_engine(ModelSpec("m.pt"))
    assert _LOG == ["bad_model"]
    with pytest.raises(BackendUnavailable, match="engine 'tensorrt' cannot run here: no such hardware"):
        load_engine(ModelSpec("m.pt"), "tensorrt")
    with pytest.raises(BackendUnavailable, match="engine 'missing' cannot run here: not installed"):
        load_engine(ModelSpec("m.pt"), "missing")
    with pytest.raises(ModelError, match="unknown engine 'nope'"):
        load_engine(ModelSpec("m.pt"), "nope")


def test_nothing_left_on_the_ladder_is_one_clear_error(scripted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "auto_ladder", lambda device: [("tensorrt", "cuda"), ("missing", "cpu")])
    with pytest.raises(ModelError, match="no inference backend could load the model: tensorrt-cuda: no such"):
        load_engine(ModelSpec("m.pt"))


@pytest.mark.parametrize("settings", [NmsSettings(0.25, 0.7, 300), NmsSettings(0.1, 0.45, 50, classes=(1, 3))])
def test_gpu_candidate_path_equals_ultralytics_nms(settings: NmsSettings) -> None:
    """top_candidates and greedy_keep (fixed shapes, inside the CUDA graph), or host NMS after top_candidates: the
    same boxes as Ultralytics' NMS."""
    from ultralytics.utils import nms

    from engines.postprocess import (
        greedy_keep,
        nms_candidates,
        pack_kept,
        scale_to_sources,
        top_candidates,
        unpack_kept,
    )

    gen = torch.Generator().manual_seed(11)
    batch, nc, anchors = 4, 6, 3000
    xy = torch.rand(batch, 2, anchors, generator=gen) * 600
    wh = torch.rand(batch, 2, anchors, generator=gen) * 80 + 4
    preds = torch.cat((xy, wh, torch.rand(batch, nc, anchors, generator=gen) ** 6), 1)
    cands = top_candidates(preds, nc, 1024)
    assert cands.shape == (batch, 1024, 6)
    ours = nms_candidates(cands.numpy(), settings)
    classes = None if settings.classes is None else torch.tensor(settings.classes).float()
    keep = greedy_keep(cands, settings, classes)
    assert keep[:, -1].all(), "every image reached greedy NMS's answer on the device"
    input_hw, sources = (640, 640), [(1080, 1440)] * batch
    packed = pack_kept(cands, keep, settings.max_det, input_hw, sources[0]).numpy()  # what the GPU hands over
    for on_device, on_host in zip(unpack_kept(packed, settings, input_hw, sources, False), ours, strict=True):
        assert np.array_equal(on_device, on_host)  # same rows, same order, bit for bit
    want = scale_to_sources([o.copy() for o in ours], input_hw, sources)
    for on_device, on_host in zip(unpack_kept(packed, settings, input_hw, sources), want, strict=True):
        np.testing.assert_allclose(on_device, on_host, rtol=1e-6)  # Ultralytics' scale_boxes, in torch then NumPy
    ref = nms.non_max_suppression(
        preds.clone(),
        settings.conf,
        settings.iou,
        list(settings.classes) if settings.classes else None,
        max_det=settings.max_det,
    )
    assert sum(len(r) for r in ref) > 2 * batch
    for o, r in zip(ours, ref, strict=True):
        r = r.numpy()
        assert o.shape == r.shape
        np.testing.assert_allclose(o[np.lexsort(o.T[::-1])], r[np.lexsort(r.T[::-1])], rtol=1e-5, atol=1e-3)


def test_mtcnn_runs_through_torch_only() -> None:
    from engines.base import ModelSpec
    from engines.registry import load_engine
    from pipeline.errors import ModelError

    with pytest.raises(ModelError, match="model 'mtcnn' runs through torch only, not engine 'onnxruntime'"):
        load_engine(ModelSpec("mtcnn", device="cpu"), "onnxruntime")


def test_images_greedy_keep_has_not_settled_go_to_host_nms() -> None:
    """Overlapping chains: with too few rounds the device answer is marked inexact, and the host's NMS is used."""
    from engines.postprocess import greedy_keep, nms_candidates, pack_kept, unpack_kept

    settings = NmsSettings(0.25, 0.5, 300)
    # A row of boxes, each overlapping the next (IoU 0.71) but not the one after (IoU 0.5): greedy keeps every
    # other one, and each answer hangs on the one before, a chain.
    x = torch.arange(8, dtype=torch.float32) * 5
    rows = torch.stack([x, torch.zeros(8), x + 30, torch.full((8,), 30.0), 0.9 - x / 1000, torch.zeros(8)], 1)
    cands = rows[None].repeat(2, 1, 1)
    cands[1, :, 0:3:2] += 1000  # the second image: the same chain elsewhere
    host = nms_candidates(cands.numpy(), settings)
    assert [len(h) for h in host] == [4, 4]
    short = greedy_keep(cands, settings, rounds=2)
    assert not short[:, -1].any(), "two rounds cannot settle a chain of eight"
    settled = greedy_keep(cands, settings)
    assert settled[:, -1].all()
    for flags in (short, settled):
        packed = pack_kept(cands, flags, settings.max_det, (40, 1100), (40, 1100)).numpy()
        for got, want in zip(unpack_kept(packed, settings, (40, 1100), [(40, 1100)] * 2, False), host, strict=True):
            assert np.array_equal(got, want)


def test_at_most_max_det_rows_are_kept_on_the_device() -> None:
    from engines.postprocess import greedy_keep, nms_candidates, pack_kept, top_candidates, unpack_kept

    gen = torch.Generator().manual_seed(3)
    xy, wh = torch.rand(2, 2, 2000, generator=gen) * 600, torch.rand(2, 2, 2000, generator=gen) * 20 + 4
    preds = torch.cat((xy, wh, torch.rand(2, 3, 2000, generator=gen)), 1)
    settings = NmsSettings(0.25, 0.7, 5)
    cands = top_candidates(preds, 3, 1024)
    packed = pack_kept(cands, greedy_keep(cands, settings), settings.max_det, (640, 640), (640, 640)).numpy()
    got = unpack_kept(packed, settings, (640, 640), [(640, 640)] * 2, False)
    want = nms_candidates(cands.numpy(), settings)
    assert [len(g) for g in got] == [5, 5]
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


def test_boxes_scaled_a_batch_at_a_time_equal_ultralytics_image_by_image() -> None:
    from ultralytics.utils import ops

    from engines.postprocess import scale_to_sources

    gen = np.random.default_rng(5)
    shapes = [(1080, 1920), (360, 640), (1080, 1920), (720, 1280), (1080, 1920)]
    rows = [(gen.random((n, 6)) * [700, 420, 700, 420, 1, 5]).astype(np.float32) for n in (7, 0, 3, 12, 1)]
    want = [r.copy() for r in rows]
    for r, shape in zip(want, shapes, strict=True):
        if len(r):
            r[:, :4] = ops.scale_boxes((384, 640), r[:, :4], shape)
    got = scale_to_sources([r.copy() for r in rows], (384, 640), shapes)
    for g, w, r in zip(got, want, rows, strict=True):
        assert np.array_equal(g, w)
        assert not len(r) or not np.array_equal(g[:, :4], r[:, :4])


def test_host_results_keep_no_buffers_in_the_gpu_result_pool(tmp_path: Path) -> None:
    """Only the GPU path's pinned copies go back to the pool; a CPU segmentation model's prototypes never pile up."""
    from engines.architecture import save_architecture_weights

    weights = save_architecture_weights(tmp_path / "seg.pt", "yolo11n-seg.yaml")
    engine = load_engine(ModelSpec(str(weights), device="cpu", imgsz=160), "torch")
    frame = np.full((90, 160, 3), 127, np.uint8)
    for _ in range(3):
        pending = engine.submit([engine.prepare(frame)], [frame.shape[:2]])
        pending.result()
        assert pending.masks is not None
    assert engine._pinned._free == {}  # type: ignore[attr-defined]
    engine.close()
