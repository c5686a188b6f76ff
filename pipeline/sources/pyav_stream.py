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
from pipeline.sources.pyav import PyAvSource
from pipeline.sources.video import stream_open_error


def open_url(av: Any, url: str, description: str, open_timeout_s: float, read_timeout_s: float) -> Any:
    """PyAV's container for a camera: RTSP over TCP, an open timeout, FFmpeg's socket timeout for reads; a stream
    that does not open is one line saying why, as far as the server tells (a wrong password: 401).

    Reads are timed by FFmpeg's socket timeout alone, not by PyAV's read timeout too: that one is checked in a
    callback FFmpeg calls on every socket read, and the callback takes the interpreter lock each time, dozens of
    times a frame. With busy stage threads holding the lock, a camera then read at a fraction of its rate
    (16 loopback 1080p cameras and two busy Python threads on a 2-core box: 9.8 frames/s of 24, against 24.0
    without it).
    """
    options = {"timeout": str(int(read_timeout_s * 1e6))}  # µs, FFmpeg's socket timeout
    if url.startswith("rtsp"):
        options["rtsp_transport"] = "tcp"
    try:
        return av.open(url, options=options, timeout=(open_timeout_s, None))
    except (av.FFmpegError, OSError):
        raise stream_open_error(url, description, open_timeout_s) from None


def failure_reason(exc: BaseException) -> str:
    """An FFmpeg error's reason, without the URL it names (that may carry a password)."""
    text = getattr(exc, "strerror", None) or type(exc).__name__
    return redact(str(text)).split("\n")[0]


class PyAvStreamSource(PyAvSource):
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
        super().__init__(threads, packets)
        self.url = url
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.description = f"stream '{redact(url)}' (PyAV)"

    def open(self) -> None:
        self._open_stream()

    def _open_container(self, av: Any) -> Any:
        return open_url(av, self.url, self.description, self.open_timeout_s, self.read_timeout_s)

    def _failure(self, exc: Exception) -> SourceError:
        return SourceError(f"{self.description}: stream stopped delivering frames ({failure_reason(exc)})")

    def read(self) -> RawFrame | None:
        try:
            frame = super().read()
        except (TimeoutError, OSError) as exc:
            raise self._failure(exc) from None
        if frame is None and not self._interrupted.is_set():
            raise SourceError(f"{self.description}: stream stopped delivering frames")
        return frame
