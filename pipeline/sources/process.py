"""A source decoded in a child process, its frames handed over through a shared-memory ring.

A decoder that crashes inside FFmpeg takes only its child down (the stream
ends, or reconnects, with a one-line error), and its per-frame Python no
longer shares the interpreter's lock with the pipeline's stages. The decoder
runs in its own process (started from a fork server, so a process
that already holds a CUDA context is never forked) and writes each frame into
one of a few slots of a shared ring; the capture thread copies it out (NumPy's
copy runs outside the lock) and frees the slot. Only a short message per frame
crosses the pipe. The child reports open and read errors as the one-line
messages the same source gives in a thread.

With ``decode_process: gpu`` the ring is on the GPU instead: the child copies
each frame into a slot there (through a pinned buffer of its own, on its own
CUDA stream) and the capture thread hands on a view of that slot, so the
pipeline's process neither copies nor uploads a frame. A slot is freed once
nothing reads it any more (see :func:`leased`).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing as mp
import os
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources.base import RawFrame

if TYPE_CHECKING:
    from pipeline.config import SourceConfig

log = logging.getLogger(__name__)

RING_SLOTS = 4
"""Frames a decoding process may be ahead of its capture thread."""
DEVICE_RING_SLOTS = 16
"""With the ring on the GPU: frames of one stream the pipeline may hold at once (its queues, the batch in flight, the
last result kept for motion gating); the child waits for a slot beyond that."""
POLL_S = 0.1
"""How often a waiting side looks at its stop flag (or at whether the other side is still there)."""
STOP_WAIT_S = 2.0
"""How long ``release`` waits for the child to stop before it terminates it."""
SHM_DIR = Path("/dev/shm")


class _FreeSlots:
    """The ring slots the child may write into: a count to wait on, and a flag for each slot (the pipeline may let go
    of frames in any order)."""

    def __init__(self, ctx: Any, slots: int) -> None:
        self.count = ctx.Semaphore(0)
        self.flags = ctx.Array("b", slots, lock=False)

    def give(self, slot: int) -> None:
        self.flags[slot] = 1
        self.count.release()

    def take(self, stop: Event, conn: Connection) -> int | None:
        """A free slot, now the child's; ``None`` when asked to stop or the parent is gone."""
        while not self.count.acquire(timeout=POLL_S):
            if stop.is_set() or conn.poll(0):  # the parent sends nothing more: readable means it closed its end
                return None
        if stop.is_set():
            return None
        slot = next(i for i, free in enumerate(self.flags) if free)
        self.flags[slot] = 0
        return slot


def leased(tensor: Any, on_free: Callable[..., object], *args: object) -> Any:
    """A tensor on ``tensor``'s memory; ``on_free(*args)`` runs once it and every tensor made from it (slices, views,
    a crop that is a view) are gone, not merely this one object.

    The new tensor reaches the memory through DLPack, whose hold on ``tensor``
    lasts as long as that memory is in use from any tensor made from it.
    """
    from torch.utils.dlpack import from_dlpack, to_dlpack

    weakref.finalize(tensor, on_free, *args)
    return from_dlpack(to_dlpack(tensor))


def _ring_dir() -> str | None:
    """Memory-backed ``/dev/shm`` where there is one (Linux), else the default temporary directory."""
    return str(SHM_DIR) if SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK) else None


class ProcessSource:
    """``config``'s source, run in a child process; ``read`` returns copies of the frames it decoded (``on_gpu``:
    views of them in a ring on the GPU)."""

    def __init__(self, config: SourceConfig, slots: int | None = None, on_gpu: bool = False) -> None:
        from pipeline.sources import make_source

        self._config = config
        probe = make_source(config)  # not opened: only its name and kind
        self.description: str = probe.description
        self.live: bool = probe.live
        self.total_frames: int | None = None
        self._on_gpu = on_gpu
        self._slots = slots or (DEVICE_RING_SLOTS if on_gpu else RING_SLOTS)
        self._device_ring: Any = None
        self._slot_views: list[Any] = []
        self._conn: Connection | None = None
        self._process: Any = None
        self._free: _FreeSlots | None = None
        self._stop: Event | None = None
        self._ring: mmap.mmap | None = None
        self._ring_path: str | None = None
        self._slot_bytes = 0
        self._interrupted = threading.Event()

    @property
    def pid(self) -> int | None:
        """The decoding process's id while it runs."""
        return self._process.pid if self._process is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["pipeline.sources"])
        parent, child = ctx.Pipe()
        self._conn, self._free, self._stop = parent, _FreeSlots(ctx, self._slots), ctx.Event()
        self._process = ctx.Process(
            target=serve,
            args=(self._config, child, self._free, self._stop),
            name=f"edgesight-decode {self.description}",
            daemon=True,
        )
        try:
            self._process.start()
            child.close()
            opened = self._receive()
            if opened is None:
                raise SourceError(f"{self.description}: interrupted while opening")
            if opened[0] != "opened":
                raise SourceError(f"{self.description}: decoding process answered {opened[0]!r} to open")
            _, self.description, self.total_frames, frame_bytes = opened
            if self._on_gpu:
                self._make_device_ring(int(frame_bytes))
            else:
                self._make_ring(int(frame_bytes))
            for slot in range(self._slots):
                self._free.give(slot)
            ready = self._receive()  # the child has mapped the ring (and started CUDA, for one on the GPU)
            if ready is None or ready[0] != "ready":
                raise SourceError(f"{self.description}: decoding process did not take the ring")
            self._unlink_ring()
        except BaseException:
            self.release()
            raise

    def _make_ring(self, frame_bytes: int) -> None:
        """The shared slots, sized for the first frame; the child maps them, then the file's name is removed."""
        assert self._conn is not None
        self._slot_bytes = frame_bytes
        fd, self._ring_path = tempfile.mkstemp(prefix="edgesight-ring-", dir=_ring_dir())
        try:
            os.ftruncate(fd, frame_bytes * self._slots)
            self._ring = mmap.mmap(fd, frame_bytes * self._slots)
        finally:
            os.close(fd)
        self._conn.send(("ring", self._ring_path, frame_bytes, self._slots))

    def _make_device_ring(self, frame_bytes: int) -> None:
        """The shared slots on the GPU, allocated here and handed to the child (CUDA IPC) to write into."""
        assert self._conn is not None
        import torch
        import torch.multiprocessing  # registers the pickling that hands a CUDA tensor to another process

        if not torch.cuda.is_available():
            raise SourceError(f"{self.description}: decode_process: gpu needs a CUDA GPU, and torch sees none")
        self._slot_bytes = frame_bytes
        self._device_ring = torch.empty((self._slots, frame_bytes), dtype=torch.uint8, device="cuda")
        self._slot_views = list(self._device_ring.unbind())
        self._conn.send(("gpu-ring", self._device_ring, self._slots))

    def release(self) -> None:
        """Stop the child (terminating it if it does not stop soon) and free the ring."""
        if self._stop is not None:
            self._stop.set()
        process, self._process = self._process, None
        if process is not None and process.pid is not None:
            process.join(STOP_WAIT_S)
            if process.is_alive():
                log.warning("%s: decoding process did not stop; terminating it", self.description)
                process.terminate()
                process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._unlink_ring()
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
        self._device_ring, self._slot_views = None, []  # frames still in the pipeline keep their slots' memory alive

    def _unlink_ring(self) -> None:
        path, self._ring_path = self._ring_path, None
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def interrupt(self) -> None:
        self._interrupted.set()
        if self._stop is not None:
            self._stop.set()

    # -- frames ------------------------------------------------------------------------------
    def read(self) -> RawFrame | None:
        if self._interrupted.is_set():
            return None
        if self._conn is None or (self._ring is None and self._device_ring is None):
            raise SourceError(f"{self.description}: read before open")
        message = self._receive()
        if message is None:
            return None
        kind = message[0]
        if kind == "end":
            return None
        if kind == "inline":  # larger than a slot (the stream changed size): it came through the pipe
            _, image, pts_ms, layout = message
            return RawFrame(image, pts_ms, layout)
        if kind != "frame":
            raise SourceError(f"{self.description}: decoding process sent {kind!r}")
        _, slot, shape, pts_ms, layout = message
        count = int(np.prod(shape))
        assert self._free is not None
        if self._device_ring is not None:
            whole = self._slot_views[slot]
            view = (whole if count == self._slot_bytes else whole[:count]).view(shape)
            return RawFrame(leased(view, self._free.give, slot), pts_ms, layout)
        assert self._ring is not None
        image = np.frombuffer(self._ring, np.uint8, count, slot * self._slot_bytes).reshape(shape).copy()
        self._free.give(slot)
        return RawFrame(image, pts_ms, layout)

    def _receive(self) -> Any:
        """The child's next message (``None`` once interrupted); its error messages are raised here."""
        assert self._conn is not None
        while not self._conn.poll(POLL_S):
            if self._interrupted.is_set():
                return None
            if self._process is not None and not self._process.is_alive() and not self._conn.poll(0):
                raise self._ended()
        try:
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._ended() from exc
        if message[0] == "error":
            _, permanent, text = message
            raise (PermanentSourceError if permanent else SourceError)(text)
        return message

    def _ended(self) -> SourceError:
        """The error for a child that went away without a word (killed, or crashed inside the decoder)."""
        code = None
        if self._process is not None:
            self._process.join(STOP_WAIT_S)
            code = self._process.exitcode
        return SourceError(f"{self.description}: decoding process ended (exit code {code})")


# -- the child's side ----------------------------------------------------------------------------
def serve(config: SourceConfig, conn: Connection, free: _FreeSlots, stop: Event) -> None:
    """Open ``config``'s source, then decode into the ring the parent names, until the end or ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    # Terminated (a stop that took too long): unwind, so a ring on the GPU is let go of and the parent's CUDA
    # memory can be freed (a killed child's share of it stays held until the pipeline's process exits).
    signal.signal(signal.SIGTERM, _exit_now)
    from pipeline.sources import make_source

    source = make_source(config)
    ring: _HostSlots | _DeviceSlots | None = None
    try:
        source.open()
        first = source.read()
        if first is None:
            raise SourceError(f"{source.description}: opened, but no frame could be decoded")
        conn.send(("opened", source.description, getattr(source, "total_frames", None), first.image.nbytes))
        ring = _map_ring(conn)
        conn.send(("ready",))
        _pump(source, first, conn, free, stop, ring)
    except SourceError as exc:
        _send(conn, ("error", isinstance(exc, PermanentSourceError), str(exc)))
    except (BrokenPipeError, EOFError):
        pass  # the parent has gone
    except Exception as exc:  # reported to the parent as one line, never a traceback here
        _send(conn, ("error", False, f"{source.description}: decoding failed ({type(exc).__name__}: {exc})"))
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

    def write(self, slot: int, image: np.ndarray) -> None:
        import torch

        n = image.nbytes
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


def _pump(
    source: Any, first: RawFrame, conn: Connection, free: _FreeSlots, stop: Event, ring: _HostSlots | _DeviceSlots
) -> None:
    frame: RawFrame | None = first
    while frame is not None and not stop.is_set():
        image = np.ascontiguousarray(frame.image)
        if image.dtype != np.uint8 or image.nbytes > ring.slot_bytes:
            conn.send(("inline", image, frame.pts_ms, frame.layout))
        else:
            slot = free.take(stop, conn)
            if slot is None:
                return
            ring.write(slot, image)
            conn.send(("frame", slot, image.shape, frame.pts_ms, frame.layout))
        frame = source.read()
    if frame is None:
        conn.send(("end",))


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        conn.send(message)
