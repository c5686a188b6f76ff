"""The source protocol every capture thread drives."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engines.base import FrameFormat
from engines.yuv import PixelLayout
from pipeline.errors import SourceError


@dataclass(frozen=True, slots=True)
class RawFrame:
    """What a source hands back for one read: the image and its timestamp in the source."""

    image: np.ndarray
    pts_ms: float
    layout: PixelLayout = "bgr"
    """``i420`` when a CPU decoder hands on its own planes (see :mod:`engines.yuv`)."""
    skipped: int = 0
    """Frames the source let go of unread just before this one (one that keeps only its latest frame while the
    pipeline is busy): counted as the stream's drops."""


class Source(Protocol):
    """A video source with an explicit lifecycle: ``open`` → ``read``… → ``release``.

    ``read`` returns ``None`` at the end of the stream and raises
    :class:`~pipeline.errors.SourceError` when the source fails. ``interrupt``
    may be called from another thread to make a blocked ``read`` return soon.
    """

    description: str
    live: bool

    def open(self) -> None: ...

    def read(self) -> RawFrame | None: ...

    def release(self) -> None: ...

    def interrupt(self) -> None: ...


SourceMaker = Callable[..., Source]
"""Builds an (unopened) source from its config (and, where clips want them, ``packets=``: a ring for its compressed
packets): :func:`pipeline.sources.make_source`, or a test's stand-in."""


def frame_format(source: object) -> FrameFormat | None:
    """The shape and layout of an opened source's frames, where it knows them before they flow (files decode their
    first frame when they open); ``None`` where it does not (cameras connect later)."""
    return getattr(source, "frame_format", None)


class DecoderSource:
    """What the decoding sources share: the first frame is decoded at ``open`` (a file that opens but cannot be
    decoded fails there, with its name) and handed on by the first ``read``; timestamps the container does not give
    are counted from the frame rate; ``interrupt`` makes the next ``read`` return ``None``. Subclasses supply
    ``open``, ``_decode``, ``_is_open`` and ``release``."""

    description = "decoder"
    live = False
    total_frames: int | None = None
    """Frames in the file, when the container says (progress bars); ``None`` for live sources."""
    frame_format: FrameFormat | None = None
    """The first frame's shape and layout, once opened (or sooner, where the stream describes them)."""
    on_format: Callable[[FrameFormat], object] | None = None
    """Told the frames' format as soon as the source knows it, before its first frame where it can (a decoding
    process passes it on to the pipeline, which warms the model up on it)."""

    def __init__(self) -> None:
        self._interrupted = threading.Event()
        self._pending: RawFrame | None = None
        self._fps = 0.0
        self._count = 0

    def _decode(self) -> RawFrame | None:
        """The next frame, or ``None`` at the end."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def _prime(self) -> None:
        first = self._decode()
        if first is None:
            self.release()
            raise SourceError(f"{self.description}: opened, but no frame could be decoded (corrupt or empty video?)")
        self._pending = first
        self.frame_format = FrameFormat(tuple(first.image.shape), first.layout)

    def _format_known(self, fmt: FrameFormat) -> None:
        """The frames' format, known before the first frame decodes (from the stream's description)."""
        self.frame_format = fmt
        if self.on_format is not None:
            self.on_format(fmt)

    def _timestamp(self, reported_ms: float) -> float:
        """``reported_ms``, or (when the container gives none after the first frame) the frame count over the rate."""
        pts = reported_ms
        if pts <= 0.0 and self._count > 0 and self._fps > 0:
            pts = self._count * 1000.0 / self._fps
        self._count += 1
        return pts

    def _is_open(self) -> bool:
        raise NotImplementedError

    def read(self) -> RawFrame | None:
        if self._interrupted.is_set():
            return None
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if not self._is_open():
            raise SourceError(f"{self.description}: read before open")
        return self._decode()

    def interrupt(self) -> None:
        self._interrupted.set()
