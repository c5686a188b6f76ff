"""RTSP/HTTP streams decoded on NVDEC (PyAV demuxes, PyNvVideoCodec decodes), and the choice between that and the
CPU (``decoder: auto|cpu|nvdec`` on a URL source), against a real RTSP server on loopback."""

from __future__ import annotations

import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import serve_rtsp, stop_server
from pydantic import ValidationError

from pipeline.config import UrlSourceConfig
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources import _in_child, make_source
from pipeline.sources.cuda_driver import primary_context
from pipeline.sources.nvdec import FallbackSource
from pipeline.sources.nvdec_stream import NvdecStreamSource, nvdec_stream_available
from pipeline.sources.process import ProcessSource
from pipeline.sources.pyav_stream import PyAvStreamSource
from pipeline.sources.video import StreamUrlSource

PASSWORD = "s3cr3t-pw"


@pytest.fixture
def served(h264_video: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    server, url = serve_rtsp(h264_video, PASSWORD)
    try:
        yield server, url
    finally:
        stop_server(server)


@pytest.fixture
def ippp_video(tmp_path: Path) -> Path:
    """Like ``h264_video`` with no B-frames, as IP cameras stream (decoded with no display delay)."""
    import av

    path = tmp_path / "ippp.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt, stream.options = 160, 120, "yuv420p", {"g": "20", "bf": "0"}
        for i in range(40):
            frame = np.full((120, 160, 3), 40, np.uint8)
            frame[20:60, (i * 3) % 120 : (i * 3) % 120 + 30] = 200
            frame[70:110, 10:50] = (30, 90, 220)  # a colour: RGB/BGR swapped would not match
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        out.mux(stream.encode())
    return path


def test_url_decoder_is_pyav_unless_asked_and_nvdec_decodes_in_a_process_into_the_gpu_ring() -> None:
    url = "rtsp://cam:pw@10.0.0.5/live"
    assert UrlSourceConfig(url=url).decoder == "pyav"
    decoders = ("auto", "cpu", "pyav", "nvdec")
    assert {UrlSourceConfig(url=url, decoder=d).decoder for d in decoders} == set(decoders)
    with pytest.raises(ValidationError, match="decoder"):
        UrlSourceConfig(url=url, decoder="opencv")
    with pytest.raises(ValidationError, match="decode_process: true needs a CPU decoder"):
        UrlSourceConfig(url=url, decoder="nvdec", decode_process=True)
    child = _in_child(UrlSourceConfig(url=url, decoder="auto", decode_process="gpu"))
    assert isinstance(child, UrlSourceConfig) and (child.decoder, child.decode_process) == ("pyav", False)
    child = _in_child(UrlSourceConfig(url=url, decoder="cpu", decode_process=True))
    assert isinstance(child, UrlSourceConfig) and (child.decoder, child.decode_process) == ("cpu", False)
    child = _in_child(UrlSourceConfig(url=url, decoder="nvdec", decode_process="gpu"))
    assert isinstance(child, UrlSourceConfig) and (child.decoder, child.decode_process) == ("nvdec", False)
    assert isinstance(make_source(UrlSourceConfig(url=url, decoder="nvdec", decode_process="gpu")), ProcessSource)


def test_cpu_and_auto_without_nvdec_build_a_cpu_source() -> None:
    url = "rtsp://127.0.0.1:9/x"
    assert isinstance(make_source(UrlSourceConfig(url=url)), PyAvStreamSource)
    assert isinstance(make_source(UrlSourceConfig(url=url, decoder="cpu")), StreamUrlSource)
    auto = make_source(UrlSourceConfig(url=url, decoder="auto"))
    assert isinstance(auto, FallbackSource if nvdec_stream_available() else PyAvStreamSource)
    assert isinstance(make_source(UrlSourceConfig(url=url, decoder="nvdec")), NvdecStreamSource)


@pytest.mark.skipif(nvdec_stream_available(), reason="NVDEC runs here: nothing to fall back from")
def test_auto_falls_back_to_cpu_decoding_with_one_line(
    served: tuple[subprocess.Popen[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    _, url = served
    source = FallbackSource(NvdecStreamSource(url, 10.0, 10.0), StreamUrlSource(url, 10.0, 10.0))
    with caplog.at_level(logging.WARNING):
        source.open()
    try:
        frames = [source.read() for _ in range(10)]
    finally:
        source.release()
    assert all(f is not None and isinstance(f.image, np.ndarray) and f.image.shape == (120, 160, 3) for f in frames)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "decoding on the CPU instead" in warnings[0], warnings
    assert "\n" not in warnings[0] and PASSWORD not in warnings[0]
    assert PASSWORD not in source.description


@pytest.mark.skipif(nvdec_stream_available(), reason="PyNvVideoCodec and a GPU are here")
def test_nvdec_without_pynvvideocodec_is_one_clear_line() -> None:
    source = make_source(UrlSourceConfig(url=f"rtsp://cam:{PASSWORD}@127.0.0.1:9/x", decoder="nvdec"))
    with pytest.raises(PermanentSourceError) as raised:
        source.open()
    source.release()
    message = str(raised.value)
    assert "\n" not in message and PASSWORD not in message
    assert "NVDEC" in message and ("PyNvVideoCodec" in message or "PyAV" in message or "CUDA" in message), message


def _cpu_frames(video: Path) -> np.ndarray:
    """Every frame of ``video``, decoded on the CPU (BGR)."""
    import av

    with av.open(str(video)) as container:
        return np.stack([f.to_ndarray(format="bgr24") for f in container.decode(video=0)])


@pytest.mark.gpu
@pytest.mark.parametrize("fixture", ["h264_video", "ippp_video"])
def test_nvdec_frames_match_a_cpu_decode(fixture: str, request: pytest.FixtureRequest) -> None:
    video: Path = request.getfixturevalue(fixture)
    server, url = serve_rtsp(video, PASSWORD)
    try:
        source = NvdecStreamSource(url, 10.0, 5.0)
        source.open()
        try:
            frames = [source.read() for _ in range(50)]  # past the file's 40: it loops
        finally:
            source.release()
    finally:
        stop_server(server)
    reference = _cpu_frames(video).astype(np.int16)
    assert all(f is not None for f in frames)
    images: list[Any] = [f.image for f in frames if f is not None]  # CUDA tensors
    assert all(i.is_cuda and tuple(i.shape) == (120, 160, 3) and str(i.dtype) == "torch.uint8" for i in images)
    errors = []
    for image in images:
        pixels = image.cpu().numpy().astype(np.int16)
        errors.append(float(np.abs(reference - pixels).mean(axis=(1, 2, 3)).min()))
    assert max(errors) < 4.0, f"mean abs difference to the closest CPU-decoded frame: {errors}"
    assert len({int(i[40, :, 0].argmax()) for i in images[:10]}) > 5, "the square moves: real pictures, not a still"


class _Announced(NvdecStreamSource):
    """Keeps the format the stream announced before its first frame decoded."""

    announced: Any = None

    def _prime(self) -> None:
        self.announced = self.frame_format
        super()._prime()


@pytest.mark.gpu
def test_an_nvdec_camera_announces_the_format_it_decodes(tmp_path: Path) -> None:
    """Start-up warms up on the format a camera's stream describes, before a frame decodes: it must be the one
    NVDEC hands on, also where the picture's height is not a multiple of 16 (1080p is coded as 1088 rows)."""
    import av

    path = tmp_path / "cropped.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt, stream.options = 160, 90, "yuv420p", {"g": "20", "bf": "0"}
        for i in range(20):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((90, 160, 3), 10 * i, np.uint8), format="bgr24")))
        out.mux(stream.encode())
    server, url = serve_rtsp(path, PASSWORD)
    try:
        source = _Announced(url, 10.0, 5.0)
        source.open()
        try:
            frame = source.read()
        finally:
            source.release()
    finally:
        stop_server(server)
    assert frame is not None and tuple(frame.image.shape) == (90, 160, 3)
    assert source.announced is not None and source.announced.shape == (90, 160, 3)
    assert source.announced == source.frame_format


@pytest.mark.gpu
@pytest.mark.parametrize("group", [None, "nvdec-cameras"])
def test_nvdec_in_a_decoding_process_hands_over_gpu_frames_that_match_a_cpu_decode(
    ippp_video: Path, group: str | None
) -> None:
    """A process of its own, or (``decode_group``) one shared by two cameras."""
    server, url = serve_rtsp(ippp_video, PASSWORD)
    paths = ["cam0"] if group is None else ["cam0", "cam1"]
    base = url.removesuffix("cam0")
    settings: dict[str, Any] = {"decoder": "nvdec", "decode_process": "gpu", "decode_group": group}
    cameras = [make_source(UrlSourceConfig(url=base + path, **settings)) for path in paths]
    try:
        for camera in cameras:
            assert isinstance(camera, ProcessSource)
            camera.open()
        try:
            children = {camera.pid for camera in cameras}  # type: ignore[attr-defined]
            images, kinds = [], set()
            for _ in range(30):  # each frame let go of once copied: the ring has 16 slots
                for camera in cameras:
                    frame = camera.read()
                    assert frame is not None
                    image: Any = frame.image  # a CUDA tensor
                    kinds.add((image.is_cuda, tuple(image.shape), str(image.dtype)))
                    images.append(image.cpu().numpy())
                    del frame, image
        finally:
            for camera in cameras:
                camera.release()
    finally:
        stop_server(server)
    (child,) = children
    assert child is not None and child != os.getpid() and "(NVDEC)" in cameras[0].description
    assert PASSWORD not in cameras[0].description
    assert kinds == {(True, (120, 160, 3), "torch.uint8")}
    reference = _cpu_frames(ippp_video).astype(np.int16)
    errors = [float(np.abs(reference - i.astype(np.int16)).mean(axis=(1, 2, 3)).min()) for i in images]
    assert max(errors) < 4.0, f"mean abs difference to the closest CPU-decoded frame: {errors}"


_FRAME_OUTLIVES_ITS_DECODER = """
import sys, threading
from pipeline.sources.nvdec_stream import NvdecStreamSource

kept = []

class Keeping(NvdecStreamSource):
    def _create_decoder(self, *args):
        decoder = super()._create_decoder(*args)

        class Held:
            def Decode(self, packet):
                frames = decoder.Decode(packet)
                kept.extend(frames)
                return frames

        return Held()

def camera():  # a capture thread: no CUDA context of its own before it opens
    source = Keeping(sys.argv[1], 10.0, 5.0)
    source.open()
    assert source.read() is not None
    source.release()

thread = threading.Thread(target=camera)
thread.start()
thread.join()
count = len(kept)
kept.clear()  # the decoder is gone; the frames it handed out go now
print(f"freed {count} frames")
"""


@pytest.mark.gpu
def test_a_decoder_works_in_torch_s_context_so_its_frames_may_outlive_it(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    """Given no context, a decoder opened on a thread without one makes its own and destroys it with itself; a frame
    it handed out that is freed later then ends the whole process (PyNvVideoCodec: CONTEXT_IS_DESTROYED, exit 1).
    In the primary context nothing is destroyed."""
    _, url = served
    done = subprocess.run(
        [sys.executable, "-c", _FRAME_OUTLIVES_ITS_DECODER, url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0 and "freed" in done.stdout, (done.stdout + done.stderr)[-2000:]
    assert int(done.stdout.split("freed ")[1].split()[0]) > 0


def test_without_the_cuda_driver_the_context_is_one_clear_source_error() -> None:
    if ctypes.util.find_library("cuda") is not None:
        pytest.skip("the CUDA driver is installed here")
    with pytest.raises(SourceError, match="libcuda") as raised:
        primary_context(0)
    assert "\n" not in str(raised.value)


@pytest.mark.gpu
def test_nvdec_wrong_password_is_permanent(served: tuple[subprocess.Popen[str], str]) -> None:
    _, url = served
    source = NvdecStreamSource(url.replace(PASSWORD, "not-the-pw"), 5.0, 5.0)
    with pytest.raises(PermanentSourceError, match="401") as raised:
        source.open()
    source.release()
    assert "not-the-pw" not in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.gpu
@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_a_server_gone_mid_stream_is_a_source_error_within_the_read_timeout(
    how: str, served: tuple[subprocess.Popen[str], str]
) -> None:
    server, url = served
    source = NvdecStreamSource(url, 10.0, 2.0)
    source.open()
    try:
        assert source.read() is not None
        if how == "killed":
            server.kill()
        else:
            os.kill(server.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(SourceError) as raised:
            for _ in range(1000):  # what the client had buffered, then the failure
                source.read()
        elapsed = time.monotonic() - started
    finally:
        if how == "frozen":
            os.kill(server.pid, signal.SIGCONT)
        source.release()
    assert elapsed < 2.0 * 3 + 5, f"{elapsed:.1f} s to notice, with a 2 s read timeout"
    assert PASSWORD not in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.gpu
def test_nvdec_camera_with_b_frames_hands_frames_on_at_its_rate_not_in_bursts(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    """The decoder gives back a B-frame stream's frames two at a time; read at once, they would meet a live
    camera's queue of one together and one of them would be dropped. Its pairs leave about one interval apart.
    (Frames that come one at a time are never held: the ones the client buffered while it opened come at once.)"""
    _, url = served  # h264_video: 20 fps with B-frames, paced by the server
    source = NvdecStreamSource(url, 10.0, 10.0)
    source.open()
    try:
        for _ in range(200):  # what the client buffered while the decoder was made comes at once: skipped
            held, started = source.spacer.held, time.monotonic()
            assert source.read() is not None
            if time.monotonic() - started > 0.5 * 0.050 and source.spacer.held == held:
                break  # waited for the camera, not for a burst's spacing: caught up
        else:
            raise AssertionError("the client never caught up with the camera")
        held_before = source.spacer.held
        stamps = []
        for _ in range(60):
            assert source.read() is not None
            stamps.append(time.monotonic())
    finally:
        source.release()
    held = source.spacer.held - held_before
    close = int((np.diff(stamps) < 0.5 * 0.050).sum())
    assert held >= 5, f"{held} bursts in 3 s: the B-frame path was not tested"
    assert close <= max(2, held // 4), f"{close} frames handed on within 25 ms of the previous, {held} bursts held"
