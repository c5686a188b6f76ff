"""Sources of one ``decode_group``: decoded in one shared process, each as it would be alone, failing alone, and
coming back together after the process dies."""

from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import serve_rtsp, stop_server
from test_decode_process import alive, assert_ends_killed, read_all, ring_files

from engines.base import FrameFormat
from pipeline.config import FileSourceConfig, UrlSourceConfig, build_config
from pipeline.errors import ConfigError, SourceError
from pipeline.sources import make_source
from pipeline.sources.base import DecoderSource, RawFrame, Source
from pipeline.sources.hosted import HostedSource, decode_host
from pipeline.sources.ring import decode_message, frame_record, freed_record
from pipeline.sources.video import VideoFileSource

HAS_PYAV = importlib.util.find_spec("av") is not None


def hosted(config: Any) -> HostedSource:
    source = make_source(config)
    assert isinstance(source, HostedSource)
    return source


def wait_gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def test_a_group_decodes_its_sources_in_one_process_each_as_in_a_thread(tiny_video: Path, people1: Path) -> None:
    before = ring_files()
    want = {"tiny": read_all(make_source(FileSourceConfig(path=tiny_video)))}
    want["people"] = read_all(make_source(FileSourceConfig(path=people1)))[:60]
    sources = {
        "tiny": hosted(FileSourceConfig(path=tiny_video, decode_process=True, decode_group="same-frames")),
        "people": hosted(FileSourceConfig(path=people1, decode_process=True, decode_group="same-frames")),
    }
    got: dict[str, list[RawFrame]] = {name: [] for name in sources}
    for source in sources.values():
        source.open()
    pid = sources["tiny"].pid
    assert pid is not None and sources["people"].pid == pid, "one process for the group"
    try:
        for _ in range(60):  # read in turn: both threads decode at once
            for name, source in sources.items():
                if len(got[name]) < len(want[name]) and (frame := source.read()) is not None:
                    got[name].append(frame)
        assert sources["tiny"].read() is None, "the file's end comes through"
    finally:
        sources["tiny"].release()
        assert alive(pid), "the host serves the group while a source of it is open"
        sources["people"].release()
    for name, frames in got.items():
        assert [f.pts_ms for f in frames] == [f.pts_ms for f in want[name]], name
        assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, want[name], strict=True)), name
    assert wait_gone(pid), "the host stops after its last source"
    assert ring_files() == before


def test_one_source_s_error_is_its_own_and_the_rest_of_its_group_decode_on(tiny_video: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    good = hosted(FileSourceConfig(path=tiny_video, decode_process=True, decode_group="one-fails"))
    bad = hosted(FileSourceConfig(path=broken, decode_process=True, decode_group="one-fails"))
    good.open()
    try:
        assert good.read() is not None
        with pytest.raises(SourceError, match=r"^cannot open video file '.*broken\.mp4': not a video") as info:
            bad.open()
        assert "\n" not in str(info.value)
        bad.release()
        frames = 1
        while good.read() is not None:
            frames += 1
        assert frames == 40
    finally:
        good.release()


def test_a_group_whose_process_dies_fails_each_source_in_one_line_and_a_new_process_serves_them(
    tiny_video: Path,
) -> None:
    sources = [hosted(FileSourceConfig(path=tiny_video, decode_process=True, decode_group="dies")) for _ in range(2)]
    for source in sources:
        source.open()
        assert source.read() is not None
    pid = sources[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for source in sources:
        assert_ends_killed(source)
    sources[0].release()
    sources[0].open()  # reconnecting, before the other source has let go of the dead process
    try:
        assert sources[0].pid not in (None, pid)
        assert len(read_all_open(sources[0])) == 40
    finally:
        sources[0].release()
        sources[1].release()


def read_all_open(source: HostedSource) -> list[RawFrame]:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


@pytest.mark.skipif(not HAS_PYAV, reason="the loopback RTSP server needs PyAV")
def test_cameras_of_a_group_stream_and_a_camera_that_goes_away_is_one_line_without_its_password(
    h264_video: Path,
) -> None:
    server, url = serve_rtsp(h264_video, "s3cret")
    cameras = [
        hosted(UrlSourceConfig(url=f"{url[:-1]}{i}", read_timeout_s=1.0, decode_process=True, decode_group="cams"))
        for i in range(2)
    ]
    try:
        for camera in cameras:
            camera.open()
        assert "s3cret" not in cameras[0].description
        for _ in range(30):  # 1.5 s of each camera's 20 fps
            for camera in cameras:
                frame = camera.read()
                assert frame is not None and (frame.layout, frame.image.shape) == ("i420", (180, 160))
        stop_server(server)
        for camera in cameras:
            start = time.monotonic()
            with pytest.raises(SourceError) as info:
                for _ in range(1000):  # frames already decoded come first
                    camera.read()
            assert time.monotonic() - start < 8
            assert "s3cret" not in str(info.value) and "\n" not in str(info.value)
            assert "stream 'rtsp://***@127.0.0.1" in str(info.value) and "(PyAV): stream stopped" in str(info.value)
    finally:
        stop_server(server)
        for camera in cameras:
            camera.release()


def test_a_decode_group_needs_a_decoding_process(tmp_path: Path) -> None:
    stream = {"id": "s", "source": {"type": "file", "path": str(tmp_path / "a.mp4"), "decode_group": "g"}}
    with pytest.raises(ConfigError, match="decode_group needs decode_process"):
        build_config({"streams": [stream]}, "test")
    stream["source"]["decode_process"] = "gpu"  # type: ignore[index]
    (built,) = build_config({"streams": [stream]}, "test").streams
    assert built.source.decode_group == "g"  # type: ignore[union-attr]


def test_frames_and_freed_slots_cross_a_session_s_pipe_packed_and_other_messages_pickled() -> None:
    """Every frame's two messages travel as packed bytes; the rest (errors, frames too large for a slot) as pickles,
    told apart on the same pipe."""
    import multiprocessing as mp

    parent, child = mp.Pipe()
    try:
        entry = (3.0, 1080.0, 1920.0, 3.0, 41.708333, 1.0)
        inline = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
        child.send_bytes(frame_record(entry))
        child.send(("inline", inline, 83.4, "bgr"))
        parent.send_bytes(freed_record([0, 15, 7]))
        parent.send(("stop",))
        assert decode_message(parent.recv_bytes()) == ("frame", *entry, 0.0)
        kind, image, pts_ms, layout = decode_message(parent.recv_bytes())
        assert (kind, pts_ms, layout) == ("inline", 83.4, "bgr") and np.array_equal(image, inline)
        assert decode_message(child.recv_bytes()) == ("free", 0, 15, 7)
        assert decode_message(child.recv_bytes()) == ("stop",)
    finally:
        parent.close()
        child.close()


class _SlowFirstFrame(DecoderSource):
    """A file that, like a camera on NVDEC, knows its frames' format on connecting (from the stream's description)
    and hands on its first frame only later: once a file beside it (``.go``) exists."""

    live = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.description = f"slow '{path.name}'"
        self._inner = VideoFileSource(path)
        self._go = path.with_suffix(".go")

    def open(self) -> None:
        self._inner.open()
        assert self._inner.frame_format is not None
        self._format_known(self._inner.frame_format)
        deadline = time.monotonic() + 20
        while not self._go.exists() and time.monotonic() < deadline and not self._interrupted.is_set():
            time.sleep(0.02)

    def _decode(self) -> RawFrame | None:
        return self._inner.read()

    def _is_open(self) -> bool:
        return True

    def release(self) -> None:
        self._inner.release()


def slow_first_frame(config: FileSourceConfig) -> Source:
    """The group's maker for :class:`_SlowFirstFrame` (module-level: the host imports it by name)."""
    return _SlowFirstFrame(config.path)


def test_a_group_camera_s_format_reaches_the_pipeline_before_its_first_frame(tiny_video: Path) -> None:
    """Start-up warms the model up on the cameras' formats: a group camera's must not wait for its first frame."""
    config = FileSourceConfig(path=tiny_video, decode_process=True, decode_group="slow-first")
    source = HostedSource(config, slow_first_frame, decode_host("slow-first"))
    opening = threading.Thread(target=source.open, daemon=True)
    opening.start()
    try:
        deadline = time.monotonic() + 15
        while source.frame_format is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.frame_format == FrameFormat((120, 160, 3)), "told while the camera connects"
        assert opening.is_alive(), "before its first frame"
        tiny_video.with_suffix(".go").touch()
        opening.join(15)
        assert not opening.is_alive()
        frames = read_all_open(source)
    finally:
        source.release()
    assert frames[0].image.shape == (120, 160, 3)
    assert len(frames) + sum(f.skipped for f in frames) == 40, "a camera keeps its latest: every other is counted"
    assert [f.pts_ms for f in frames] == sorted(f.pts_ms for f in frames)


def test_a_pipe_reader_takes_each_message_whole_and_in_order_then_the_end() -> None:
    """What a session's capture thread reads its pipe with: messages already there without waiting, one larger than
    a read (a frame too large for a slot) whole, and the other end's close once everything is taken."""
    import multiprocessing as mp

    from pipeline.sources.pipe_reader import CHUNK, PipeReader

    parent, child = mp.Pipe()
    big = np.random.default_rng(1).integers(0, 255, (3 * CHUNK,), np.uint8)
    records = [frame_record((float(i), 1080.0, 1920.0, 3.0, 41.7 * i, 1.0)) for i in range(3)]

    def send() -> None:  # from a thread: the large message fills the pipe until it is read
        child.send_bytes(records[0])
        child.send(("inline", big, 83.4, "bgr"))
        for record in records[1:]:
            child.send_bytes(record)
        child.close()

    sender = threading.Thread(target=send, daemon=True)
    reader = PipeReader(parent.fileno())
    try:
        assert reader.take() is None and not reader.wait(0.05), "nothing sent yet"
        sender.start()
        got = []
        deadline = time.monotonic() + 10
        with pytest.raises(EOFError):
            while time.monotonic() < deadline:
                data = reader.take()
                if data is None:
                    assert reader.wait(1.0)
                else:
                    got.append(decode_message(data))
        assert [m[0] for m in got] == ["frame", "inline", "frame", "frame"]
        assert [m[1] for m in got if m[0] == "frame"] == [0.0, 1.0, 2.0]
        assert np.array_equal(got[1][1], big)
    finally:
        if sender.ident is not None:  # started
            sender.join(5)
        reader.close()
        parent.close()
