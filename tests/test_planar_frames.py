"""Planar I420 frames: PyAV decoding of real files, the conversion to BGR, and I420 frames through the pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import config_for, run_and_collect
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.yuv import i420_to_bgr, i420_to_bgr_torch
from pipeline.errors import SourceError
from pipeline.messages import Frame
from pipeline.sources.base import RawFrame
from pipeline.sources.video import VideoFileSource

av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")

from pipeline.sources.pyav import PyAvFileSource  # noqa: E402


def read_all(source: PyAvFileSource | VideoFileSource) -> list[RawFrame]:
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.release()
    return frames


def bgr_of(frame: RawFrame) -> np.ndarray:
    return i420_to_bgr(frame.image) if frame.layout == "i420" else frame.image


@settings(max_examples=25, deadline=None)
@given(
    half_h=st.integers(1, 40),
    half_w=st.integers(1, 40),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tensor_conversion_equals_opencv_to_the_level(half_h: int, half_w: int, batch: int, seed: int) -> None:
    """Every size with even sides, including heights whose chroma planes start mid-row (height % 4 == 2)."""
    rng = np.random.default_rng(seed)
    planes = rng.integers(0, 256, (batch, half_h * 3, half_w * 2), dtype=np.uint8)
    got = i420_to_bgr_torch(torch.from_numpy(planes)).numpy()
    for i in range(batch):
        assert np.array_equal(got[i], i420_to_bgr(planes[i]))


def test_an_i420_frame_knows_its_size_and_converts_for_the_host() -> None:
    planes = np.random.default_rng(1).integers(0, 256, (540, 640), dtype=np.uint8)
    frame = Frame("cam", 0, 0.0, 0.0, planes, "i420")
    assert (frame.height, frame.width) == (360, 640)
    assert np.array_equal(frame.host_image(), cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420))
    with pytest.raises(ValueError, match=r"frame 3 of 'cam'.*even width and height"):
        Frame("cam", 3, 0.0, 0.0, np.zeros((541, 640), np.uint8), "i420")
    with pytest.raises(ValueError, match=r"2-D"):
        Frame("cam", 3, 0.0, 0.0, np.zeros((540, 640, 3), np.uint8), "i420")


def test_pyav_decodes_every_frame_as_opencv_does(people1: Path) -> None:
    planar = read_all(PyAvFileSource(people1))
    bgr = read_all(VideoFileSource(people1))
    assert len(planar) == len(bgr) == 686
    assert all(f.layout == "i420" and f.image.shape == (540, 640) for f in planar)
    assert [round(f.pts_ms) for f in planar] == [round(f.pts_ms) for f in bgr]
    for i in range(0, 686, 97):
        diff = np.abs(bgr_of(planar[i]).astype(np.int16) - bgr[i].image.astype(np.int16))
        # OpenCV's decoder interpolates chroma (bicubic); the I420 conversion repeats it over each 2 x 2 block
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 12, (i, diff.mean())


def test_pyav_tiny_file_timestamps(tiny_video: Path) -> None:
    frames = read_all(PyAvFileSource(tiny_video))
    assert len(frames) == 40 and frames[0].image.shape == (180, 160)
    assert frames[10].pts_ms == pytest.approx(500.0, abs=1.0)


def _encode(path: Path, codec: str, pix_fmt: str, size: tuple[int, int], frames: int = 8) -> list[np.ndarray]:
    """Write a small video with PyAV; returns the BGR frames written."""
    rng = np.random.default_rng(2)
    written = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        for _ in range(frames):
            image = np.full((size[1], size[0], 3), 90, np.uint8)
            image[10:40, 20:60] = rng.integers(0, 256, 3)
            written.append(image)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return written


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "size"),
    [("mjpeg", "yuvj420p", (96, 64)), ("libx264", "yuv444p", (96, 64)), ("ffv1", "yuv420p", (95, 63))],
    ids=["full-range", "4:4:4", "odd-size"],
)
def test_other_pixel_formats_come_as_bgr(tmp_path: Path, codec: str, pix_fmt: str, size: tuple[int, int]) -> None:
    """Only limited-range 4:2:0 with even sides stays planar; FFmpeg converts everything else to BGR correctly."""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / "odd.mkv"
    try:
        written = _encode(path, codec, pix_fmt, size)
    except (av.FFmpegError, ValueError) as exc:
        pytest.skip(f"this PyAV build cannot write {pix_fmt} with {codec}: {exc}")
    frames = read_all(PyAvFileSource(path))
    assert len(frames) == len(written)
    assert all(f.layout == "bgr" and f.image.shape == (size[1], size[0], 3) for f in frames)
    assert np.abs(frames[-1].image.astype(np.int16) - written[-1]).mean() < 6  # lossy, but the colours are right


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"video file not found: '.*clip\.mp4'"),
        (b"", r"video file is empty \(0 bytes\): '.*clip\.mp4'"),
        (b"not a video at all\n" * 50, r"cannot open video file '.*clip\.mp4': not a video"),
    ],
    ids=["missing", "empty", "not-a-video"],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as info:
        read_all(PyAvFileSource(path))
    assert "\n" not in str(info.value)


def test_a_truncated_file_is_a_clear_error(people1: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(people1.read_bytes()[:1_000_000])
    with pytest.raises(SourceError, match=r"cut\.mp4"):
        read_all(PyAvFileSource(cut))


def test_an_interrupted_source_stops_reading(people1: Path) -> None:
    source = PyAvFileSource(people1)
    source.open()
    assert source.read() is not None
    source.interrupt()
    assert source.read() is None
    source.release()


def test_detector_letterboxes_i420_as_the_converted_frame(arch_weights: Path, people1: Path) -> None:
    from engines.base import ModelSpec
    from engines.registry import load_engine

    engine = load_engine(ModelSpec(str(arch_weights), device="cpu"), "torch")
    source = PyAvFileSource(people1)
    source.open()
    frame = source.read()
    source.release()
    assert frame is not None and frame.layout == "i420"
    assert np.array_equal(engine.prepare(frame.image, "i420"), engine.prepare(i420_to_bgr(frame.image)))
    engine.close()


def test_pipeline_on_pyav_frames_matches_opencv_decoding(arch_weights: Path, people1: Path, endpoint: str) -> None:
    results = {}
    for decoder in ("pyav", "cpu"):
        stream = {"id": "s", "source": {"type": "file", "path": str(people1), "decoder": decoder}, "max_frames": 40}
        got = run_and_collect(config_for(endpoint, [stream], {"path": str(arch_weights), "device": "cpu"}))
        results[decoder] = got.detections("s")
    assert [m.seq for m in results["pyav"]] == list(range(40))
    assert all((m.width, m.height) == (640, 360) for m in results["pyav"])
    counts = [(len(a.detections), len(b.detections)) for a, b in zip(results["pyav"], results["cpu"], strict=True)]
    close = sum(abs(a - b) <= max(2, b // 5) for a, b in counts)
    assert close >= 36, counts
