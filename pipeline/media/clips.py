"""A clip per event, cut from a ring of the stream's compressed packets: the camera's own (its demuxer fills
a :class:`~pipeline.media.packets.PacketRing`: nothing is encoded again), or, for sources decoded elsewhere,
H.264 encoded here from the frames. A clip starts at the ring's keyframe ``pre_s`` before its event and runs
until ``post_s`` after it ended, remuxed to MP4."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.config import ClipsConfig
from pipeline.media.packets import Codec, Packet, PacketRing
from pipeline.media.store import EventStore

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)
GOP_MS = 1000.0
"""Encoded clips: a keyframe at least this often, so a clip starts within a second of ``pre_s`` before its event."""
QUEUE = 96
"""Frames and commands waiting for the encoder at most; past that the oldest frames are dropped (counted)."""
ENCODERS = ("h264_nvenc", "libx264")
"""Tried in order: NVIDIA's encoder where FFmpeg has it and a GPU is there, else x264 on the CPU."""
POLL_S = 0.1
"""How often the recorder looks for the camera's new packets while no frame comes."""


@dataclass
class Clip:
    event_id: str
    name: str
    path: Path
    start_ms: float
    """Stream time the clip should start at (``pre_s`` before its event)."""
    end_ms: float | None = None
    """Stream time it ends at (``post_s`` after its event ended), once the event has ended."""
    output: Any = None
    stream: Any = None
    first_ms: float | None = None
    last_ms: float = 0.0
    last_dts: int | None = None


class StreamClock:
    """A stream's frame times made to only go forward (a looped file starts its times again)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.last = -1.0
        self.step = 40.0

    def __call__(self, pts_ms: float) -> float:
        t = pts_ms + self.offset
        if t <= self.last:
            self.offset += self.last - t + self.step
            t = pts_ms + self.offset
        elif self.last >= 0:
            self.step = min(t - self.last, 1000.0)
        self.last = t
        return t


class ClipRecorder:
    """One stream's clips, made in a thread of its own (the publish thread hands it frames and events).

    With ``camera`` (a ring its source's demuxer fills) and while that ring has packets, clips are the camera's
    packets; otherwise frames are encoded into a ring of this recorder's own.
    """

    def __init__(
        self,
        stream_id: str,
        config: ClipsConfig,
        store: EventStore,
        live: bool = True,
        camera: PacketRing | None = None,
    ) -> None:
        """``live``: a camera, whose frames the encoder drops (oldest first) when it falls behind; otherwise (a
        file read as fast as the pipeline goes) the caller waits for room, so every frame is in the clips."""
        self.stream_id = stream_id
        self.live = live
        self.config = config
        self.store = store
        self.camera = camera
        self.encoded = PacketRing(config.pre_s + 2 * GOP_MS / 1000.0)
        self.clock = StreamClock()
        self.now = -1.0
        """The newest frame's time on the clock of the ring in use."""
        self.dropped = 0
        """Frames dropped before the encoder (it could not keep up), and clips that could not be written."""
        self.finished = 0
        self._items: deque[tuple[str, Any]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._ring: PacketRing | None = None
        self._seen = 0
        self._clips: dict[str, Clip] = {}
        self._encoder: Any = None
        self._last_key_ms = -1e18
        self._thread = threading.Thread(target=self._run, name=f"clips-{stream_id}", daemon=True)
        self._thread.start()

    @property
    def passthrough(self) -> bool:
        """Clips are the camera's own packets (its source demuxes them into ``camera``)."""
        return self.camera is not None and self.camera.codec is not None

    def frame(self, picture: Callable[[], np.ndarray], pts_ms: float) -> None:
        """One frame at stream time ``pts_ms``. ``picture`` gives it (BGR; copied or scaled down here, so the
        caller's buffer may be reused), asked only when clips are encoded here."""
        if self.passthrough:
            self.now = pts_ms
            self._put("tick", None)
            return
        image = picture()
        h, w = image.shape[:2]
        if w > self.config.max_width:
            size = (self.config.max_width, round(h * self.config.max_width / w) // 2 * 2)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        else:
            image = image[: h // 2 * 2, : w // 2 * 2].copy()
        self.now = self.clock(pts_ms)
        self._put("frame", (self.now, image))

    def open(self, event_id: str, pts_ms: float | None = None) -> None:
        """An event started at stream time ``pts_ms`` (the newest frame's when ``None``; events confirmed a few
        frames late carry the frame where they began): its clip starts ``pre_s`` before."""
        self._put("open", (event_id, self._at(pts_ms)))

    def close(self, event_id: str, pts_ms: float | None = None) -> None:
        """The event ended at stream time ``pts_ms`` (the newest frame's when ``None``): its clip ends ``post_s``
        after."""
        self._put("close", (event_id, self._at(pts_ms)))

    def _at(self, pts_ms: float | None) -> float:
        """A time of the stream on the clock of the ring in use, never after the newest frame."""
        if pts_ms is None:
            return self.now
        return min(self.now, pts_ms if self.passthrough else pts_ms + self.clock.offset)

    def finish(self) -> None:
        """The stream ends: finish every clip with what there is, and stop."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=30.0)

    def _put(self, kind: str, item: Any) -> None:
        with self._ready:
            if not self.live:
                self._ready.wait_for(lambda: len(self._items) < QUEUE or not self._thread.is_alive(), timeout=5.0)
            if len(self._items) >= QUEUE:
                frames = [i for i, (k, _) in enumerate(self._items) if k in ("frame", "tick")]
                if frames:
                    kind_dropped = self._items[frames[0]][0]
                    del self._items[frames[0]]
                    self.dropped += kind_dropped == "frame"
            self._items.append((kind, item))
            self._ready.notify()

    def _run(self) -> None:
        try:
            while True:
                with self._ready:
                    self._ready.wait_for(lambda: bool(self._items) or self._closed, timeout=POLL_S)
                    if not self._items and self._closed:
                        break
                    kind, item = self._items.popleft() if self._items else ("tick", None)
                    self._ready.notify_all()
                self._handle(kind, item)
                self._pull()
        except Exception as exc:
            log.warning("stream '%s': clips stopped: %s", self.stream_id, exc)
            self.dropped += len(self._clips)
        finally:
            for clip in list(self._clips.values()):
                self._finish(clip)

    def _handle(self, kind: str, item: Any) -> None:
        if kind == "frame":
            t, image = item
            self._encode(image, t)
        elif kind == "open":
            event_id, t = item
            if event_id not in self._clips:
                self._pull()
                name, path = self.store.file(self.stream_id, event_id, ".mp4")
                clip = Clip(event_id, name, path, t - self.config.pre_s * 1000.0)
                self._clips[event_id] = clip
                if self._ring is not None:
                    kept = self._ring.since(0)[1]
                    for packet in kept[self._start_index(kept, clip.start_ms) :]:
                        self._write(clip, packet, self._ring.codec)
        elif kind == "close":
            event_id, t = item
            ending = self._clips.get(event_id)
            if ending is not None and ending.end_ms is None:
                ending.end_ms = t + self.config.post_s * 1000.0

    def _pull(self) -> None:
        """Feed the open clips the packets new in the ring in use (the camera's, or the encoder's)."""
        ring = self.camera if self.passthrough else self.encoded
        if ring is not self._ring:
            self._ring, self._seen = ring, 0
            for clip in list(self._clips.values()):  # the source changed (a reconnect, a fallback): a new file
                self._finish(clip)
        assert ring is not None
        self._seen, packets = ring.since(self._seen)
        for packet in packets:
            for clip in list(self._clips.values()):
                self._write(clip, packet, ring.codec)
                done = clip.end_ms is not None and packet.dts >= clip.end_ms  # decoding order: B-frames before
                if done or (clip.first_ms is not None and packet.pts - clip.first_ms >= self.config.max_s * 1000.0):
                    self._finish(clip)

    @staticmethod
    def _start_index(packets: list[Packet], start_ms: float) -> int:
        """The last keyframe at or before ``start_ms`` (the first keyframe when none is that old)."""
        best = None
        for i, packet in enumerate(packets):
            if packet.key and (best is None or packet.pts <= start_ms):
                best = i
            if packet.pts > start_ms and best is not None:
                break
        return len(packets) if best is None else best

    def _encode(self, image: np.ndarray, t: float) -> None:
        import av

        h, w = image.shape[:2]
        codec = self.encoded.codec
        if self._encoder is None or codec is None or (codec.width, codec.height) != (w, h):
            self._encoder = self._make_encoder(w, h)
            self.encoded.reset(Codec("h264", w, h))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = int(t), MS
        if t - self._last_key_ms >= GOP_MS:
            frame.pict_type = av.video.frame.PictureType.I
            self._last_key_ms = t
        for p in self._encoder.encode(frame):
            dts = p.dts if p.dts is not None else p.pts
            self.encoded.add(Packet(int(p.pts), int(dts), bool(p.is_keyframe), bytes(p)))

    def _make_encoder(self, w: int, h: int) -> Any:
        import av

        last: Exception | None = None
        for name in ENCODERS:
            try:
                encoder: Any = av.CodecContext.create(name, "w")
                encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = w, h, "yuv420p", MS
                # No global header: each keyframe carries its parameter sets, so a clip can start at any of them
                options = {"bf": "0", "forced-idr": "1"}
                if name == "libx264":
                    options |= {"preset": "ultrafast", "tune": "zerolatency", "crf": str(self.config.crf)}
                else:
                    options |= {"preset": "p1", "tune": "ll"}
                encoder.options = options
                encoder.open()
                log.info("stream '%s': clips encoded with %s at %dx%d", self.stream_id, name, w, h)
                return encoder
            except Exception as exc:  # no NVENC here: the next encoder
                last = exc
        raise RuntimeError(f"no H.264 encoder could open: {last}")

    def _write(self, clip: Clip, packet: Packet, codec: Codec | None) -> None:
        import av

        if clip.output is None:
            if not packet.key or codec is None:
                return
            clip.path.parent.mkdir(parents=True, exist_ok=True)
            part = clip.path.with_name(clip.path.name + ".part")
            output = av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"})
            # a stream for muxing only: an encoder's context (add_stream) would not keep what it did not make
            stream: Any = output.add_mux_stream(codec.name, rate=25, width=codec.width, height=codec.height)
            stream.time_base = MS
            clip.output, clip.stream, clip.first_ms = output, stream, float(packet.pts)
        assert clip.first_ms is not None
        if clip.last_dts is not None and packet.dts <= clip.last_dts:
            return  # a time that goes back (a restarted stream): not muxable after what is written
        out = av.Packet(packet.data)
        out.pts, out.dts = packet.pts - int(clip.first_ms), packet.dts - int(clip.first_ms)
        out.time_base, out.stream = MS, clip.stream
        out.is_keyframe = packet.key
        clip.output.mux(out)
        clip.last_ms, clip.last_dts = max(clip.last_ms, float(packet.pts)), packet.dts

    def _finish(self, clip: Clip) -> None:
        self._clips.pop(clip.event_id, None)
        if clip.output is None:
            log.debug("stream '%s': no frames for the clip of event %s", self.stream_id, clip.event_id)
            return
        try:
            clip.output.close()
            clip.path.with_name(clip.path.name + ".part").replace(clip.path)
        except Exception as exc:
            self.dropped += 1
            log.warning("stream '%s': clip of event %s not written: %s", self.stream_id, clip.event_id, exc)
            return
        start_s = (clip.first_ms or 0.0) / 1000.0
        self.store.attach_clip(clip.event_id, clip.name, start_s, clip.last_ms / 1000.0)
        self.finished += 1
