"""Sources against real files and folders; a scripted fake proves shutdown unblocks a hung read."""

from __future__ import annotations

import importlib.util
import itertools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from engines.base import FrameFormat, ModelSpec, ReadyDetections
from engines.yuv import PixelLayout
from pipeline.config import build_config
from pipeline.errors import SourceError
from pipeline.runner import STOP_JOIN_DEADLINE_S, Pipeline
from pipeline.sources.base import RawFrame, Source
from pipeline.sources.images import ImageFolderSource
from pipeline.sources.paced import BURST_MAX_GAP_S, CATCH_UP_S, BurstSpacer, PacedSource
from pipeline.sources.synthetic import SyntheticSource
from pipeline.sources.video import VideoFileSource, to_bgr


def read_all(source: object) -> list[RawFrame]:
    source.open()  # type: ignore[attr-defined]
    frames = []
    while (frame := source.read()) is not None:  # type: ignore[attr-defined]
        frames.append(frame)
    source.release()  # type: ignore[attr-defined]
    return frames


def test_video_file_decodes_every_frame(people1: Path) -> None:
    frames = read_all(VideoFileSource(people1))
    assert len(frames) == 686
    assert frames[0].image.shape == (360, 640, 3)
    pts = [f.pts_ms for f in frames]
    assert pts == sorted(pts) and pts[-1] > 28_000  # 686 frames at 23.98 fps


@pytest.mark.parametrize("decoder", ["cpu", "pyav"])
def test_decode_threads_reach_the_decoder_and_it_still_decodes_every_frame(
    h264_video: Path, tmp_path: Path, decoder: str
) -> None:
    """``decode_threads`` (many cameras on one box: a thread or two each) is the decoder's own thread count."""
    if decoder == "pyav" and importlib.util.find_spec("av") is None:
        pytest.skip("PyAV is not installed")
    from pipeline.sources import make_source

    config = build_config(
        {
            "streams": [
                {
                    "id": "a",
                    "source": {"type": "file", "path": str(h264_video), "decoder": decoder, "decode_threads": 1},
                }
            ]
        },
        "t",
    )
    reference = make_source(build_config({"streams": [{"id": "a", "source": str(h264_video)}]}, "t").streams[0].source)
    source = make_source(config.streams[0].source)
    frames = []
    for src in (source, reference):
        src.open()
        try:
            n = 0
            while src.read() is not None:
                n += 1
            frames.append(n)
            if src is source:
                threads = (
                    src._container.streams.video[0].codec_context.thread_count  # type: ignore[attr-defined]
                    if decoder == "pyav"
                    else src._cap.get(cv2.CAP_PROP_N_THREADS)  # type: ignore[attr-defined]
                )
                assert threads == 1
        finally:
            src.release()
    assert frames[0] == frames[1] > 0


def test_cpu_decoders_share_the_cores_unless_a_stream_sets_its_own(
    tiny_video: Path, arch_weights: Path, endpoint: str
) -> None:
    """Many cameras decoded on the CPU get the box's cores between them (a thread per core each crowds them)."""
    from helpers import config_for, run_and_collect

    from pipeline.assembly import decoder_threads
    from pipeline.config import SourceConfig
    from pipeline.sources import make_source

    file = {"type": "file", "path": str(tiny_video)}
    streams = [{"id": f"c{i}", "source": file} for i in range(3)]
    streams.append({"id": "own", "source": file | {"decode_threads": 3}})
    config = config_for(endpoint, streams, {"path": str(arch_weights), "device": "cpu", "imgsz": 160})
    opened: dict[str, int | None] = {}

    def factory(source: SourceConfig) -> Source:
        opened[str(len(opened))] = getattr(source, "decode_threads", None)
        return make_source(source)

    got = run_and_collect(config, source_factory=factory)
    assert got.report is not None and got.report.ok
    assert all(s.published == 40 for s in got.report.streams)
    cores = os.cpu_count() or 1
    assert sorted(opened.values(), key=str) == sorted([max(1, cores // 3)] * 3 + [3], key=str)
    assert decoder_threads(config.streams[:1], cores) is None, "a lone stream keeps FFmpeg's own choice"


def test_tiny_video_written_here(tiny_video: Path) -> None:
    frames = read_all(VideoFileSource(tiny_video))
    assert len(frames) == 40
    assert frames[10].pts_ms == pytest.approx(500.0, abs=1.0)


def test_truncated_video_is_a_clear_error(people1: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(people1.read_bytes()[:1_000_000])
    with pytest.raises(SourceError, match=r"cut\.mp4"):
        read_all(VideoFileSource(cut))  # the index (moov) sits at the end: nothing can be opened


def test_image_folder_in_name_order_skipping_unreadable(tmp_path: Path) -> None:
    for i, value in enumerate([10, 20, 30]):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((32, 48, 3), value, np.uint8))
    (tmp_path / "img1b.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((32, 48), 77, np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    source = ImageFolderSource(tmp_path, fps=10)
    frames = read_all(source)
    assert [int(f.image[0, 0, 0]) for f in frames] == [77, 10, 20, 30]
    assert all(f.image.shape == (32, 48, 3) for f in frames)
    assert [f.pts_ms for f in frames] == [0.0, 100.0, 200.0, 400.0]
    assert source.skipped == 1


@pytest.mark.parametrize(
    ("image", "shape"),
    [
        (np.zeros((8, 8), np.uint8), (8, 8, 3)),
        (np.zeros((8, 8, 1), np.uint8), (8, 8, 3)),
        (np.zeros((8, 8, 4), np.uint8), (8, 8, 3)),
        (np.full((8, 8, 3), 65535, np.uint16), (8, 8, 3)),
        (np.zeros((1, 1, 3), np.uint8), (1, 1, 3)),
    ],
)
def test_odd_frames_become_bgr(image: np.ndarray, shape: tuple[int, ...]) -> None:
    out = to_bgr(image, "test")
    assert out.shape == shape and out.dtype == np.uint8
    if image.dtype == np.uint16:
        assert int(out.max()) == 255


def test_unsupported_frames_are_rejected_clearly() -> None:
    with pytest.raises(SourceError, match="unsupported pixel type float32"):
        to_bgr(np.zeros((4, 4, 3), np.float32), "cam")
    with pytest.raises(SourceError, match="unsupported frame shape"):
        to_bgr(np.zeros((4, 4, 2), np.uint8), "cam")


def test_synthetic_scene_is_deterministic_per_seed() -> None:
    a = read_all(SyntheticSource(seed=4, frames=5))
    b = read_all(SyntheticSource(seed=4, frames=5))
    c = read_all(SyntheticSource(seed=5, frames=5))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0].image, c[0].image)
    assert not np.array_equal(a[0].image, a[4].image)  # things move


def test_paced_source_keeps_the_frame_rate() -> None:
    source = PacedSource(SyntheticSource(seed=1, frames=6, fps=20))
    t0 = time.monotonic()
    assert len(read_all(source)) == 6
    assert 0.22 < time.monotonic() - t0 < 1.0  # 5 intervals of 50 ms


def test_a_paced_source_held_up_goes_on_at_its_rate_without_a_burst() -> None:
    """As a camera: a reader that was held up (start-up, a full ring) does not get the missed frames in a rush."""
    source = PacedSource(SyntheticSource(seed=1, frames=12, fps=20))
    source.open()
    assert source.read() is not None
    time.sleep(1.0)  # 20 frames' worth, past the source's lag limit
    t0 = time.monotonic()
    for _ in range(10):
        assert source.read() is not None
    assert time.monotonic() - t0 > 0.3  # 9 intervals of 50 ms after the first; all ten at once without it


def test_a_decoders_burst_is_spread_over_its_frames_time_and_single_frames_never_wait() -> None:
    """A reordering decoder's burst (two frames from one call) leaves one interval apart, and so does the frame
    after it (the held frame left late); other frames that come one at a time go at once, even when they come fast
    (a camera catching up after a stall); a jump waits at most the cap."""
    interrupted = threading.Event()
    spacer = BurstSpacer(interrupted)

    def released(pts_ms: float, burst: bool) -> float:
        started = time.monotonic()
        spacer.release(pts_ms, burst)
        return time.monotonic() - started

    assert released(0.0, burst=False) < 0.05
    assert released(50.0, burst=True) >= 0.9 * 0.050 - 0.002  # a burst's second frame waits for its time
    assert released(100.0, burst=False) >= 0.9 * 0.050 - 0.002  # just after a burst: spaced from the held frame
    assert released(150.0, burst=False) < 0.03 and released(200.0, burst=False) < 0.03  # one a call: never held
    assert released(10_000.0, burst=True) < BURST_MAX_GAP_S + 0.25  # a timestamp jump: the cap, not 10 s
    assert spacer.held == 3
    threading.Timer(0.05, interrupted.set).start()
    spacer.reset()
    spacer.release(0.0, burst=False)
    assert released(100_000.0, burst=True) < BURST_MAX_GAP_S + 0.25  # interrupted (or capped): never a hang
    spacer.reset()
    assert released(-5.0, burst=True) < 0.05  # after a reset (new connection) nothing to wait for


def test_a_backlog_goes_through_the_burst_spacer_at_once() -> None:
    """Frames that come well behind the camera's clock (a client catching up after a stall) are never held, bursts
    included; once caught up, a burst is spaced again."""
    spacer = BurstSpacer(threading.Event())
    first = time.monotonic()
    spacer.release(0.0, burst=False)
    time.sleep(CATCH_UP_S + 0.5)  # a stall: the five frames that come next are all more than CATCH_UP_S behind
    started = time.monotonic()
    for i in range(1, 6):  # the backlog, in bursts of two
        spacer.release(i * 50.0, burst=i % 2 == 0)
    assert time.monotonic() - started < 0.1 and spacer.held == 0
    time.sleep(0.5)
    on_time = (time.monotonic() - first) * 1000.0  # caught up: the next frame comes at its time
    spacer.release(on_time, burst=False)
    started = time.monotonic()
    spacer.release(on_time + 50.0, burst=True)
    assert time.monotonic() - started >= 0.9 * 0.050 - 0.002 and spacer.held == 1


class BlockingSource:
    """A scripted fake: ``n`` frames, then a read that hangs until interrupted (a dead camera)."""

    live = True
    description = "blocking fake"

    def __init__(self, n: int) -> None:
        self.n = n
        self.read_count = 0
        self.interrupted = threading.Event()
        self.released = False

    def open(self) -> None:
        pass

    def read(self) -> RawFrame | None:
        if self.read_count < self.n:
            self.read_count += 1
            return RawFrame(np.zeros((64, 96, 3), np.uint8), self.read_count * 40.0)
        self.interrupted.wait(60)
        return None

    def release(self) -> None:
        self.released = True

    def interrupt(self) -> None:
        self.interrupted.set()


class FakeEngine:
    """A scripted engine: one box per frame at a fixed place."""

    def __init__(self) -> None:
        from engines.base import EngineInfo

        self.info = EngineInfo("fake", "cpu", "fp32", "fake.pt", "detect", 64, {0: "person"})
        self.closed = False
        self.warmed: list[FrameFormat] | None = None

    def prepare(self, image: np.ndarray, layout: PixelLayout = "bgr") -> Any:
        return image

    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        return [np.array([[1.0, 2.0, 10.0, 20.0, 0.9, 0.0]], np.float32) for _ in inputs]

    def submit(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> ReadyDetections:
        return ReadyDetections(self.infer(inputs, source_shapes))

    def warmup(self, formats: Sequence[FrameFormat] = ()) -> None:
        self.warmed = list(formats)

    def close(self) -> None:
        self.closed = True


def test_stop_unblocks_a_hung_source_and_is_idempotent(endpoint: str) -> None:
    fake = BlockingSource(5)
    engine = FakeEngine()
    stream = {"id": "dead", "source": "rtsp://h/x", "queue_policy": "block"}
    config = build_config({"streams": [stream], "publish": {"endpoint": endpoint}}, "t")
    pipeline = Pipeline(config, source_factory=lambda _cfg: fake, engine_factory=lambda _spec, _name: engine)
    pipeline.start()
    deadline = time.monotonic() + 10
    while pipeline.progress().published < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pipeline.progress().published == 5
    assert not pipeline.wait(0.2)  # hung on the sixth read
    t0 = time.monotonic()
    pipeline.stop()
    pipeline.stop()
    assert time.monotonic() - t0 < 2.0
    assert fake.interrupted.is_set()
    report = pipeline.report()
    pipeline.close()
    assert fake.released and engine.closed
    assert report.streams[0].frames == 5 and report.streams[0].stopped
    assert not any(t.is_alive() for t in threading.enumerate() if t.name in {"infer", "preprocess", "publish"})


class SlowToStopSource(BlockingSource):
    """After ``n`` frames, a read that returns ``linger`` s after its interrupt (a native call that cannot be cut
    short); notes a release that comes while it reads."""

    def __init__(self, n: int, linger: float) -> None:
        super().__init__(n)
        self.linger = linger
        self.reading = False
        self.released_while_reading = False

    def read(self) -> RawFrame | None:
        if self.read_count < self.n:
            return super().read()
        self.reading = True
        self.interrupted.wait(60)
        time.sleep(self.linger)
        self.reading = False
        return None

    def release(self) -> None:
        self.released_while_reading |= self.reading
        super().release()


def test_close_leaves_a_source_still_reading_to_its_capture_thread(endpoint: str) -> None:
    fake = SlowToStopSource(3, linger=STOP_JOIN_DEADLINE_S + 2.0)
    stream = {"id": "slow", "source": "rtsp://h/x"}
    config = build_config({"streams": [stream], "publish": {"endpoint": endpoint}}, "t")
    pipeline = Pipeline(config, source_factory=lambda _cfg: fake, engine_factory=lambda _spec, _name: FakeEngine())
    pipeline.start()
    deadline = time.monotonic() + 10
    while not fake.reading and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.stop()  # gives up on the capture thread after its deadline
    pipeline.close()
    assert fake.reading and not fake.released  # left alone while it reads
    deadline = time.monotonic() + 10
    while not fake.released and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake.released and not fake.released_while_reading  # released by its capture thread once the read ended


def test_a_failing_engine_stops_the_pipeline_with_its_error(endpoint: str) -> None:
    class Exploding(FakeEngine):
        def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
            raise RuntimeError("boom")

    config = build_config(
        {"streams": [{"id": "s", "source": "synthetic://?frames=50"}], "publish": {"endpoint": endpoint}}, "t"
    )
    pipeline = Pipeline(config, engine_factory=lambda _spec, _name: Exploding())
    t0 = time.monotonic()
    report = pipeline.run()
    assert time.monotonic() - t0 < 5
    assert not report.ok
    assert report.failure == "stage 'infer' failed: RuntimeError: boom"


class FailingSource(BlockingSource):
    """A scripted fake: ``n`` frames, then the camera fails."""

    def read(self) -> RawFrame | None:
        if self.read_count < self.n:
            return super().read()
        raise SourceError("blocking fake: stream stopped delivering frames")


def test_a_source_failure_ends_its_stream_with_an_error_status(endpoint: str) -> None:
    from helpers import run_and_collect

    config = build_config(
        {
            "streams": [
                {"id": "bad", "source": "rtsp://h/x", "queue_policy": "block", "reconnect": {"enabled": False}},
                {"id": "good", "source": "synthetic://?frames=12"},
            ],
            "publish": {"endpoint": endpoint, "wait_for_subscriber": True, "subscriber_timeout_s": 10},
        },
        "t",
    )

    def factory(cfg: object) -> object:
        from pipeline.sources import make_source

        return FailingSource(3) if getattr(cfg, "type", "") == "url" else make_source(cfg)  # type: ignore[arg-type]

    got = run_and_collect(config, source_factory=factory, engine_factory=lambda _s, _n: FakeEngine())
    bad = got.statuses("bad")
    assert [s.event for s in bad] == ["start", "error"]
    assert bad[-1].message == "blocking fake: stream stopped delivering frames"
    assert [m.seq for m in got.detections("bad")] == [0, 1, 2]
    assert [m.seq for m in got.detections("good")] == list(range(12)), "the other stream is unaffected"
    assert got.report is not None and not got.report.ok


class SlowEngine(FakeEngine):
    """A scripted engine that takes 30 ms a frame, slower than the camera."""

    def infer(self, inputs: Sequence[Any], source_shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        time.sleep(0.03)
        return super().infer(inputs, source_shapes)


@pytest.mark.parametrize(("policy", "expect_drops"), [("drop_oldest", True), ("block", False)])
def test_a_slow_engine_drops_live_frames_but_never_file_frames(policy: str, expect_drops: bool, endpoint: str) -> None:
    from helpers import run_and_collect

    config = build_config(
        {
            "streams": [
                {
                    "id": "cam",
                    "source": {"type": "synthetic", "frames": 60, "fps": 200, "width": 96, "height": 64},
                    "queue_policy": policy,
                    "queue_size": 2,
                }
            ],
            "publish": {"endpoint": endpoint, "wait_for_subscriber": True, "subscriber_timeout_s": 10},
        },
        "t",
    )

    def paced(cfg: object) -> object:
        from pipeline.sources import make_source

        return PacedSource(make_source(cfg))  # type: ignore[arg-type]  # a 200 fps "camera"

    got = run_and_collect(config, source_factory=paced, engine_factory=lambda _s, _n: SlowEngine())
    dets = got.detections("cam")
    assert got.report is not None
    drops = got.report.streams[0].drops
    assert [m.seq for m in dets] == list(range(len(dets))), "seq stays contiguous either way"
    if expect_drops:
        assert drops.get("capture.cam", 0) > 0
        assert len(dets) + drops["capture.cam"] == 60
        assert dets[-1].frame_index == 59, "the freshest frame wins"
        assert len({m.frame_index for m in dets}) == len(dets) < 60
    else:
        assert drops == {}
        assert [m.frame_index for m in dets] == list(range(60))


def test_decoder_choice_for_files(people1: Path) -> None:
    from pipeline.config import FileSourceConfig
    from pipeline.sources import make_source
    from pipeline.sources.nvdec import FallbackSource, NvdecFileSource, nvdec_available
    from pipeline.sources.pyav import PyAvFileSource, pyav_available

    cpu = make_source(FileSourceConfig(path=people1, decoder="cpu"))
    assert isinstance(cpu, VideoFileSource)
    assert isinstance(make_source(FileSourceConfig(path=people1, decoder="pyav")), PyAvFileSource)
    auto = make_source(FileSourceConfig(path=people1, decoder="auto"))
    best_cpu = PyAvFileSource if pyav_available() else VideoFileSource
    assert isinstance(auto, FallbackSource if nvdec_available() else best_cpu)
    nvdec = make_source(FileSourceConfig(path=people1, decoder="nvdec"))
    assert isinstance(nvdec, NvdecFileSource)
    if not nvdec_available():
        with pytest.raises(SourceError, match=r"people1\.mp4.*(PyNvVideoCodec is not installed|NVDEC)"):
            nvdec.open()


def test_a_failed_gpu_decoder_falls_back_to_opencv(tiny_video: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.sources.nvdec import FallbackSource

    class NoGpu(BlockingSource):
        description = "video file (NVDEC)"

        def open(self) -> None:
            raise SourceError("video file (NVDEC): NVDEC cannot decode it (no GPU)")

    source = FallbackSource(NoGpu(0), VideoFileSource(tiny_video))
    frames = read_all(source)
    assert len(frames) == 40 and "decoding on the CPU instead" in caplog.text
    assert "tiny.mp4" in source.description


def test_a_looped_file_starts_again_with_increasing_timestamps(tiny_video: Path) -> None:
    from pipeline.config import FileSourceConfig
    from pipeline.sources import make_source

    once = make_source(FileSourceConfig(path=tiny_video))
    once.open()
    frames = 0
    while once.read() is not None:
        frames += 1
    once.release()
    looped = make_source(FileSourceConfig(path=tiny_video, loop=True))
    looped.open()
    got = [looped.read() for _ in range(2 * frames + 3)]
    looped.release()
    assert all(f is not None for f in got)
    pts = [f.pts_ms for f in got if f is not None]
    assert all(b > a for a, b in itertools.pairwise(pts)), "timestamps keep increasing across loops"
    assert np.array_equal(got[0].image, got[frames].image)  # type: ignore[union-attr]


class ScriptedFile:
    """A file of ``frames`` frames that counts how it is started over; ``rewind`` answers ``can_rewind``."""

    live = False
    description = "scripted file"

    def __init__(self, frames: int, can_rewind: bool) -> None:
        self.frames, self.can_rewind = frames, can_rewind
        self.left = frames
        self.rewinds = 0
        self.released = False

    def open(self) -> None:
        self.left = self.frames

    def read(self) -> RawFrame | None:
        if self.left == 0:
            return None
        self.left -= 1
        return RawFrame(np.zeros((2, 2, 3), np.uint8), (self.frames - self.left - 1) * 40.0)

    def rewind(self) -> bool:
        if self.can_rewind:
            self.rewinds += 1
            self.left = self.frames
        return self.can_rewind

    def release(self) -> None:
        self.released = True

    def interrupt(self) -> None:
        pass


@pytest.mark.parametrize("can_rewind", [True, False])
def test_a_looped_source_starts_over_in_place_when_it_can(can_rewind: bool) -> None:
    from pipeline.sources.looping import LoopingSource

    made: list[ScriptedFile] = []

    def factory() -> ScriptedFile:
        made.append(ScriptedFile(5, can_rewind))
        return made[-1]

    looped = LoopingSource(factory)
    looped.open()
    got = [looped.read() for _ in range(12)]
    pts = [f.pts_ms for f in got if f is not None]
    assert len(pts) == 12 and all(b > a for a, b in itertools.pairwise(pts)), "timestamps keep increasing"
    assert looped.loops == 2
    if can_rewind:
        assert len(made) == 1 and made[0].rewinds == 2, "one decoder for every loop"
        assert not made[0].released
    else:
        assert len(made) == 3 and made[0].released and made[1].released, "released and made anew at each end"


class OpeningSource(ScriptedFile):
    """Opens only once ``barrier`` has been reached by every source (so only when opened together), or fails."""

    def __init__(self, barrier: threading.Barrier, error: str | None = None) -> None:
        super().__init__(1, False)
        self.barrier, self.error = barrier, error
        self.opened = False

    def open(self) -> None:
        self.barrier.wait()
        if self.error:
            raise SourceError(self.error)
        self.opened = True


def test_sources_open_together_and_the_first_failure_is_reported() -> None:
    from pipeline.sources.opening import open_all

    barrier = threading.Barrier(6, timeout=10)
    sources = [OpeningSource(barrier) for _ in range(6)]
    open_all(sources)  # in turn, the first open would wait for the others until the barrier breaks
    assert all(s.opened and not s.released for s in sources)

    barrier = threading.Barrier(4, timeout=10)
    sources = [OpeningSource(barrier), OpeningSource(barrier, "first bad"), OpeningSource(barrier)]
    sources.append(OpeningSource(barrier, "second bad"))
    with pytest.raises(SourceError, match="first bad"):
        open_all(sources)
    assert [s.released for s in sources] == [True, False, True, False], "those that opened are released"


def test_the_model_loads_while_the_sources_open(endpoint: str, tiny_video: Path) -> None:
    """The engine's loading and the sources' opening meet at a barrier: in turn, the first would wait in vain."""
    barrier = threading.Barrier(3, timeout=10)
    engine = FakeEngine()

    def load(_spec: ModelSpec, _name: str) -> FakeEngine:
        barrier.wait()
        return engine

    streams = [{"id": f"s{i}", "source": {"type": "file", "path": str(tiny_video)}} for i in range(2)]
    config = build_config({"streams": streams, "publish": {"endpoint": endpoint}}, "t")
    pipeline = Pipeline(config, source_factory=lambda _cfg: OpeningSource(barrier), engine_factory=load)
    try:
        pipeline.start()
    finally:
        pipeline.stop()
        pipeline.close()
    assert engine.warmed == [], "warmed up once the sources were open (scripted ones know no format)"


def test_a_bad_source_fails_start_up_without_waiting_for_the_model(endpoint: str, tiny_video: Path) -> None:
    loading, release = threading.Event(), threading.Event()
    engine = FakeEngine()

    def load(_spec: ModelSpec, _name: str) -> FakeEngine:
        loading.set()
        release.wait(30)
        return engine

    def sources(_cfg: object) -> OpeningSource:
        loading.wait(10)
        return OpeningSource(threading.Barrier(1), "camera file is corrupt")

    config = build_config(
        {"streams": [{"id": "bad", "source": str(tiny_video)}], "publish": {"endpoint": endpoint}}, "t"
    )
    pipeline = Pipeline(config, source_factory=sources, engine_factory=load)
    with pytest.raises(SourceError, match="corrupt"):
        pipeline.start()
    assert not engine.closed and not release.is_set(), "the error came while the model was still loading"
    release.set()
    deadline = time.monotonic() + 10
    while not engine.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.closed, "the engine that finished loading after the failure was let go of"


def test_odd_images_go_through_the_whole_pipeline(arch_weights: Path, endpoint: str, tmp_path: Path) -> None:
    """Grayscale, 4-channel, 16-bit, 1x1 and 8K images from a folder: each one published, none a crash."""
    from helpers import config_for, run_and_collect

    folder = tmp_path / "odd"
    folder.mkdir()
    images: dict[str, np.ndarray] = {
        "a_gray.png": np.full((120, 160), 90, np.uint8),
        "b_rgba.png": np.full((120, 160, 4), 200, np.uint8),
        "c_16bit.png": np.full((120, 160, 3), 40000, np.uint16),
        "d_tiny.png": np.full((1, 1, 3), 128, np.uint8),
        "e_8k.jpg": cv2.resize(np.random.default_rng(0).integers(0, 255, (90, 160, 3), np.uint8), (7680, 4320)),
    }
    for name, image in images.items():
        assert cv2.imwrite(str(folder / name), image)
    config = config_for(endpoint, [{"id": "odd", "source": str(folder)}], {"path": str(arch_weights), "device": "cpu"})
    got = run_and_collect(config)
    sizes = [(m.width, m.height) for m in got.detections("odd")]
    assert sizes == [(160, 120), (160, 120), (160, 120), (1, 1), (7680, 4320)]
    assert got.statuses("odd")[-1].event == "eos"


@pytest.mark.skipif(importlib.util.find_spec("av") is None, reason="PyAV is not installed")
def test_the_engine_warms_up_on_the_frame_formats_the_opened_sources_decode(
    tiny_video: Path, tmp_path: Path, endpoint: str
) -> None:
    """Files know their frames' shape once open, so the model runs blank frames of that shape (and layout) before
    the first real batch; a stream whose frames are operated on first, or a generated scene, adds none."""
    other = tmp_path / "other.avi"  # a size of its own, only seen by the stream with image operations
    writer = cv2.VideoWriter(str(other), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (96, 64))
    for _ in range(3):
        writer.write(np.full((64, 96, 3), 90, np.uint8))
    writer.release()
    streams: list[dict[str, Any]] = [
        {"id": "bgr1", "source": {"type": "file", "path": str(tiny_video), "decoder": "cpu"}},
        {"id": "bgr2", "source": {"type": "file", "path": str(tiny_video), "decoder": "cpu", "loop": True}},
        {"id": "planar", "source": {"type": "file", "path": str(tiny_video), "decoder": "pyav", "realtime": True}},
        {
            "id": "resized",
            "source": {"type": "file", "path": str(other), "decoder": "cpu"},
            "preprocess": [{"op": "resize", "width": 64, "height": 48}],
        },
        {"id": "scene", "source": "synthetic://?frames=5"},
    ]
    config = build_config(
        {"streams": [{**s, "max_frames": 3} for s in streams], "publish": {"endpoint": endpoint}}, "t"
    )
    engine = FakeEngine()
    report = Pipeline(config, engine_factory=lambda _spec, _name: engine).run()
    assert report.ok
    assert engine.warmed == [FrameFormat((120, 160, 3), "bgr"), FrameFormat((180, 160), "i420")]
