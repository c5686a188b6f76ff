"""Video files decoded by FFmpeg through PyAV, handed on as the decoder's own I420 planes.

OpenCV's capture converts every frame to BGR on the CPU before Python sees it;
at 1080p that conversion is about a fifth of the decoding work, and BGR is
twice the bytes to copy and upload. This source hands on the decoder's planar
YUV 4:2:0 instead (:mod:`engines.yuv`): the GPU engines convert it on the
device, inside the CUDA graph that letterboxes the batch, and anything else
that needs the pixels converts it as OpenCV would. Frames in another pixel
format (full-range "JPEG" YUV, 4:2:2, 4:4:4, 10-bit, odd sizes) are converted
to BGR by FFmpeg. Decoding runs outside the GIL. PyAV is optional
(``pip install av``); ``decoder: auto`` uses it when it is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.yuv import check_i420
from pipeline.errors import SourceError
from pipeline.media.packets import PacketRing
from pipeline.sources.base import DecoderSource, RawFrame
from pipeline.sources.video import check_video_file

PASSTHROUGH = ("h264", "hevc")
"""Codecs whose packets are kept for clips (MP4 holds them, browsers play them)."""
JPEG_RANGE = 2
"""FFmpeg's ``AVCOL_RANGE_JPEG``: full-range YUV, which the BT.601 limited-range conversion would get wrong."""


def pyav_available() -> bool:
    """PyAV is installed."""
    return importlib.util.find_spec("av") is not None


class PyAvSource(DecoderSource):
    """What PyAV's file and camera sources share: a container's first video stream decoded on the CPU; ``read``
    returns I420 arrays (BGR for other pixel formats).

    With ``packets``, each H.264 or H.265 packet the demuxer reads is also kept there, as it came (clips cut
    without encoding again: :mod:`pipeline.media.clips`). Subclasses open the container.
    """

    def __init__(self, threads: int | None = None, packets: PacketRing | None = None) -> None:
        super().__init__()
        self.threads = threads
        self.packets = packets
        self._container: Any = None
        self._frames: Iterator[Any] | None = None

    def _open_container(self, av: Any) -> Any:
        raise NotImplementedError

    def _open_stream(self) -> None:
        try:
            import av
        except ImportError as exc:
            raise SourceError(f"{self.description}: PyAV is not installed (pip install av): {exc}") from exc
        self._container = self._open_container(av)
        try:
            stream = self._container.streams.video[0]
        except IndexError as exc:
            self.release()
            raise SourceError(f"cannot open {self.description}: not a video (no video stream)") from exc
        stream.thread_type = "AUTO"  # frame and slice threads, as OpenCV's capture uses
        if self.threads is not None:
            stream.codec_context.thread_count = self.threads
        self._fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        self.total_frames = int(stream.frames) or None
        ctx = stream.codec_context
        tap = self.packets if ctx.name in PASSTHROUGH else None
        if tap is not None:
            tap.start(stream)
        self._frames = self._decoded(self._container, stream, tap)
        try:
            self._prime()
        except SourceError:
            self.release()
            raise

    @staticmethod
    def _decoded(container: Any, stream: Any, tap: PacketRing | None) -> Iterator[Any]:
        """The stream's frames, each packet kept in ``tap`` on its way to the decoder."""
        for packet in container.demux(stream):
            if tap is not None:
                tap.add_demuxed(packet)
            yield from packet.decode()

    def _decode(self) -> RawFrame | None:
        import av

        assert self._frames is not None
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as exc:
            raise self._failure(exc) from exc
        pts = self._timestamp(frame.time * 1000.0 if frame.time is not None else 0.0)
        planar = (
            frame.format.name == "yuv420p"
            and frame.color_range != JPEG_RANGE
            and check_i420((frame.height * 3 // 2, frame.width)) is None
        )
        if planar:
            return RawFrame(frame.to_ndarray(format="yuv420p"), pts, "i420")
        return RawFrame(frame.to_ndarray(format="bgr24"), pts)

    def _failure(self, exc: Exception) -> SourceError:
        return SourceError(f"{self.description}: decoding failed at frame {self._count} ({exc})")

    def _is_open(self) -> bool:
        return self._frames is not None

    def release(self) -> None:
        container, self._container = self._container, None
        self._frames = None
        if container is not None:
            container.close()


class PyAvFileSource(PyAvSource):
    """A video file decoded on the CPU by PyAV (see :class:`PyAvSource`)."""

    def __init__(self, path: str | Path, threads: int | None = None, packets: PacketRing | None = None) -> None:
        super().__init__(threads, packets)
        self.path = Path(path)
        self.description = f"video file '{self.path}'"

    def open(self) -> None:
        check_video_file(self.path)
        self._open_stream()

    def _open_container(self, av: Any) -> Any:
        try:
            return av.open(str(self.path))
        except av.FFmpegError as exc:
            raise SourceError(f"cannot open {self.description}: not a video or an unsupported format ({exc})") from exc
