"""Video files decoded on the GPU's NVDEC engines by PyNvVideoCodec; frames stay on the GPU.

Decoding is the ceiling of a CPU-decoding pipeline with several 1080p
streams: it takes most of the cores. NVDEC frees them, and the frames never
cross the bus: each read hands on a CUDA ``(H, W, 3)`` uint8 BGR tensor, which
the GPU engines letterbox in place. PyNvVideoCodec is optional
(``pip install PyNvVideoCodec``); ``decoder: auto`` falls back to OpenCV.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from engines.base import FrameFormat
from engines.capture_gate import GATE
from pipeline.errors import SourceError
from pipeline.sources.base import RawFrame, Source, frame_format

log = logging.getLogger(__name__)

PREFETCH = 8
"""Frames the decoder's own thread decodes ahead."""


def nvdec_available() -> bool:
    """PyNvVideoCodec is installed and torch sees a CUDA GPU."""
    if importlib.util.find_spec("PyNvVideoCodec") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def bgr_copy(frame: Any, stream: Any = None) -> Any:
    """A decoded RGB frame as our own CUDA ``(H, W, 3)`` uint8 BGR tensor, copied before the decoder may reuse its
    buffer (every later decode call may overwrite it). The copy runs on ``stream`` (made the calling thread's
    current one: a camera's own, which its decoder also works on) or else on the thread's current stream."""
    import torch

    if stream is None:
        stream = torch.cuda.current_stream()
    else:
        torch.cuda.set_stream(stream)
    image = _view(frame, stream).flip(2)  # RGB -> BGR, and a copy
    stream.synchronize()  # the copy is done before the decoder may overwrite
    return image


def _view(frame: Any, stream: Any) -> Any:
    """The decoded frame as a torch tensor (no copy), ordered after the decoding on ``stream``.

    The frame's ``__dlpack__`` is asked directly, with the stream (1 stands for
    the legacy default stream). ``torch.from_dlpack`` first tries a newer
    signature that PyNvVideoCodec refuses with a ``TypeError``, whose message
    costs more than the rest: 52 µs a frame against 16 µs on an H200 box, all
    of it holding the interpreter lock that 64 capture threads share.
    """
    import torch
    from torch.utils.dlpack import from_dlpack

    try:
        return from_dlpack(frame.__dlpack__(stream=stream.cuda_stream or 1))
    except TypeError:  # a producer with another signature: torch's negotiation
        return torch.from_dlpack(frame)


class NvdecFileSource:
    """A video file decoded by NVDEC; ``read`` returns CUDA tensors (BGR, like OpenCV's frames)."""

    live = False

    def __init__(self, path: str | Path, gpu_id: int = 0) -> None:
        self.path = Path(path)
        self.gpu_id = gpu_id
        self.description = f"video file '{self.path}' (NVDEC)"
        self._decoder: Any = None
        self._queued: collections.deque[Any] = collections.deque()
        self._fps = 0.0
        self._count = 0
        self._first: Any = None
        self.frame_format: FrameFormat | None = None
        self._interrupted = threading.Event()

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file not found: '{self.path}'")
        try:
            import PyNvVideoCodec as nvc
        except ImportError as exc:
            raise SourceError(f"{self.description}: PyNvVideoCodec is not installed ({exc})") from exc
        try:
            self._decoder = nvc.ThreadedDecoder(
                str(self.path),
                buffer_size=PREFETCH,
                gpu_id=self.gpu_id,
                use_device_memory=True,
                output_color_type=nvc.OutputColorType.RGB,
            )
            self._fps = float(self._decoder.get_stream_metadata().average_fps or 0.0)
        except Exception as exc:  # the decoder raises plain exceptions for unsupported codecs, corrupt files, ...
            raise SourceError(f"{self.description}: NVDEC cannot decode it ({exc})".split("\n")[0]) from exc
        if not self._fill():
            raise SourceError(f"{self.description}: opened, but no frame could be decoded (corrupt or empty video?)")
        self._first = bgr_copy(self._queued.popleft())  # handed on by the first read; its shape tells the engine
        self.frame_format = FrameFormat(tuple(self._first.shape))

    def _fill(self) -> bool:
        self._queued.extend(self._decoder.get_batch_frames(PREFETCH // 2))
        return bool(self._queued)

    def read(self) -> RawFrame | None:
        if self._interrupted.is_set() or self._decoder is None:
            return None
        image, self._first = self._first, None
        if image is None:
            with GATE.work():  # the copy and its sync never overlap the engine's graph capture
                if not self._queued and not self._fill():
                    return None
                image = bgr_copy(self._queued.popleft())
        pts = self._count * 1000.0 / self._fps if self._fps > 0 else 0.0
        self._count += 1
        return RawFrame(image, pts)

    def rewind(self) -> bool:
        """Start the file over with the same hardware decoder (PyNvVideoCodec keeps a cache of them): making a new
        one holds up the process's other CUDA work. False when it cannot, and the caller reopens."""
        if self._decoder is None or self._interrupted.is_set():
            return False
        self._queued.clear()
        self._first = None
        try:
            self._decoder.reconfigure_decoder(str(self.path))
        except Exception as exc:  # a plain exception from the bindings: reopening is the fallback
            log.debug("%s: could not start over in place (%s); reopening it", self.description, exc)
            return False
        self._count = 0
        return True

    def release(self) -> None:
        decoder, self._decoder = self._decoder, None
        self._queued.clear()
        self._first = None
        if decoder is not None:
            decoder.end()

    def interrupt(self) -> None:
        self._interrupted.set()


class FallbackSource:
    """Opens ``primary``; if that fails, says why and opens ``fallback`` instead."""

    def __init__(self, primary: Source, fallback: Source) -> None:
        self._primary = primary
        self._fallback = fallback
        self._active: Source = primary
        self.description = primary.description
        self.live = primary.live

    def open(self) -> None:
        try:
            self._primary.open()
        except SourceError as exc:
            log.warning("%s; decoding on the CPU instead", exc)
            self._primary.release()
            self._active = self._fallback
            self.description = self._fallback.description
            self._fallback.open()

    def read(self) -> RawFrame | None:
        return self._active.read()

    @property
    def frame_format(self) -> FrameFormat | None:
        return frame_format(self._active)

    def release(self) -> None:
        self._active.release()

    def interrupt(self) -> None:
        self._active.interrupt()
