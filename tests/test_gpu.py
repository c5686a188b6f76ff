"""The torch backend on CUDA (fp16): same results as Ultralytics' predictor at fp16."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import config_for, reference_frames, run_and_collect
from test_engines import assert_same_boxes
from test_pipeline import match_detections

from engines.architecture import calibration_image
from pipeline.schema import DetectionsMessage

pytestmark = pytest.mark.gpu


def reference_fp16(weights: Path, frames: list, imgsz: int = 640) -> list:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    return [
        model.predict(f, imgsz=imgsz, device=0, half=True, verbose=False)[0].boxes.data.float().cpu().numpy()
        for f in frames
    ]


def test_cuda_fp16_matches_ultralytics(arch_weights: Path, endpoint: str, tmp_path: Path) -> None:
    frames = reference_frames(tmp_path, 6)
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


def test_cuda_graphs_give_what_eager_torch_gives_across_batch_sizes(arch_weights: Path, people1: Path) -> None:
    from dataclasses import replace

    from engines.base import ModelSpec
    from engines.registry import load_engine

    cap = cv2.VideoCapture(str(people1))
    frames = [cap.read()[1] for _ in range(7)] + [cv2.resize(calibration_image(3), (480, 360))]
    spec = ModelSpec(str(arch_weights), device="cuda", max_batch=8)
    graphs = load_engine(spec, "torch")
    eager = load_engine(replace(spec, cuda_graphs=False), "torch")
    shapes = [f.shape[:2] for f in frames]
    want = eager.infer([eager.prepare(f) for f in frames], shapes)
    assert sum(len(w) for w in want) > 0
    for n in (1, 3, 8):  # buckets 1, 4 (padded) and 8
        got = graphs.infer([graphs.prepare(f) for f in frames[:n]], shapes[:n])
        for g, w in zip(got, want[:n], strict=True):
            assert_same_boxes(g, w, box_tol=0.5, conf_tol=2e-3)  # padded buckets may pick other fp16 kernels
    graphs.close()
    eager.close()


def test_two_batches_in_flight_keep_their_own_results(arch_weights: Path, people1: Path) -> None:
    """A second batch replays the same CUDA graph before the first is read; the first must not change."""
    from engines.base import ModelSpec
    from engines.registry import load_engine

    cap = cv2.VideoCapture(str(people1))
    frames = [cap.read()[1] for _ in range(8)]
    shapes = [f.shape[:2] for f in frames]
    engine = load_engine(ModelSpec(str(arch_weights), device="cuda", max_batch=4), "torch")
    want = [engine.infer([engine.prepare(f) for f in frames[i : i + 4]], shapes[:4]) for i in (0, 4)]
    first = engine.submit([engine.prepare(f) for f in frames[:4]], shapes[:4])
    second = engine.submit([engine.prepare(f) for f in frames[4:]], shapes[4:])
    for got, expected in zip((first.result(), second.result()), want, strict=True):
        for g, w in zip(got, expected, strict=True):
            assert_same_boxes(g, w, box_tol=1e-3, conf_tol=1e-4)
    assert sum(len(w) for batch in want for w in batch) > 0
    engine.close()


def test_gpu_letterbox_matches_the_cpu_letterbox(people1: Path) -> None:
    import numpy as np
    import torch

    from engines.letterbox import CpuLetterbox, TorchLetterbox

    cap = cv2.VideoCapture(str(people1))
    frame = cap.read()[1]
    big = cv2.resize(frame, (1920, 1080))
    for image in (frame, big):
        cpu = CpuLetterbox(640, 32)(image).astype(np.float32)
        gpu = TorchLetterbox(640, 32, torch.float16)(torch.from_numpy(image).cuda()).float().cpu().numpy() * 255
        assert gpu.shape == cpu.shape
        diff = np.abs(gpu - cpu)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 3.0


def test_eight_streams_batch_together_on_the_gpu_and_each_keeps_its_order(
    arch_weights: Path, people1: Path, endpoint: str
) -> None:
    streams = [{"id": f"cam{i}", "source": str(people1), "max_frames": 120} for i in range(8)]
    config = config_for(endpoint, streams, {"path": str(arch_weights)})
    got = run_and_collect(config)
    assert got.report is not None
    for i in range(8):
        dets = got.detections(f"cam{i}")
        assert [m.seq for m in dets] == list(range(120))
        assert [m.frame_index for m in dets] == list(range(120))
    assert got.report.mean_batch > 1.5, got.report.mean_batch
    # The same frame in every stream gives the same boxes, whatever batch it was in, to fp16 rounding: batches of
    # other sizes (and other places in a batch) run other fp16 kernels, so a score may move by an ulp (2.4e-4 near
    # the threshold). The random weights give dozens of boxes a frame within a few ulps of each other and of the
    # threshold, so their order, and whether one at the threshold is published, are not compared.
    for index in range(120):
        want = published_rows(got.detections("cam0")[index])
        for i in range(1, 8):
            try:
                assert_same_boxes(published_rows(got.detections(f"cam{i}")[index]), want, box_tol=0.5, conf_tol=2e-3)
            except AssertionError as error:
                raise AssertionError(f"cam{i} frame {index} differs from cam0's: {error}") from None


def published_rows(msg: DetectionsMessage) -> np.ndarray:
    """A message's detections as ``(N, 6)`` rows ``x1, y1, x2, y2, confidence, class_id``."""
    return np.array([[*d.box, d.confidence, d.class_id] for d in msg.detections], np.float32).reshape(-1, 6)


def _needs_nvdec() -> None:
    from pipeline.sources.nvdec import nvdec_available

    if not nvdec_available():
        pytest.skip("PyNvVideoCodec is not installed")


def test_nvdec_decodes_the_file_as_opencv_does(people1: Path) -> None:
    import numpy as np

    from pipeline.sources.nvdec import NvdecFileSource
    from pipeline.sources.video import VideoFileSource

    _needs_nvdec()
    gpu, cpu = NvdecFileSource(people1), VideoFileSource(people1)
    gpu.open()
    cpu.open()
    n = 0
    while (g := gpu.read()) is not None:
        c = cpu.read()
        assert c is not None
        if n % 100 == 0:
            img = g.image.cpu().numpy()  # type: ignore[attr-defined]
            assert img.shape == c.image.shape
            assert np.abs(img.astype(np.int16) - c.image.astype(np.int16)).mean() < 4.0  # colour conversion differs
        n += 1
    gpu.release()
    cpu.release()
    assert n == 686


def assert_decoders_agree(arch_weights: Path, people1: Path, endpoint: str, decoder: str) -> None:
    """The pipeline on ``decoder``'s frames publishes every frame, with detections close to OpenCV-decoded ones."""
    results = {}
    for name in (decoder, "cpu"):
        stream = {"id": "s", "source": {"type": "file", "path": str(people1), "decoder": name}, "max_frames": 200}
        got = run_and_collect(config_for(endpoint, [stream], {"path": str(arch_weights)}))
        results[name] = got.detections("s")
    assert [m.seq for m in results[decoder]] == list(range(200))
    counts = [(len(a.detections), len(b.detections)) for a, b in zip(results[decoder], results["cpu"], strict=True)]
    close = sum(abs(a - b) <= max(2, b // 5) for a, b in counts)
    assert close >= 190, counts[:20]


def test_pipeline_on_nvdec_frames_matches_cpu_decoding(arch_weights: Path, people1: Path, endpoint: str) -> None:
    _needs_nvdec()
    assert_decoders_agree(arch_weights, people1, endpoint, "nvdec")


def test_segmentation_masks_on_cuda_match_ultralytics(endpoint: str, tmp_path: Path) -> None:
    """The fused CUDA-graph path carries the prototypes: masks equal Ultralytics' predictor at fp16."""
    import numpy as np
    from test_segmentation import box_iou, decode, iou
    from ultralytics import YOLO
    from ultralytics.utils import ops

    from engines.weights import resolve_weights
    from pipeline.synth.writer import write_scene

    scene = write_scene(tmp_path / "scene", 4242, 60)
    config = config_for(
        endpoint,
        [{"id": "s", "source": str(scene / "scene.mp4")}],
        {"path": "edgesight-seg", "device": "cuda"},
        publish={"masks": {"rle": True}},
        tracking={"enabled": False},
    )
    got = run_and_collect(config)
    assert got.statuses("s")[0].raw["engine"]["device"].startswith("cuda")
    model = YOLO(str(resolve_weights("edgesight-seg")))
    cap = cv2.VideoCapture(str(scene / "scene.mp4"))
    ious, total = [], 0
    for msg in got.detections("s"):
        ref = model.predict(cap.read()[1], imgsz=640, device=0, half=True, verbose=False)[0]
        if ref.masks is None:
            continue
        ref_masks = ops.scale_masks(ref.masks.data[None].float(), (msg.height, msg.width))[0].cpu().numpy() > 0.5
        for box, mask in zip(ref.boxes.xyxy.tolist(), ref_masks, strict=True):
            total += 1
            best = max(msg.detections, key=lambda d, b=box: box_iou(d.box, b), default=None)
            if best is not None and box_iou(best.box, box) >= 0.9:
                ious.append(iou(decode(best.rle), mask))
    print(f"{len(ious)}/{total} masks matched on CUDA; mask IoU mean {np.mean(ious):.4f} min {min(ious):.4f}")
    assert total > 100 and len(ious) >= 0.98 * total
    assert np.mean(ious) >= 0.98


def test_pose_keypoints_on_cuda_match_ultralytics(endpoint: str, tmp_path: Path) -> None:
    """The fused CUDA-graph path keeps the keypoint columns: keypoints equal Ultralytics' predictor at fp16."""
    import numpy as np
    from ultralytics import YOLO

    from engines.architecture import save_architecture_weights

    weights = save_architecture_weights(tmp_path / "pose.pt", "yolo11n-pose.yaml", seed=2)
    frames = reference_frames(tmp_path, 4)
    config = config_for(
        endpoint,
        [{"id": "p", "source": str(tmp_path)}],
        {"path": str(weights), "device": "cuda"},
        tracking={"enabled": False},
    )
    got = run_and_collect(config)
    model = YOLO(str(weights))
    compared = 0
    for msg, frame in zip(got.detections("p"), frames, strict=True):
        ref = model.predict(frame, imgsz=640, device=0, half=True, verbose=False)[0]
        boxes, kpts = ref.boxes.xyxy.cpu().numpy(), ref.keypoints.data.cpu().numpy()
        for det in msg.detections:
            err = np.abs(boxes - np.array(det.box)).max(axis=1) if len(boxes) else np.array([np.inf])
            k = int(np.argmin(err))
            if err[k] > 1.5:
                continue
            assert det.keypoints is not None
            assert np.abs(np.array(det.keypoints)[:, :2] - kpts[k][:, :2]).max() < 1.5
            compared += 1
    assert compared >= 5


def test_motion_gating_on_frames_decoded_on_the_gpu_decides_as_on_the_host() -> None:
    """A CUDA frame is shrunk on the device before the check; the verdicts match the host frames'."""
    import numpy as np
    import torch

    from pipeline.config import MotionConfig
    from pipeline.motion import MotionGate

    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (360, 640, 3), dtype=np.uint8)
    moved = base.copy()
    moved[100:160, 200:280] = 255
    frames = [base, base, moved, moved, base]
    host, device = MotionGate(MotionConfig(keepalive_s=60)), MotionGate(MotionConfig(keepalive_s=60))
    for i, frame in enumerate(frames):
        gpu = torch.from_numpy(frame).cuda()
        assert host.moving(frame, 33.0 * i) == device.moving(gpu, 33.0 * i)
    assert host.gated == device.gated == 2


def test_image_operations_on_cuda_tensors_match_opencv(tmp_path: Path) -> None:
    from test_imageops import assert_like_opencv

    assert_like_opencv("cuda", tmp_path)


def test_host_frames_are_operated_on_where_the_model_runs(tmp_path: Path, endpoint: str) -> None:
    """With a CUDA engine, a host frame is uploaded once and rotated, equalized and lifted on the GPU; a sideways
    scene then scores as it does with OpenCV on the CPU (88 of 89 objects, precision 0.98)."""
    import threading

    import numpy as np
    import torch
    from test_imageops import sideways_score, textured

    from engines.base import ModelSpec
    from engines.registry import load_engine
    from pipeline.config import StreamConfig
    from pipeline.imageops import build_ops
    from pipeline.messages import Frame
    from pipeline.queues import BoundedQueue, FanIn, OverflowPolicy
    from pipeline.stages import PreprocessStage

    extra = [{"op": "clahe"}, {"op": "gamma", "value": 1.2}]
    specs = StreamConfig.model_validate({"id": "s", "source": "a.mp4", "preprocess": extra}).preprocess
    engine = load_engine(ModelSpec("edgesight-det", device="cuda"), "torch")
    stop = threading.Event()
    out: BoundedQueue[object] = BoundedQueue("prepared", 2, OverflowPolicy.BLOCK, stop)
    stage = PreprocessStage(
        FanIn([], threading.Event()),
        engine,
        out,
        1,
        stop,
        lambda *_: None,
        image_ops={"s": build_ops(specs)},
        keep_seen=True,
    )
    image = textured(360, 640)
    prepared = stage.process(Frame("s", 0, 0.0, 0.0, image))
    assert prepared.seen is not None
    tensor = prepared.seen.image  # what the operations made, before the engine's own upload
    assert tensor.is_cuda and tensor.shape == (360, 640, 3)
    host, _ = build_ops(specs).apply(image)
    torch.cuda.synchronize()
    assert np.abs(tensor.cpu().numpy().astype(np.int16) - host).mean() < 1.5
    engine.close()

    score = sideways_score(tmp_path, endpoint, {"path": "edgesight-det", "device": "cuda"}, extra)
    assert score.true_positives >= 85 and score.recall >= 0.98 and score.precision >= 0.9


def test_i420_frames_are_converted_in_the_cuda_graph_as_opencv_converts_them(arch_weights: Path, people1: Path) -> None:
    """The same boxes, bit for bit, from uploaded I420 planes as from the BGR frame OpenCV converts them to."""
    import numpy as np

    from engines.base import ModelSpec
    from engines.registry import load_engine
    from engines.yuv import i420_to_bgr

    av = pytest.importorskip("av", reason="PyAV is not installed")
    with av.open(str(people1)) as container:
        planes = [f.to_ndarray(format="yuv420p") for _, f in zip(range(8), container.decode(video=0), strict=False)]
    engine = load_engine(ModelSpec(str(arch_weights), device="cuda"), "torch")
    shapes = [(360, 640)] * len(planes)
    planar = engine.infer([engine.prepare(p, "i420") for p in planes], shapes)
    converted = engine.infer([engine.prepare(i420_to_bgr(p)) for p in planes], shapes)
    engine.close()
    assert sum(len(r) for r in planar) > 0
    for a, b in zip(planar, converted, strict=True):
        assert np.array_equal(a, b)


def test_pipeline_on_pyav_frames_on_cuda_matches_opencv_decoding(
    arch_weights: Path, people1: Path, endpoint: str
) -> None:
    pytest.importorskip("av", reason="PyAV is not installed")
    assert_decoders_agree(arch_weights, people1, endpoint, "pyav")


def test_warming_up_on_a_sources_format_leaves_its_first_batches_nothing_to_capture(
    arch_weights: Path, people1: Path
) -> None:
    """After warm-up on the sources' I420 format, real frames of that format replay graphs made for it, and give
    what an engine that captured its graphs on the real frames gives."""
    import numpy as np

    from engines.base import FrameFormat, ModelSpec
    from engines.registry import load_engine

    av = pytest.importorskip("av", reason="PyAV is not installed")
    with av.open(str(people1)) as container:
        planes = [f.to_ndarray(format="yuv420p") for _, f in zip(range(5), container.decode(video=0), strict=False)]
    spec = ModelSpec(str(arch_weights), device="cuda", max_batch=8)
    warmed = load_engine(spec, "torch")
    warmed.warmup([FrameFormat(planes[0].shape, "i420")])
    graphs = warmed.runner._graphs
    assert {key for key in graphs if key[0] == "frames"} >= {("frames", 540, 640, b) for b in (1, 2, 4, 8)}
    captured = len(graphs)
    assert not warmed._frames._free  # the blank frames' upload buffers were let go of
    cold = load_engine(spec, "torch")
    shapes = [(360, 640)] * len(planes)
    for n in (1, 2, 5):
        got = warmed.infer([warmed.prepare(p, "i420") for p in planes[:n]], shapes[:n])
        want = cold.infer([cold.prepare(p, "i420") for p in planes[:n]], shapes[:n])
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w)
    assert len(graphs) == captured  # nothing was captured for the real frames
    warmed.close()
    cold.close()


def test_a_full_graph_cache_drops_the_least_recently_replayed_graph(
    arch_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from engines import torch_backend
    from engines.base import ModelSpec
    from engines.registry import load_engine

    monkeypatch.setattr(torch_backend, "MAX_GRAPHS", 2)
    engine = load_engine(ModelSpec(str(arch_weights), device="cuda", max_batch=1), "torch")
    engine.runner._graphs.clear()  # those the warm-up left

    def run(h: int, w: int) -> None:
        engine.infer([engine.prepare(np.zeros((h, w, 3), np.uint8))], [(h, w)])

    run(360, 640)
    run(480, 640)
    run(360, 640)  # replayed: now the most recent
    run(720, 1280)  # the cache is full: the 480 graph goes, not the 360 one
    assert set(engine.runner._graphs) == {("frames", 360, 640, 3, 1), ("frames", 720, 1280, 3, 1)}
    engine.close()
