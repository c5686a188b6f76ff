"""Batching across streams, preprocess threads and run reports, with a scripted engine at the engine seam."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from helpers import config_for, run_and_collect
from test_sources import BlockingSource, FakeEngine

from pipeline.config import UrlSourceConfig, build_config
from pipeline.runner import Pipeline
from pipeline.sources import make_source


class BatchRecordingEngine(FakeEngine):
    """One box per frame; remembers each batch's streams (read from the frame's first pixel)."""

    def __init__(self, max_batch: int) -> None:
        super().__init__()
        self.info = replace(self.info, max_batch=max_batch)
        self.batches: list[int] = []

    def infer(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        self.batches.append(len(inputs))
        return super().infer(inputs, shapes)


def test_a_dead_camera_never_stalls_the_others(endpoint: str) -> None:
    engine = BatchRecordingEngine(max_batch=2)
    streams = [
        {"id": "dead", "source": "rtsp://192.0.2.1/never"},
        {"id": "live", "source": {"type": "synthetic", "frames": 40, "width": 96, "height": 64}},
    ]
    config = build_config(
        {"streams": streams, "model": {"batch_timeout_ms": 20}, "publish": {"endpoint": endpoint}}, "t"
    )

    def sources(cfg: Any) -> Any:
        return BlockingSource(0) if isinstance(cfg, UrlSourceConfig) else make_source(cfg)

    pipeline = Pipeline(config, source_factory=sources, engine_factory=lambda _s, _n: engine)
    pipeline.start()
    deadline = time.monotonic() + 20
    while pipeline.progress().published < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.stop()
    report = pipeline.report()
    pipeline.close()
    live = next(s for s in report.streams if s.stream_id == "live")
    assert live.published == 40, "the live camera's frames must all get through while the other is dead"
    assert set(engine.batches) <= {1, 2} and sum(engine.batches) == 40


def test_live_cameras_get_one_preprocess_thread_by_default_and_files_several_on_a_gpu() -> None:
    from engines.base import EngineInfo
    from pipeline.assembly import MAX_GPU_PREPROCESS_THREADS, preprocess_threads
    from pipeline.config import build_config

    def threads(sources: list[dict[str, object]], device: str, **extra: object) -> int:
        config = build_config({"streams": [{"id": f"s{i}", "source": s} for i, s in enumerate(sources)], **extra}, "t")
        return preprocess_threads(config, EngineInfo("torch", device, "fp16", "m", "detect", 640, {}, max_batch=8))

    camera = {"type": "url", "url": "rtsp://cam.example/stream"}
    paced = {"type": "file", "path": "a.mp4", "realtime": True}
    fast = {"type": "file", "path": "a.mp4"}
    assert threads([camera] * 8 + [paced] * 2, "cuda:0") == 1, "threads racing for the model's room serve unevenly"
    assert threads([fast] * 8, "cuda:0") == MAX_GPU_PREPROCESS_THREADS
    assert threads([camera, fast], "cuda:0") == 2
    assert threads([fast] * 8, "cpu") == 1
    cropped = {"source": camera, "preprocess": [{"op": "crop", "x": 0, "y": 0, "width": 8, "height": 8}]}
    config = build_config({"streams": [{"id": f"s{i}", **cropped} for i in range(8)]}, "t")
    info = EngineInfo("torch", "cuda:0", "fp16", "m", "detect", 640, {}, max_batch=8)
    assert preprocess_threads(config, info) == MAX_GPU_PREPROCESS_THREADS, "image operations are real work a frame"
    assert threads([camera] * 8, "cuda:0", preprocess_threads=3) == 3, "the config's number wins"


def test_several_preprocess_threads_keep_each_streams_order(endpoint: str) -> None:
    engine = BatchRecordingEngine(max_batch=4)
    streams = [
        {"id": f"s{i}", "source": {"type": "synthetic", "seed": i, "frames": 30, "width": 96, "height": 64}}
        for i in range(3)
    ]
    config = config_for(endpoint, streams, {"batch_size": 4}, preprocess_threads=2)
    got = run_and_collect(config, engine_factory=lambda _s, _n: engine)
    for i in range(3):
        dets = got.detections(f"s{i}")
        assert [m.seq for m in dets] == list(range(30))
        assert [m.frame_index for m in dets] == list(range(30))
        assert [d.box for d in dets[0].detections] == [(1.0, 2.0, 10.0, 20.0)]
    assert max(engine.batches) <= 4 and sum(engine.batches) == 90
    report = got.report
    assert report is not None
    assert set(report.stage_ms) == {"capture", "preprocess", "infer", "publish"}
    assert all(v >= 0 for v in report.stage_ms.values()) and report.stage_ms["capture"] > 0
    assert 0 < report.latency_ms["p50"] <= report.latency_ms["p99"] <= report.latency_ms["max"]
    assert 1.0 <= report.mean_batch <= 4.0
    assert report.queue_peaks["prepared"] <= 8  # two batches
    ages = report.frame_age_ms  # every frame passed every hand-off, each later in its life than the one before
    assert list(ages) == ["preprocess", "batched", "inferred", "published"]
    assert all(hop["frames"] == 90 for hop in ages.values()), ages
    for earlier, later in zip(ages.values(), list(ages.values())[1:], strict=False):
        assert all(earlier[q] <= later[q] for q in ("p50", "p90", "p99", "max")), ages
    assert ages["published"]["max"] >= report.latency_ms["max"] - 0.1


class DeferredEngine(FakeEngine):
    """Results computed only when read (as on a GPU); logs submits and reads, and who was in flight when each batch
    was read."""

    def __init__(self) -> None:
        super().__init__()
        self.info = replace(self.info, max_batch=2, asynchronous=True)
        self.log: list[tuple[str, int]] = []
        self.submitted = 0

    def submit(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> Any:
        number = self.submitted
        self.submitted += 1
        self.log.append(("submit", number))
        engine = self

        class Pending:
            masks = None
            keypoints = None

            def result(self) -> list[np.ndarray]:
                engine.log.append(("result", number))
                return FakeEngine.infer(engine, inputs, shapes)

        return Pending()


def test_the_next_batch_is_submitted_before_the_last_one_is_read(endpoint: str) -> None:
    engine = DeferredEngine()
    stream = {"id": "f", "source": {"type": "synthetic", "frames": 40, "width": 96, "height": 64}}
    got = run_and_collect(config_for(endpoint, [stream], {"batch_size": 2}), engine_factory=lambda _s, _n: engine)
    dets = got.detections("f")
    assert [m.frame_index for m in dets] == list(range(40)), "every frame, in order"
    assert got.statuses("f")[-1].event == "eos"
    reads = [n for kind, n in engine.log if kind == "result"]
    assert reads == list(range(engine.submitted)), "each batch is read once, in submission order"
    overlapped = [
        n for i, (kind, n) in enumerate(engine.log) if kind == "result" and ("submit", n + 1) in engine.log[:i]
    ]
    assert overlapped, f"no batch was read after its successor was submitted: {engine.log}"


class WarmingEngine(DeferredEngine):
    """Frames reach it on the device (as NVDEC's or uploaded ones do on a GPU); logs warm-ups and what each batch
    held, and how many batches were still unread at each warm-up."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, set[tuple[int, ...]], int]] = []

    def prepare(self, image: np.ndarray, layout: str = "bgr") -> Any:
        import torch

        from engines.detector import GpuInput

        return GpuInput(torch.from_numpy(np.ascontiguousarray(image)))

    def warmup(self, formats: Any = ()) -> None:
        unread = self.submitted - sum(1 for kind, _ in self.log if kind == "result")
        self.events.append(("warmup", {tuple(f.shape) for f in formats}, unread))

    def submit(self, inputs: list[Any], shapes: list[tuple[int, int]]) -> Any:
        self.events.append(("submit", {tuple(i.shape) for i in inputs}, 0))
        return super().submit(inputs, shapes)


def test_frames_of_a_shape_not_warmed_up_warm_the_engine_once_before_their_first_batch(endpoint: str) -> None:
    engine = WarmingEngine()
    streams = [
        {"id": "a", "source": {"type": "synthetic", "frames": 30, "width": 96, "height": 64}},
        {"id": "b", "source": {"type": "synthetic", "frames": 30, "width": 128, "height": 72}},
    ]
    got = run_and_collect(config_for(endpoint, streams, {"batch_size": 2}), engine_factory=lambda _s, _n: engine)
    assert [len(got.detections(s)) for s in ("a", "b")] == [30, 30]
    assert engine.events[0] == ("warmup", set(), 0), "start-up knows no camera's frames"
    warmed: list[tuple[int, ...]] = []
    for kind, shapes, unread in engine.events[1:]:
        if kind == "warmup":
            assert unread == 0, "a warm-up never runs behind a batch not yet read"
            warmed += shapes
        else:
            assert shapes <= set(warmed), f"a batch of {shapes} ran before its shape was warmed up ({warmed})"
    assert sorted(warmed) == [(64, 96, 3), (72, 128, 3)], "each shape once"


class NanEngine(BatchRecordingEngine):
    """Two boxes per frame; in every third batch, the second box of its first frame is NaN (a broken model)."""

    def infer(self, inputs: list[np.ndarray], shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        self.batches.append(len(inputs))
        out = [np.array([[1, 2, 10, 20, 0.9, 0], [30, 30, 40, 50, 0.8, 0]], np.float32) for _ in inputs]
        if len(self.batches) % 3 == 0:
            out[0][1, 2] = np.nan
        return out


def test_non_finite_rows_never_reach_the_wire_and_the_rest_of_the_batch_is_kept(endpoint: str) -> None:
    engine = NanEngine(max_batch=2)
    streams = [
        {"id": f"s{i}", "source": {"type": "synthetic", "seed": i, "frames": 12, "width": 96, "height": 64}}
        for i in range(2)
    ]
    got = run_and_collect(config_for(endpoint, streams, {"batch_size": 2}), engine_factory=lambda _s, _n: engine)
    counts = [len(m.detections) for i in range(2) for m in got.detections(f"s{i}")]
    assert len(counts) == 24
    assert counts.count(1) >= 3, "the frames with a NaN row lose that row only"
    assert counts.count(1) + counts.count(2) == 24
    boxes = [d.box for i in range(2) for m in got.detections(f"s{i}") for d in m.detections]
    assert all(np.isfinite(b).all() for b in boxes)
