"""A source decoded in a child process, its frames handed over through a shared-memory ring.

A decoder that crashes inside FFmpeg takes only its child down (the stream
ends, or reconnects, with a one-line error), and its per-frame Python no
longer shares the interpreter's lock with the pipeline's stages. The decoder
runs in its own process (started from a fork server, so a process
that already holds a CUDA context is never forked) and writes each frame into
one of a few slots of a shared ring; the capture thread copies it out (NumPy's
copy runs outside the lock) and frees the slot. A frame is announced through a
small queue in shared memory (:class:`_Announcements`), so a capture thread
that has frames waiting takes the next one without giving up the interpreter's
lock; the pipe carries only the rest (the end, errors, a frame too large for a
slot). The child reports open and read errors as the one-line messages the
same source gives in a thread.

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

from engines.base import FrameFormat
from engines.yuv import PixelLayout
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources.base import RawFrame, Source

if TYPE_CHECKING:
    from pipeline.config import SourceConfig

SourceMaker = Callable[["SourceConfig"], Source]
"""Builds an (unopened) source from its config: :func:`pipeline.sources.make_source`."""

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
LAYOUTS: tuple[PixelLayout, ...] = ("bgr", "i420")
"""Pixel layouts by the number an announcement carries."""
ON_PIPE = -1.0
"""An announcement's slot when what comes next is the pipe's next message."""


def _take_or_give_up(semaphore: Any, stop: Event, conn: Connection) -> bool:
    """The child's wait on ``semaphore``; ``False`` when asked to stop or the parent is gone."""
    while not semaphore.acquire(timeout=POLL_S):
        if stop.is_set() or conn.poll(0):  # the parent sends nothing more: readable means it closed its end
            return False
    return True


class _Announcements:
    """What the child has for the parent, in order: a bounded queue in shared memory of frames in ring slots (slot,
    height, width, channels, timestamp, layout), or marks that the pipe's next message comes next.

    Taking an entry that is already there gives up no lock (a semaphore's fast
    path), where reading a message from the pipe gives it up three times (a
    poll and two reads); only an empty queue waits. Each side counts its own
    entries.
    """

    FIELDS = 6

    def __init__(self, ctx: Any, capacity: int) -> None:
        self.capacity = capacity
        self.ready = ctx.Semaphore(0)
        self.space = ctx.Semaphore(capacity)
        self.entries = ctx.Array("d", capacity * self.FIELDS, lock=False)
        self._count = 0

    def put(self, entry: tuple[float, ...], stop: Event, conn: Connection) -> bool:
        """The child's side: queue ``entry``; ``False`` when asked to stop or the parent is gone."""
        if not _take_or_give_up(self.space, stop, conn):
            return False
        at = (self._count % self.capacity) * self.FIELDS
        self.entries[at : at + self.FIELDS] = entry
        self._count += 1
        self.ready.release()
        return True

    def take(self, timeout: float) -> list[float] | None:
        """The parent's side: the next entry, or ``None`` if there is none within ``timeout`` seconds."""
        if not (self.ready.acquire(timeout=timeout) if timeout > 0 else self.ready.acquire(False)):
            return None
        at = (self._count % self.capacity) * self.FIELDS
        entry: list[float] = self.entries[at : at + self.FIELDS]
        self._count += 1
        self.space.release()
        return entry


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
        if not _take_or_give_up(self.count, stop, conn) or stop.is_set():
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

    def __init__(self, config: SourceConfig, make: SourceMaker, slots: int | None = None, on_gpu: bool = False) -> None:
        self._config = config
        self._make = make
        """Builds the source from ``config``, here and in the child (a module-level function: it is pickled by
        name, and the child imports it)."""
        probe = make(config)  # not opened: only its name and kind
        self.description: str = probe.description
        self.live: bool = probe.live
        self.total_frames: int | None = None
        self.frame_format: FrameFormat | None = None
        self._on_gpu = on_gpu
        self._slots = slots or (DEVICE_RING_SLOTS if on_gpu else RING_SLOTS)
        self._device_ring: Any = None
        self._slot_views: list[Any] = []
        self._conn: Connection | None = None
        self._process: Any = None
        self._free: _FreeSlots | None = None
        self._announced: _Announcements | None = None
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
        # Room for a frame in every slot and a message or two; a full queue only makes the child wait.
        self._announced = _Announcements(ctx, self._slots + 2)
        self._process = ctx.Process(
            target=serve,
            args=(self._make, self._config, child, self._free, self._announced, self._stop),
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
            _, self.description, self.total_frames, frame_bytes, shape, layout = opened
            self.frame_format = FrameFormat(tuple(shape), layout)
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
        entry = self._next_entry()
        if entry is None:
            return None
        if entry[0] == ON_PIPE:
            return self._from_pipe()
        slot, height, width, channels = (int(v) for v in entry[:4])
        shape = (height, width, channels) if channels else (height, width)
        pts_ms, layout = entry[4], LAYOUTS[int(entry[5])]
        count = height * width * (channels or 1)
        assert self._free is not None
        if self._device_ring is not None:
            whole = self._slot_views[slot]
            view = (whole if count == self._slot_bytes else whole[:count]).view(shape)
            return RawFrame(leased(view, self._free.give, slot), pts_ms, layout)
        assert self._ring is not None
        image = np.frombuffer(self._ring, np.uint8, count, slot * self._slot_bytes).reshape(shape).copy()
        self._free.give(slot)
        return RawFrame(image, pts_ms, layout)

    def _next_entry(self) -> list[float] | None:
        """The child's next announcement (``None`` once interrupted)."""
        assert self._announced is not None
        while (entry := self._announced.take(POLL_S)) is None:
            if self._interrupted.is_set():
                return None
            if self._process is not None and not self._process.is_alive():
                entry = self._announced.take(0)  # announced just before it ended
                if entry is None:
                    raise self._ended()
                return entry
        return entry

    def _from_pipe(self) -> RawFrame | None:
        """The message the child announced on the pipe: the end, an error, or a frame larger than a slot."""
        message = self._receive()
        if message is None or message[0] == "end":
            return None
        if message[0] != "inline":
            raise SourceError(f"{self.description}: decoding process sent {message[0]!r}")
        _, image, pts_ms, layout = message  # larger than a slot (the stream changed size)
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
def serve(
    make: SourceMaker, config: SourceConfig, conn: Connection, free: _FreeSlots, announced: _Announcements, stop: Event
) -> None:
    """Open ``config``'s source (built by ``make``), then decode into the ring the parent names, until the end or
    ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    # Terminated (a stop that took too long): unwind, so a ring on the GPU is let go of and the parent's CUDA
    # memory can be freed (a killed child's share of it stays held until the pipeline's process exits).
    signal.signal(signal.SIGTERM, _exit_now)
    source = make(config)
    ring: _HostSlots | _DeviceSlots | None = None
    try:
        source.open()
        first = source.read()
        if first is None:
            raise SourceError(f"{source.description}: opened, but no frame could be decoded")
        total = getattr(source, "total_frames", None)
        conn.send(("opened", source.description, total, first.image.nbytes, first.image.shape, first.layout))
        ring = _map_ring(conn)
        conn.send(("ready",))
        _pump(source, first, _Outbox(conn, announced, stop), free, ring)
    except SourceError as exc:
        _report(conn, announced, stop, ("error", isinstance(exc, PermanentSourceError), str(exc)))
    except (BrokenPipeError, EOFError):
        pass  # the parent has gone
    except Exception as exc:  # reported to the parent as one line, never a traceback here
        first_line = next(iter(str(exc).splitlines()), "")
        text = f"{source.description}: decoding failed ({type(exc).__name__}: {first_line})"
        _report(conn, announced, stop, ("error", False, text))
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


class _Outbox:
    """The child's way to the parent once frames flow: announcements, and pipe messages announced first."""

    def __init__(self, conn: Connection, announced: _Announcements, stop: Event) -> None:
        self.conn, self.announced, self.stop = conn, announced, stop

    def frame(self, slot: int, image: np.ndarray, pts_ms: float, layout: PixelLayout) -> bool:
        channels = image.shape[2] if image.ndim == 3 else 0
        entry = (float(slot), image.shape[0], image.shape[1], channels, pts_ms, LAYOUTS.index(layout))
        return self.announced.put(entry, self.stop, self.conn)

    def message(self, message: tuple[Any, ...]) -> bool:
        if not self.announced.put((ON_PIPE, 0, 0, 0, 0, 0), self.stop, self.conn):
            return False
        self.conn.send(message)
        return True


def _pump(source: Any, first: RawFrame, out: _Outbox, free: _FreeSlots, ring: _HostSlots | _DeviceSlots) -> None:
    frame: RawFrame | None = first
    while frame is not None and not out.stop.is_set():
        image = np.ascontiguousarray(frame.image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.nbytes > ring.slot_bytes:
            if not out.message(("inline", image, frame.pts_ms, frame.layout)):
                return
        else:
            slot = free.take(out.stop, out.conn)
            if slot is None:
                return
            ring.write(slot, image)
            if not out.frame(slot, image, frame.pts_ms, frame.layout):
                return
        frame = source.read()
    if frame is None:
        out.message(("end",))


def _exit_now(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _report(conn: Connection, announced: _Announcements, stop: Event, message: tuple[Any, ...]) -> None:
    """Send ``message`` (an error) whether the parent is still opening the source (it reads the pipe) or reading
    frames (it waits for an announcement)."""
    with contextlib.suppress(BrokenPipeError, OSError):
        _Outbox(conn, announced, stop).message(message)
