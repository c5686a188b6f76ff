"""The engine cache: keys, sidecars, atomic writes, stale engines rebuilt; TensorRT itself where it imports."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from engines.engine_cache import CacheKey, EngineCache
from engines.tensorrt_backend import GpuIdentity, cached_engine, engine_key
from engines.tensorrt_build import BuildSettings, calibration_frames
from engines.weights import LoadedModel
from pipeline.errors import BackendUnavailable, ModelError

GPU = GpuIdentity("NVIDIA Jetson Orin", "8.7")
SETTINGS = BuildSettings(precision="fp16", min_batch=1, opt_batch=4, max_batch=4, input_hw=(640, 640))
MODEL = LoadedModel(module=None, name="yolo11n.pt", path=Path("yolo11n.pt"))


def key_for(**changes: Any) -> CacheKey:
    gpu = changes.pop("gpu", GPU)
    trt_version = changes.pop("trt", "10.3.0")
    sha = changes.pop("sha", "a" * 64)
    return engine_key(MODEL, gpu, trt_version, replace(SETTINGS, **changes), sha)


class FakeBuilder:
    """A scripted TensorRT: 'builds' by writing bytes and 'deserializes' what it wrote."""

    def __init__(self) -> None:
        self.builds = 0
        self.refuse: set[bytes] = set()

    def build(self, dest: Path) -> None:
        self.builds += 1
        dest.write_bytes(b"engine-" + str(self.builds).encode() + b"-" + b"x" * 4096)

    def deserialize(self, data: bytes) -> Any:
        return None if data in self.refuse else {"engine": data[:8]}


def test_every_part_of_the_key_changes_the_engine_file() -> None:
    base = key_for()
    variants = [
        key_for(sha="b" * 64),
        key_for(gpu=GpuIdentity("NVIDIA H100 80GB HBM3", "9.0")),
        key_for(gpu=GpuIdentity("NVIDIA Jetson Orin", "8.6")),
        key_for(trt="10.4.0"),
        key_for(precision="fp32"),
        key_for(precision="int8", calibration="/cams/frames"),
        key_for(input_hw=(480, 480)),
        key_for(max_batch=8, opt_batch=8),
    ]
    names = {base.filename, *(v.filename for v in variants)}
    assert len(names) == len(variants) + 1
    assert base.filename.startswith("yolo11n-") and base.filename.endswith(".engine")
    assert key_for().filename == base.filename  # deterministic
    assert base.fields["input_shape"] == [3, 640, 640] and base.fields["batch"] == [1, 4, 4]


def test_built_once_then_loaded_from_cache_with_a_sidecar(tmp_path: Path) -> None:
    cache, fake, key = EngineCache(tmp_path / "engines"), FakeBuilder(), key_for()
    engine, artifact = cached_engine(cache, key, fake.build, fake.deserialize)
    assert artifact.built and fake.builds == 1 and engine == {"engine": b"engine-1"}
    sidecar = json.loads(Path(f"{artifact.path}.json").read_text())
    assert sidecar["key"]["gpu"] == "NVIDIA Jetson Orin" and sidecar["key"]["compute_capability"] == "8.7"
    assert sidecar["key"]["tensorrt"] == "10.3.0" and sidecar["key"]["precision"] == "fp16"
    assert sidecar["size"] == artifact.path.stat().st_size and len(sidecar["sha256"]) == 64
    again, artifact2 = cached_engine(cache, key, fake.build, fake.deserialize)
    assert not artifact2.built and fake.builds == 1 and again == engine
    _, other = cached_engine(cache, key_for(gpu=GpuIdentity("NVIDIA A2", "8.6")), fake.build, fake.deserialize)
    assert other.built and fake.builds == 2 and other.path != artifact.path


def _edit_key(sidecar: Path, **fields: Any) -> None:
    data = json.loads(sidecar.read_text())
    data["key"].update(fields)
    sidecar.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda art, side: art.write_bytes(art.read_bytes()[:100]), "truncated"),
        (lambda art, side: art.write_bytes(b"y" * art.stat().st_size), "corrupt"),
        (lambda art, side: side.unlink(), "no sidecar"),
        (lambda art, side: side.write_text("{not json"), "unreadable sidecar"),
        (lambda art, side: _edit_key(side, tensorrt="8.6"), "different tensorrt"),
    ],
)
def test_a_stale_engine_is_rebuilt_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, reason: str
) -> None:
    cache, fake, key = EngineCache(tmp_path), FakeBuilder(), key_for()
    _, artifact = cached_engine(cache, key, fake.build, fake.deserialize)
    damage(artifact.path, Path(f"{artifact.path}.json"))
    with caplog.at_level(logging.WARNING):
        engine, rebuilt = cached_engine(cache, key, fake.build, fake.deserialize)
    assert rebuilt.built and fake.builds == 2 and engine == {"engine": b"engine-2"}
    assert "stale" in caplog.text and reason in caplog.text
    assert cache.lookup(key) is not None  # and the rebuilt one is good


def test_an_engine_tensorrt_refuses_is_rebuilt_once(tmp_path: Path) -> None:
    cache, fake, key = EngineCache(tmp_path), FakeBuilder(), key_for()
    _, artifact = cached_engine(cache, key, fake.build, fake.deserialize)
    fake.refuse.add(artifact.path.read_bytes())  # e.g. written by another TensorRT build with the same version
    engine, rebuilt = cached_engine(cache, key, fake.build, fake.deserialize)
    assert rebuilt.built and fake.builds == 2 and engine is not None
    bad = rebuilt.path.read_bytes()
    fake.refuse.add(bad)
    fake.build = lambda dest: dest.write_bytes(bad)  # type: ignore[method-assign]  # builds what it refuses
    with pytest.raises(BackendUnavailable, match="cannot deserialize"):
        cached_engine(cache, key, fake.build, fake.deserialize)
    assert cache.lookup(key) is None


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)

    def broken(dest: Path) -> None:
        dest.write_bytes(b"half an engine")
        raise ModelError("TensorRT could not build an engine")

    with pytest.raises(ModelError):
        cache.store(key_for(), broken)
    assert list(tmp_path.iterdir()) == []


def test_calibration_frames_from_a_folder_and_from_a_video(tmp_path: Path, tiny_video: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.jpg"), np.full((48, 64, 3), i * 40, np.uint8))
    (folder / "readme.txt").write_text("not an image")
    assert len(list(calibration_frames(str(folder), 3))) == 3
    from_video = list(calibration_frames(str(tiny_video), 10))
    assert len(from_video) == 10 and from_video[0].shape == (120, 160, 3)
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing to calibrate on")
    with pytest.raises(ModelError, match="no images"):
        list(calibration_frames(str(empty), 3))
    with pytest.raises(ModelError, match="cannot open"):
        list(calibration_frames(str(tmp_path / "missing.mp4"), 3))


# -- the real thing, where TensorRT is installed ---------------------------------------------------


@pytest.mark.trt
def test_tensorrt_engine_builds_caches_and_matches_torch(arch_weights: Path, tmp_path: Path, media: Path) -> None:
    import torch

    from engines.base import ModelSpec
    from engines.registry import load_engine

    cap = cv2.VideoCapture(str(media / "videos" / "people1.mp4"))
    frames = [cap.read()[1] for _ in range(4)]
    spec = ModelSpec(str(arch_weights), device="cuda", cache_dir=tmp_path, max_batch=4)
    trt_engine = load_engine(spec, "tensorrt")
    assert trt_engine.info.backend == "tensorrt" and trt_engine.info.cache == "built"
    ours = trt_engine.infer([trt_engine.prepare(f) for f in frames], [f.shape[:2] for f in frames])
    trt_engine.close()
    again = load_engine(spec, "tensorrt")
    assert again.info.cache == "hit"
    again.close()
    ref_engine = load_engine(replace(spec, cuda_graphs=False), "torch")
    ref = ref_engine.infer([ref_engine.prepare(f) for f in frames], [f.shape[:2] for f in frames])
    ref_engine.close()
    torch.cuda.synchronize()
    assert sum(len(r) for r in ref) > 0
    for o, r in zip(ours, ref, strict=True):
        # fp16 engines at different letterbox shapes (square vs rect): same objects, boxes within a few pixels.
        assert abs(len(o) - len(r)) <= max(2, len(r) // 5)


@pytest.mark.trt
def test_build_engine_command_prebuilds_for_first_boot(arch_weights: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pipeline.cli", "build-engine", str(arch_weights), "--batch", "2"]
    first = subprocess.run([*cmd, "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr
    assert "built" in first.stdout and ".engine" in first.stdout
    second = subprocess.run([*cmd, "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "cached" in second.stdout
