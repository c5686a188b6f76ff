"""``decoder: pyav`` on RTSP cameras: PyAV demuxes and decodes, and keeps the camera's packets, from which event
clips are cut without encoding again. Against a real RTSP server on loopback with a password."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from helpers import config_for, run_and_collect, serve_rtsp, stop_server

from engines.base import DetectionEngine, ModelSpec
from engines.registry import load_engine
from pipeline import runner
from pipeline.builder import EngineFactory
from pipeline.config import EventStoreConfig
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.media.packets import PacketRing
from pipeline.media.store import EventStore
from pipeline.runner import Pipeline
from pipeline.schema import EventMessage
from pipeline.sources.pyav_stream import PyAvStreamSource, open_url
from pipeline.synth.writer import write_scene

PASSWORD = "rtsp-pa55word"
SLOW_LOAD_S = 3.0
"""Longer than a loopback camera takes to connect, even on a busy 2-core box."""
GATE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}


@pytest.fixture
def served(h264_video: Path) -> Iterator[str]:
    server, url = serve_rtsp(h264_video, PASSWORD)
    yield url
    stop_server(server)


def test_frames_decode_and_the_camera_s_packets_are_kept(served: str) -> None:
    ring = PacketRing(keep_s=1.0)
    source = PyAvStreamSource(served, 10.0, 10.0, packets=ring)
    source.open()
    try:
        frames = [source.read() for _ in range(60)]  # past the file's 40 frames: the server loops
    finally:
        source.release()
    assert all(f is not None for f in frames)
    assert frames[0] is not None and frames[0].image.shape in ((180, 160), (120, 160, 3))  # I420 planes, or BGR
    assert ring.codec is not None and (ring.codec.name, ring.codec.width, ring.codec.height) == ("h264", 160, 120)
    _, kept = ring.since(0)
    assert kept and kept[0].key, "the ring starts at a keyframe"
    times = [p.dts for p in kept]  # decoding order (this file has B-frames)
    assert times == sorted(times) and times[-1] - times[0] <= 1000 + 1000 + 50, "about keep_s and one GOP"
    assert PASSWORD not in source.description


@pytest.mark.parametrize("sets_in_band", [True, False], ids=["sets-in-keyframes", "sets-in-sdp-only"])
def test_kept_packets_decode_alone_from_their_first_keyframe(h264_video: Path, sets_in_band: bool) -> None:
    """Clips are muxed from kept packets with no global header, so each keyframe must carry SPS/PPS: also from a
    camera that sends them only in its SDP."""
    server, url = serve_rtsp(h264_video, PASSWORD, sets_in_band=sets_in_band)
    ring = PacketRing(keep_s=1.0)
    source = PyAvStreamSource(url, 10.0, 10.0, packets=ring)
    try:
        source.open()
        assert all(source.read() is not None for _ in range(60))  # past the file's 40 frames: the server loops
    finally:
        source.release()
        stop_server(server)
    _, kept = ring.since(0)
    assert kept and kept[0].key, "the ring starts at a keyframe"
    codec = av.CodecContext.create("h264", "r")  # no extradata: only what the packets carry
    decoded = [f for p in kept for f in codec.decode(av.Packet(p.data))] + list(codec.decode(None))
    assert len(decoded) == len(kept), f"{len(decoded)} of {len(kept)} kept packets decode"


def test_a_wrong_password_is_one_clear_line(served: str) -> None:
    source = PyAvStreamSource(served.replace(PASSWORD, "n0t-it-99"), 5.0, 5.0)
    with pytest.raises(PermanentSourceError, match="401") as raised:
        source.open()
    source.release()
    assert "\n" not in str(raised.value) and "n0t-it-99" not in str(raised.value)


def test_a_frozen_camera_is_a_source_error_within_the_read_timeout(h264_video: Path) -> None:
    """FFmpeg's socket timeout ends a read from a camera that stopped sending (no timeout of PyAV's is set)."""
    server, url = serve_rtsp(h264_video, PASSWORD)
    source = PyAvStreamSource(url, 10.0, 2.0)
    try:
        source.open()
        assert source.read() is not None
        os.kill(server.pid, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(SourceError, match="stopped delivering frames") as raised:
            for _ in range(1000):  # what the client had buffered, then the failure
                source.read()
        elapsed = time.monotonic() - started
    finally:
        os.kill(server.pid, signal.SIGCONT)
        source.release()
        stop_server(server)
    assert elapsed < 2.0 * 3 + 5, f"{elapsed:.1f} s to notice, with a 2 s read timeout"
    assert PASSWORD not in str(raised.value) and "\n" not in str(raised.value)


def test_cameras_keep_their_rate_while_python_threads_hold_the_interpreter_lock(media: Path) -> None:
    """Reading a camera takes the interpreter lock once a packet, not on every socket read: busy stage threads
    (two here, pure Python) leave eight 1080p cameras their full rate. With PyAV's read timeout, whose check takes
    the lock on every socket read, the same box read them at 0.3 of their rate."""
    video = media / "videos" / "people1_1080p.mp4"
    with av.open(str(video)) as container:
        fps = float(container.streams.video[0].average_rate or 0)
    server, url = serve_rtsp(video, PASSWORD)
    urls = [url.replace("/cam0", f"/cam{i}") for i in range(8)]
    counts = [0] * len(urls)
    stop = threading.Event()

    def read(i: int) -> None:
        container = open_url(av, urls[i], f"cam{i}", 10.0, 10.0)
        try:
            for packet in container.demux(container.streams.video[0]):
                if stop.is_set():
                    return
                counts[i] += packet.size > 0
        finally:
            container.close()

    def hold_the_lock() -> None:  # Python bytecode: it gives the lock up when asked, after the switch interval
        while not stop.is_set():
            total = 0
            for k in range(20_000):
                total += k

    readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(len(urls))]
    busy = [threading.Thread(target=hold_the_lock, daemon=True) for _ in range(2)]
    try:
        for thread in readers:
            thread.start()
        time.sleep(3.0)  # connected, and past what each client buffered while it opened
        for thread in busy:
            thread.start()
        time.sleep(1.0)
        before, started = list(counts), time.monotonic()
        time.sleep(6.0)
        after, elapsed = list(counts), time.monotonic() - started
        rates = [(b - a) / elapsed for a, b in zip(before, after, strict=True)]
    finally:
        stop.set()
        for thread in readers + busy:
            thread.join(15)
        stop_server(server)
    assert min(rates) >= 0.85 * fps, f"frames/s per camera {[round(r, 1) for r in rates]}"


def h264_copy(video: Path, out: Path) -> Path:
    """``video`` encoded again as H.264 (a keyframe a second) and the packets it holds."""
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        rate = src.streams.video[0].average_rate
        stream = dst.add_stream("libx264", rate=rate)
        first = True
        for frame in src.decode(video=0):
            if first:
                stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                stream.options = {"g": str(round(rate)), "bf": "0"}
                first = False
            dst.mux(stream.encode(frame.reformat(format="yuv420p")))
        dst.mux(stream.encode())
    return out


def packets_of(video: Path, keyframes: bool = True) -> list[bytes]:
    with av.open(str(video)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size and (keyframes or not p.is_keyframe)]


def test_cameras_connect_while_the_model_loads_and_it_is_warmed_up_on_their_frames(served: str, endpoint: str) -> None:
    """Start-up makes each camera's first connection at once, so the warm-up (before any frame flows) already
    covers the camera's format rather than pausing for it when its first frame comes."""
    assert_warmed_on_the_camera(warmed_shapes(served, endpoint, load_engine))


def warmed_shapes(url: str, endpoint: str, load: EngineFactory) -> frozenset[tuple[int, ...]]:
    """The frame shapes a pipeline with one camera at ``url`` warmed its model up on at start-up."""
    stream = {"id": "cam", "source": {"type": "url", "url": url, "decoder": "pyav"}, "max_frames": 5}
    pipeline = Pipeline(config_for(endpoint, [stream], {"path": "edgesight-det"}), engine_factory=load)
    pipeline.start()
    try:
        assert pipeline._parts.infer is not None
        return pipeline._parts.infer.warmed_shapes
    finally:
        pipeline.stop()
        pipeline.close()


def assert_warmed_on_the_camera(shapes: frozenset[tuple[int, ...]]) -> None:
    assert shapes & {(180, 160), (120, 160, 3)}, f"warmed up on {sorted(shapes)}, not the camera's 160x120 frames"


def test_cameras_are_awaited_until_the_model_has_loaded_not_for_a_fixed_time(
    served: str, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that loads for longer than the cameras take to connect is warmed up on their format even when the
    grace after opening is nil: start-up waits for the cameras while the model loads, then only the grace more."""
    monkeypatch.setattr(runner, "CONNECT_WAIT_S", 0.0)
    loads: list[float] = []

    def slow_load(spec: ModelSpec, backend: str) -> DetectionEngine:
        started = time.monotonic()
        time.sleep(SLOW_LOAD_S)
        loaded = load_engine(spec, backend)
        loads.append(time.monotonic() - started)
        return loaded

    shapes = warmed_shapes(served, endpoint, slow_load)
    assert loads and loads[0] >= SLOW_LOAD_S
    assert_warmed_on_the_camera(shapes)


def test_an_rtsp_camera_s_clips_are_its_own_packets(tmp_path: Path, endpoint: str) -> None:
    scene = write_scene(tmp_path / "scene", 5, 300, occlusion=False)
    camera = h264_copy(scene / "scene.mp4", tmp_path / "camera.mp4")
    server, url = serve_rtsp(camera, PASSWORD)
    try:
        stream = {"id": "door", "source": {"type": "url", "url": url, "decoder": "pyav"}, "lines": [GATE],
                  "max_frames": 280}  # fmt: skip
        events = {"store": {"dir": str(tmp_path / "events")}, "clips": {"pre_s": 1.0, "post_s": 1.0}}
        got = run_and_collect(config_for(endpoint, [stream], {"path": "edgesight-det"}, events=events))
    finally:
        stop_server(server)
    crossings = [m for m in got.messages if isinstance(m, EventMessage) and m.kind == "line_cross"]
    assert crossings, "the scene's objects cross the gate"
    sent = set(packets_of(camera))
    store = EventStore(EventStoreConfig(dir=tmp_path / "events"))
    try:
        for message in crossings:
            stored = store.get(message.event_id)
            assert stored is not None and stored.clip is not None, f"a clip for {message.event_id}"
            clip = packets_of(store.path(stored.clip))
            with av.open(str(store.path(stored.clip))) as container:
                video = container.streams.video[0]
                assert video.codec_context.name == "h264"
                size = (video.codec_context.width, video.codec_context.height)
                assert sum(1 for _ in container.decode(video)) == len(clip), "every packet decodes"
            with av.open(str(camera)) as container:
                source = container.streams.video[0]
                assert size == (source.width, source.height)
                rate = float(source.average_rate or 0)
            inter = packets_of(store.path(stored.clip), keyframes=False)  # keyframes carry SPS/PPS the server adds
            assert len(inter) >= 10 and all(p in sent for p in inter), "the camera's own pictures, not encoded again"
            span = (stored.clip_end or 0.0) - (stored.clip_start or 0.0)
            assert np.isclose(span + 1 / rate, len(clip) / rate, atol=0.05), "its times are the camera's"
            assert span <= 1.0 + 1.0 + 1.1 + 0.1, "pre_s, post_s and at most a GOP more"
            at = message.raw["pts_ms"] / 1000.0 - (stored.clip_start or 0.0)
            assert 1.0 - 0.1 <= at <= 1.0 + 1.1 + 0.1, f"the event {at:.2f} s into its clip: pre_s, from a keyframe"
    finally:
        store.close()


def test_a_stream_that_redacts_gets_clips_encoded_from_redacted_frames(tmp_path: Path) -> None:
    """The camera's own packets show what redaction hides: only a stream whose privacy can hide nothing uses them."""
    from pipeline.assembly import media_sink
    from pipeline.config import PrivacyConfig, build_config
    from pipeline.privacy import can_redact
    from pipeline.sinks import Redactor

    names = {0: "person", 1: "bicycle"}
    assert not can_redact(PrivacyConfig(), names, faces=False), "faces by default: none without a face thread"
    assert can_redact(PrivacyConfig(), names, faces=True)
    assert can_redact(PrivacyConfig(redact=["person"]), names, faces=False)
    assert can_redact(PrivacyConfig(redact=[1]), names, faces=False)
    assert not can_redact(PrivacyConfig(redact=[]), names, faces=True)
    url = {"type": "url", "url": "rtsp://127.0.0.1:9/x", "decoder": "pyav"}
    streams = [{"id": "open", "source": url}, {"id": "private", "source": url, "privacy": {"redact": ["person"]}}]
    events = {"store": {"dir": str(tmp_path / "ev")}, "clips": {}}
    config = build_config({"streams": streams, "events": events}, "test")
    store = EventStore(EventStoreConfig(dir=tmp_path / "ev"))
    rings = {"open": PacketRing(1.0), "private": PacketRing(1.0)}
    sink = media_sink(config, store, Redactor(), rings, names, faces=False)
    try:
        assert sink.camera("open") is rings["open"] and sink.camera("private") is None
    finally:
        sink.close()
        store.close()
