"""RTSP/HTTP streams demuxed and decoded on the CPU by PyAV (``decoder: pyav`` on ``url`` sources).

Beside OpenCV's capture (``decoder: cpu``) it hands on the decoder's I420 planes
(see :mod:`pipeline.sources.pyav`) and it sees the camera's compressed packets,
which it keeps for clips (:mod:`pipeline.media.clips`): an event's clip is then
the camera's own H.264 or H.265, not encoded again. FFmpeg reads over TCP with
open and read timeouts; a stall or the end of the stream is a
:class:`~pipeline.errors.SourceError`, so a supervised stream reconnects.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import SourceError
from pipeline.media.packets import PacketRing
from pipeline.secrecy import redact
from pipeline.sources.base import RawFrame
from pipeline.sources.pyav import PyAvFileSource
from pipeline.sources.video import stream_open_error


class PyAvStreamSource(PyAvFileSource):
    """An RTSP or HTTP stream decoded by PyAV; named without its password."""

    live = True

    def __init__(
        self,
        url: str,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        threads: int | None = None,
        packets: PacketRing | None = None,
    ) -> None:
        super().__init__(url, threads, packets)
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.description = f"stream '{redact(url)}' (PyAV)"

    def open(self) -> None:
        self._open_stream()

    def _open_container(self, av: Any) -> Any:
        options = {"timeout": str(int(self.read_timeout_s * 1e6))}  # µs, FFmpeg's socket timeout
        if self.url.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        try:
            return av.open(self.url, options=options, timeout=(self.open_timeout_s, self.read_timeout_s))
        except (av.FFmpegError, OSError):
            raise stream_open_error(self.url, self.description, self.open_timeout_s) from None

    def _failure(self, exc: Exception) -> SourceError:
        reason = redact(str(getattr(exc, "strerror", None) or type(exc).__name__)).split("\n")[0]
        return SourceError(f"{self.description}: stream stopped delivering frames ({reason})")

    def read(self) -> RawFrame | None:
        try:
            frame = super().read()
        except (TimeoutError, OSError) as exc:
            raise self._failure(exc) from None
        if frame is None and not self._interrupted.is_set():
            raise SourceError(f"{self.description}: stream stopped delivering frames")
        return frame
