"""The decoding process's side: open the source (telling the parent its frames' format as soon as the source knows
it), map the ring the parent made, decode into its free slots and announce each frame, until the end or the stop
flag (see :mod:`pipeline.sources.process`)."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from engines.yuv import PixelLayout
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources.base import DecoderSource, RawFrame, SourceMaker
from pipeline.sources.ring import LAYOUTS, ON_PIPE, Announcements, FreeSlots

if TYPE_CHECKING:
    from pipeline.config import SourceConfig


def serve(
    make: SourceMaker, config: SourceConfig, conn: Connection, free: FreeSlots, announced: Announcements, stop: Event
) -> None:
    """A decoding process of one source: open ``config``'s source (built by ``make``), then decode into the ring the
    parent names, until the end or ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    # Terminated (a stop that took too long): unwind, so a ring on the GPU is let go of and the parent's CUDA
    # memory can be freed (a killed child's share of it stays held until the pipeline's process exits).
    signal.signal(signal.SIGTERM, exit_now)
    decode_into_ring(make, config, conn, _Outbox(conn, announced, stop, free))


def decode_into_ring(make: SourceMaker, config: SourceConfig, conn: Connection, out: Outbox) -> None:
    """Open ``config``'s source, tell the parent its frames' size, map the ring it makes, and decode into the ring
    through ``out`` until the end or a stop; errors go to the parent as one line."""
    source = make(config)
    ring: _HostSlots | _DeviceSlots | None = None
    if isinstance(source, DecoderSource):  # a camera that knows its format on connecting says so at once
        source.on_format = lambda fmt: conn.send(("format", fmt.shape, fmt.layout))
    try:
        source.open()
        first = source.read()
        if first is None:
            raise SourceError(f"{source.description}: opened, but no frame could be decoded")
        total = getattr(source, "total_frames", None)
        conn.send(("opened", source.description, total, first.image.nbytes, first.image.shape, first.layout))
        ring = _map_ring(conn)
        conn.send(("ready",))
        _pump(source, first, out, ring)
    except SourceError as exc:
        _report(out, ("error", isinstance(exc, PermanentSourceError), str(exc)))
    except (BrokenPipeError, EOFError):
        pass  # the parent has gone
    except Exception as exc:  # reported to the parent as one line, never a traceback here
        first_line = next(iter(str(exc).splitlines()), "")
        text = f"{source.description}: decoding failed ({type(exc).__name__}: {first_line})"
        _report(out, ("error", False, text))
    finally:
        source.release()
        if ring is not None:
            ring.close()
        conn.close()


class _HostSlots:
    """The child's side of a ring in shared memory."""

    def __init__(self, path: str, slot_bytes: int, slots: int) -> None:
        self.slot_bytes = slot_bytes
        fd = os.open(path, os.O_RDWR)
        try:
            self._ring = mmap.mmap(fd, slot_bytes * slots)
        finally:
            os.close(fd)

    def write(self, slot: int, image: np.ndarray) -> None:
        view = np.frombuffer(self._ring, np.uint8, image.nbytes, slot * self.slot_bytes).reshape(image.shape)
        np.copyto(view, image)
        del view  # the ring's buffer stays unexported, so it can be closed

    def close(self) -> None:
        self._ring.close()


class _DeviceSlots:
    """The child's side of a ring on the GPU: a frame goes through a pinned buffer into its slot, on a stream of the
    child's own, and is there (the copy waited for) before the parent hears of it."""

    def __init__(self, ring: Any) -> None:
        import torch

        torch.cuda.set_device(ring.device)
        self.slot_bytes = int(ring.shape[1])
        self._ring = ring
        self._stream = torch.cuda.Stream(ring.device)
        self._staging = torch.empty(self.slot_bytes, dtype=torch.uint8, pin_memory=True)
        self._host = self._staging.numpy()

    def write(self, slot: int, image: Any) -> None:
        """Copy ``image`` (host, or a CUDA tensor its decoder has finished: NVDEC's) into ``slot``."""
        import torch

        n = image.nbytes
        if isinstance(image, torch.Tensor):
            with torch.cuda.stream(self._stream):
                self._ring[slot, :n].copy_(image.reshape(-1), non_blocking=True)
        else:
            np.copyto(self._host[:n], image.reshape(-1))
            with torch.cuda.stream(self._stream):
                self._ring[slot, :n].copy_(self._staging[:n], non_blocking=True)
        self._stream.synchronize()

    def close(self) -> None:
        self._ring = None


def _map_ring(conn: Connection) -> _HostSlots | _DeviceSlots:
    message = conn.recv()
    if message[0] == "gpu-ring":
        return _DeviceSlots(message[1])
    _, path, slot_bytes, slots = message
    return _HostSlots(path, slot_bytes, slots)


class Outbox(Protocol):
    """The child's way to the parent once frames flow, and its way to a free slot."""

    def stopped(self) -> bool: ...

    def take_slot(self) -> int | None: ...

    def frame(self, slot: int, image: Any, pts_ms: float, layout: PixelLayout) -> bool: ...

    def message(self, message: tuple[Any, ...]) -> bool: ...


def frame_entry(slot: int, image: Any, pts_ms: float, layout: PixelLayout) -> tuple[float, ...]:
    """What the parent needs to find a frame in the ring: slot, height, width, channels, timestamp, layout."""
    channels = image.shape[2] if image.ndim == 3 else 0
    return (float(slot), image.shape[0], image.shape[1], channels, pts_ms, LAYOUTS.index(layout))


class _Outbox:
    """A decoding process's outbox: announcements in shared memory, pipe messages announced first."""

    def __init__(self, conn: Connection, announced: Announcements, stop: Event, free: FreeSlots) -> None:
        self.conn, self.announced, self.stop, self.free = conn, announced, stop, free

    def stopped(self) -> bool:
        return self.stop.is_set()

    def take_slot(self) -> int | None:
        return self.free.take(self.stop, self.conn)

    def frame(self, slot: int, image: Any, pts_ms: float, layout: PixelLayout) -> bool:
        return self.announced.put(frame_entry(slot, image, pts_ms, layout), self.stop, self.conn)

    def message(self, message: tuple[Any, ...]) -> bool:
        if not self.announced.put((ON_PIPE, 0, 0, 0, 0, 0), self.stop, self.conn):
            return False
        self.conn.send(message)
        return True


def _pump(source: Any, first: RawFrame, out: Outbox, ring: _HostSlots | _DeviceSlots) -> None:
    frame: RawFrame | None = first
    while frame is not None and not out.stopped():
        image = _contiguous(frame.image)
        if str(image.dtype) not in _UINT8 or image.ndim not in (2, 3) or image.nbytes > ring.slot_bytes:
            if not out.message(("inline", _on_host(image), frame.pts_ms, frame.layout)):
                return
        else:
            slot = out.take_slot()
            if slot is None:
                return
            ring.write(slot, image)
            if not out.frame(slot, image, frame.pts_ms, frame.layout):
                return
        frame = source.read()
    if frame is None:
        out.message(("end",))


_UINT8 = ("uint8", "torch.uint8")


def _contiguous(image: Any) -> Any:
    """``image`` in one block: a NumPy array, or a CUDA tensor (NVDEC's frames stay on the GPU)."""
    if isinstance(image, np.ndarray) or not hasattr(image, "is_cuda"):
        return np.ascontiguousarray(image)
    return image.contiguous()


def _on_host(image: Any) -> np.ndarray:
    """A frame for the pipe (rare: larger than a slot) as a host array."""
    return image if isinstance(image, np.ndarray) else image.cpu().numpy()


def exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _report(out: Outbox, message: tuple[Any, ...]) -> None:
    """Send ``message`` (an error) whether the parent is still opening the source (it reads the pipe) or reading
    frames (it waits for an announcement)."""
    with contextlib.suppress(BrokenPipeError, OSError):
        out.message(message)
