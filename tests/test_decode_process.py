"""Sources decoded in a child process: the same frames as in a thread, the same errors, and a clean stop."""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port
from helpers import config_for, run_and_collect, serve_rtsp, stop_server, wait_for_message
from test_supervision import RtspServer, rtsp_server  # noqa: F401 - the fixture

from engines.base import FrameFormat
from pipeline.config import FileSourceConfig, UrlSourceConfig, WebcamSourceConfig, build_config
from pipeline.errors import ConfigError, SourceError
from pipeline.runner import Pipeline
from pipeline.schema import DetectionsMessage, StatusMessage
from pipeline.sources import make_source
from pipeline.sources.base import RawFrame, Source
from pipeline.sources.process import ProcessSource
from pipeline.sources.ring import ring_dir as _ring_dir
from pipeline.subscriber import Subscriber

HAS_PYAV = importlib.util.find_spec("av") is not None
DECODERS = ["cpu", pytest.param("pyav", marks=pytest.mark.skipif(not HAS_PYAV, reason="PyAV is not installed"))]


def read_all(source: Source) -> list[RawFrame]:
    source.open()
    try:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        return frames
    finally:
        source.release()


def assert_ends_killed(source: Source) -> None:
    """``source``'s decoding process was killed: its reads end in one line naming that, within seconds."""
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"tiny\.mp4'?: decoding process ended \(exit code -9\)") as info:
        for _ in range(100):  # frames already in the pipe may come first
            source.read()
    assert time.monotonic() - start < 5
    assert "\n" not in str(info.value)


def ring_files() -> set[str]:
    folder = Path(_ring_dir() or tempfile.gettempdir())
    return {p.name for p in folder.glob("edgesight-ring-*")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_are_those_decoded_in_a_thread(tiny_video: Path, decoder: str) -> None:
    before = ring_files()
    in_thread = read_all(make_source(FileSourceConfig(path=tiny_video, decoder=decoder)))
    source = make_source(FileSourceConfig(path=tiny_video, decoder=decoder, decode_process=True))
    assert isinstance(source, ProcessSource)
    in_child = read_all(source)
    assert len(in_child) == len(in_thread) == 40
    for a, b in zip(in_child, in_thread, strict=True):
        assert (a.layout, a.pts_ms, a.image.shape) == (b.layout, b.pts_ms, b.image.shape)
        assert np.array_equal(a.image, b.image)
    assert source.description == f"video file '{tiny_video}'"
    assert source.total_frames == 40
    assert source.frame_format == FrameFormat(in_thread[0].image.shape, in_thread[0].layout)
    assert ring_files() == before  # the ring's file is gone


def growing_video(path: Path) -> Path:
    """A raw H.264 stream whose frames grow from 64x48 to 160x120 halfway: the later ones are larger than a slot."""
    import av

    with path.open("wb") as out:
        for (w, h), level in (((64, 48), 40), ((160, 120), 160)):
            with av.open(out, "w", format="h264") as container:
                stream = container.add_stream("libx264", rate=10)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                for i in range(5):
                    image = np.full((h, w, 3), level + 10 * i, np.uint8)
                    container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
                container.mux(stream.encode())
    return path


@pytest.mark.skipif(not HAS_PYAV, reason="PyAV is not installed")
def test_frames_larger_than_a_slot_come_through_the_pipe_in_order(tmp_path: Path) -> None:
    video = growing_video(tmp_path / "grows.h264")
    in_thread = read_all(make_source(FileSourceConfig(path=video, decoder="pyav")))
    in_child = read_all(make_source(FileSourceConfig(path=video, decoder="pyav", decode_process=True)))
    assert [f.image.shape for f in in_thread] == [(72, 64)] * 5 + [(180, 160)] * 5
    assert len(in_child) == len(in_thread)
    for a, b in zip(in_child, in_thread, strict=True):
        assert (a.layout, a.pts_ms) == (b.layout, b.pts_ms)
        assert np.array_equal(a.image, b.image)


def test_frames_stay_valid_after_the_ring_moves_on(tiny_video: Path) -> None:
    """Each frame is the parent's own copy: the child reuses its slot at once."""
    source = make_source(FileSourceConfig(path=tiny_video, decode_process=True))
    frames = read_all(source)
    again = read_all(make_source(FileSourceConfig(path=tiny_video)))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, again, strict=True))
    assert len({id(f.image) for f in frames}) == len(frames)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"^video file not found: '.*clip\.mp4'$"),
        (b"not a video at all\n" * 50, r"^cannot open video file '.*clip\.mp4': not a video"),
    ],
    ids=["missing", "not-a-video"],
)
def test_open_errors_are_the_sources_own_one_line_messages(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "clip.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as info:
        make_source(FileSourceConfig(path=path, decode_process=True)).open()
    assert "\n" not in str(info.value)


def test_a_missing_webcam_fails_in_the_child_with_its_name() -> None:
    source = make_source(WebcamSourceConfig(device="/dev/no-such-camera", decode_process=True))
    assert isinstance(source, ProcessSource)
    with pytest.raises(SourceError, match=r"^webcam device not found: '/dev/no-such-camera'$"):
        source.open()
    assert source.pid is None


def test_a_decoder_that_dies_is_a_clear_error_not_a_hang(tiny_video: Path) -> None:
    before = ring_files()
    source = make_source(FileSourceConfig(path=tiny_video, decode_process=True))
    assert isinstance(source, ProcessSource)
    source.open()
    assert source.read() is not None
    pid = source.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert_ends_killed(source)
    source.release()
    assert ring_files() == before


@pytest.mark.skipif(not HAS_PYAV, reason="the loopback RTSP server needs PyAV")
def test_a_camera_whose_decoding_process_freezes_is_an_error_after_its_read_timeout(h264_video: Path) -> None:
    server, url = serve_rtsp(h264_video, "pw")
    try:
        source = make_source(UrlSourceConfig(url=url, read_timeout_s=1.0, decode_process=True))
        assert isinstance(source, ProcessSource)
        source.open()
        try:
            assert source.read() is not None
            pid = source.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)  # alive, and silent: a decoder stuck inside the driver, say
            start = time.monotonic()
            with pytest.raises(SourceError, match="decoding process handed on nothing for 3 s") as info:
                for _ in range(1000):  # what it announced before it froze comes first
                    source.read()
            waited = time.monotonic() - start
        finally:
            source.release()
    finally:
        stop_server(server)
    assert 2.5 < waited < 15, f"raised after {waited:.1f} s: the read timeout (1 s) and two for the child's own error"
    assert "pw" not in str(info.value) and "\n" not in str(info.value)
    assert not alive(pid), "release ends a frozen child too"


def test_interrupt_and_release_stop_the_child(people1: Path) -> None:
    source = make_source(FileSourceConfig(path=people1, decode_process=True))
    assert isinstance(source, ProcessSource)
    source.open()
    assert source.read() is not None
    pid = source.pid
    assert pid is not None and alive(pid)
    source.interrupt()
    assert source.read() is None
    start = time.monotonic()
    source.release()
    assert time.monotonic() - start < 3
    assert not alive(pid)


def test_nvdec_decodes_in_a_process_only_into_the_gpu_ring(tmp_path: Path) -> None:
    stream = {
        "id": "s",
        "source": {"type": "file", "path": str(tmp_path / "a.mp4"), "decoder": "nvdec", "decode_process": True},
    }
    with pytest.raises(ConfigError, match="decode_process: true needs a CPU decoder"):
        build_config({"streams": [stream]}, "test")
    stream["source"]["decode_process"] = "gpu"  # type: ignore[index]
    (built,) = build_config({"streams": [stream]}, "test").streams
    assert (built.source.decoder, built.source.decode_process) == ("nvdec", "gpu")
    stream["source"]["decode_process"] = "gpus"  # type: ignore[index]
    with pytest.raises(ConfigError, match="decode_process"):
        build_config({"streams": [stream]}, "test")


def test_pipeline_results_match_decoding_in_a_thread(arch_weights: Path, tiny_video: Path, endpoint: str) -> None:
    boxes = {}
    for process in (True, False):
        source = {"type": "file", "path": str(tiny_video), "decode_process": process}
        got = run_and_collect(
            config_for(endpoint, [{"id": "s", "source": source}], {"path": str(arch_weights), "device": "cpu"})
        )
        assert got.error is None
        boxes[process] = [[d.box for d in m.detections] for m in got.detections("s")]
    assert len(boxes[True]) == 40
    assert boxes[True] == boxes[False]


def test_a_camera_decoded_in_a_process_reconnects_after_an_outage(rtsp_server: RtspServer) -> None:  # noqa: F811
    from test_sources import FakeEngine

    source = {"type": "url", "url": rtsp_server.url, "decode_process": True}
    stream = {"id": "cam", "source": source, "reconnect": {"base_s": 0.2, "cap_s": 1.0, "jitter": 0.1}}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = config_for(endpoint, [stream], {"path": "unused"}, publish={"wait_for_subscriber": False})
    pipeline = Pipeline(config, engine_factory=lambda _s, _n: FakeEngine())
    runner = threading.Thread(target=pipeline.run, daemon=True)
    seen: list[Any] = []
    with Subscriber(endpoint) as sub:
        runner.start()

        def wait_for(pred: Any, timeout: float) -> None:
            wait_for_message(sub, pred, timeout, seen)

        def frame(m: Any) -> bool:
            return isinstance(m, DetectionsMessage) and m.stream_id == "cam"

        wait_for(frame, 30)
        rtsp_server.kill()
        wait_for(lambda m: isinstance(m, StatusMessage) and m.event == "reconnecting", 20)
        rtsp_server.start()
        wait_for(lambda m: isinstance(m, StatusMessage) and m.event == "online", 20)
        wait_for(frame, 10)
        pipeline.stop_event.set()
        runner.join(10)
    assert not runner.is_alive()
    events = [m.event for m in seen if isinstance(m, StatusMessage) and m.stream_id == "cam"]
    assert events.count("reconnecting") >= 1


def test_a_leased_slot_is_freed_once_every_tensor_made_from_its_frame_is_gone() -> None:
    """What frees a slot of a ring on the GPU, shown on the CPU: not the frame's own tensor object dying, but the
    last tensor that reads its memory (a crop kept by a later stage, say)."""
    import gc

    import torch

    from pipeline.sources.ring import leased

    ring = torch.zeros((4, 12), dtype=torch.uint8)
    freed: list[int] = []
    frame = leased(ring[2].view(3, 4), freed.append, 2)
    frame[1, 1] = 7
    assert ring[2, 5] == 7, "the frame is the slot's memory, not a copy"
    crop = frame[1:, 1:3]
    del frame
    gc.collect()
    assert freed == [], "a crop of the frame still reads the slot"
    assert crop[0, 0] == 7
    del crop
    gc.collect()
    assert freed == [2]

    # A slot's view is kept for its next frame: each frame handed on from it is freed on its own.
    view = ring[1].view(3, 4)
    first, second = leased(view, freed.append, 1), leased(view, freed.append, 1)
    del first
    gc.collect()
    assert freed == [2, 1], "the first frame is gone while the view it was made from lives on"
    kept = second[0]
    del second
    gc.collect()
    assert freed == [2, 1] and kept.sum() == 0, "a row of the second frame still reads the slot"
    del kept
    gc.collect()
    assert freed == [2, 1, 1]


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_cuda(), reason="this host has a CUDA GPU")
def test_a_ring_on_the_gpu_without_one_is_a_one_line_error(tiny_video: Path) -> None:
    source = make_source(FileSourceConfig(path=tiny_video, decode_process="gpu"))
    assert isinstance(source, ProcessSource)
    with pytest.raises(SourceError, match=r"^video file '.*tiny\.mp4': decode_process: gpu needs a CUDA GPU") as info:
        source.open()
    assert "\n" not in str(info.value)
    assert source.pid is None  # the child is stopped


@pytest.mark.gpu
@pytest.mark.parametrize("group", [None, "gpu-ring"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_frames_in_a_ring_on_the_gpu_are_those_decoded_in_a_thread(
    tiny_video: Path, decoder: str, group: str | None
) -> None:
    """``decode_process: gpu``: views of slots on the GPU; a slot is written again only once its frame is let go,
    whatever the order frames are let go in (in a process of its own, or in a ``decode_group``'s)."""
    import torch

    in_thread = read_all(make_source(FileSourceConfig(path=tiny_video, decoder=decoder)))
    source = make_source(FileSourceConfig(path=tiny_video, decoder=decoder, decode_process="gpu", decode_group=group))
    assert isinstance(source, ProcessSource)
    source.open()
    held: dict[int, Any] = {}  # every fourth frame kept a while (up to ten at once), the rest let go at once
    try:
        for i, want in enumerate(in_thread):
            frame = source.read()
            assert frame is not None and isinstance(frame.image, torch.Tensor) and frame.image.is_cuda
            assert (frame.layout, frame.pts_ms) == (want.layout, want.pts_ms)
            assert np.array_equal(frame.image.cpu().numpy(), want.image)
            if i % 4 == 0:
                held[i] = frame.image
            if i % 20 == 19:  # the first-held half goes after a while, out of order with the rest
                for j in sorted(held)[: len(held) // 2]:
                    assert np.array_equal(held.pop(j).cpu().numpy(), in_thread[j].image), f"slot of frame {j} reused"
        assert source.read() is None
        for j, image in held.items():
            assert np.array_equal(image.cpu().numpy(), in_thread[j].image), f"slot of frame {j} reused"
    finally:
        source.release()


@pytest.mark.gpu
def test_pipeline_on_frames_decoded_into_the_gpu_matches_decoding_in_a_thread(
    arch_weights: Path, people1: Path, endpoint: str
) -> None:
    """The same frames (see above) and model: the same detections, to fp16's noise between two loads of a model."""
    from test_pipeline import match_detections

    got = {}
    for process in ("gpu", False):
        source = {"type": "file", "path": str(people1), "decoder": "pyav" if HAS_PYAV else "cpu"}
        stream = {"id": "s", "source": {**source, "decode_process": process}, "max_frames": 60}
        run = run_and_collect(config_for(endpoint, [stream], {"path": str(arch_weights), "device": "cuda"}))
        assert run.error is None
        got[process] = run.detections("s")
    assert [m.frame_index for m in got["gpu"]] == list(range(60))
    assert sum(len(m.detections) for m in got["gpu"]) > 0
    for ours, theirs in zip(got["gpu"], got[False], strict=True):
        rows = [(*d.box, d.confidence, d.class_id) for d in theirs.detections]
        match_detections(ours, np.array(rows, np.float32).reshape(-1, 6))
