"""A source decoded in a child process, its frames handed over through a shared-memory ring.

A decoder that crashes inside FFmpeg takes only its child down (the stream
ends, or reconnects, with a one-line error), and its per-frame Python no
longer shares the interpreter's lock with the pipeline's stages. The decoder
runs in its own process (started from a fork server, so a process
that already holds a CUDA context is never forked) and writes each frame into
one of a few slots of a shared ring; the capture thread copies it out (NumPy's
copy runs outside the lock) and frees the slot. A frame is announced through a
small queue in shared memory (:class:`Announcements`), so a capture thread
that has frames waiting takes the next one without giving up the interpreter's
lock; the pipe carries only the rest (the end, errors, a frame too large for a
slot). The child reports open and read errors as the one-line messages the
same source gives in a thread.

With ``decode_process: gpu`` the ring is on the GPU instead: the child copies
each frame into a slot there (through a pinned buffer of its own, on its own
CUDA stream) and the capture thread hands on a view of that slot, so the
pipeline's process neither copies nor uploads a frame. A slot is freed once
nothing reads it any more (see :func:`~pipeline.sources.ring.leased`). The child's side is
:mod:`pipeline.sources.decoding`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import multiprocessing as mp
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

import numpy as np

from engines.base import FrameFormat
from pipeline.errors import PermanentSourceError, SourceError
from pipeline.sources.base import RawFrame, SourceMaker
from pipeline.sources.decoding import serve
from pipeline.sources.ring import (
    DEVICE_RING_SLOTS,
    LAYOUTS,
    LIVE_SILENCE_S,
    ON_PIPE,
    POLL_S,
    RING_SLOTS,
    STOP_WAIT_S,
    Announcements,
    FreeSlots,
    decode_message,
    leased,
    ring_dir,
)

if TYPE_CHECKING:
    from pipeline.config import SourceConfig


log = logging.getLogger(__name__)


def preloaded(on_gpu: bool) -> list[str]:
    """What the fork server imports once for every child it forks: the sources, and torch for a ring on the GPU
    (each child would otherwise import it itself, about 2 s of a core apiece, when many cameras start together).
    Importing torch starts no CUDA, so the fork server stays safe to fork; the first decoding process started
    decides for the rest of the run."""
    return ["pipeline.sources", "torch", "torch.multiprocessing"] if on_gpu else ["pipeline.sources"]


def end_process(process: Any, wait_s: float, name: str) -> None:
    """Wait ``wait_s`` for a child asked to stop; then terminate it, and kill it if that does not end it either."""
    process.join(wait_s)
    if process.is_alive():
        log.warning("%s: decoding process did not stop; terminating it", name)
        process.terminate()
        process.join(STOP_WAIT_S)
    if process.is_alive():
        process.kill()
        process.join()


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
        self._silence_s = (getattr(config, "read_timeout_s", None) or LIVE_SILENCE_S) + STOP_WAIT_S
        """How long a live source's child may hand on nothing before it is taken as stuck (a frozen decoder)."""
        self.total_frames: int | None = None
        self.frame_format: FrameFormat | None = None
        self._on_gpu = on_gpu
        self._slots = slots or (DEVICE_RING_SLOTS if on_gpu else RING_SLOTS)
        self._device_ring: Any = None
        self._shaped: dict[int, tuple[tuple[int, ...], Any]] = {}
        """Each slot's view in the shape of its last frame (a camera's frames keep their shape)."""
        self._conn: Connection | None = None
        self._process: Any = None
        self._free: FreeSlots | None = None
        self._announced: Announcements | None = None
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
        try:
            self._start()
            self._handshake()
        except BaseException:
            self.release()
            raise

    def _start(self) -> None:
        """Start the decoding process, with its end of the pipe, the ring's free slots and its announcements."""
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(preloaded(self._on_gpu))
        parent, child = ctx.Pipe()
        self._conn, self._free, self._stop = parent, FreeSlots(ctx, self._slots), ctx.Event()
        # Room for a frame in every slot and a message or two; a full queue only makes the child wait.
        self._announced = Announcements(ctx, self._slots + 2)
        self._process = ctx.Process(
            target=serve,
            args=(self._make, self._config, child, self._free, self._announced, self._stop),
            name=f"edgesight-decode {self.description}",
            daemon=True,
        )
        self._process.start()
        child.close()

    def _handshake(self) -> None:
        """The child's source opened: learn its frames' size, make the ring, and wait until the child has mapped
        it (and started CUDA, for one on the GPU)."""
        opened = self._receive()
        while opened is not None and opened[0] == "format":  # known before the first frame: start-up warms up on it
            self.frame_format = FrameFormat(tuple(opened[1]), opened[2])
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
        self._offer_slots()
        ready = self._receive()
        if ready is None or ready[0] != "ready":
            raise SourceError(f"{self.description}: decoding process did not take the ring")
        self._unlink_ring()

    def _offer_slots(self) -> None:
        """Every slot of a new ring is the child's to write into."""
        assert self._free is not None
        for slot in range(self._slots):
            self._free.give(slot)

    def _make_ring(self, frame_bytes: int) -> None:
        """The shared slots, sized for the first frame; the child maps them, then the file's name is removed."""
        assert self._conn is not None
        self._slot_bytes = frame_bytes
        fd, self._ring_path = tempfile.mkstemp(prefix="edgesight-ring-", dir=ring_dir())
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
        self._shaped = {}
        self._conn.send(("gpu-ring", self._device_ring, self._slots))

    def release(self) -> None:
        """Stop the child (terminating it if it does not stop soon) and free the ring."""
        if self._stop is not None:
            self._stop.set()
        process, self._process = self._process, None
        if process is not None and process.pid is not None:
            end_process(process, STOP_WAIT_S, self.description)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._let_go_of_ring()

    def _let_go_of_ring(self) -> None:
        self._unlink_ring()
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
        # Frames still in the pipeline keep their slots' memory alive.
        self._device_ring, self._shaped = None, {}

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
        return self._next_frame()

    def _next_frame(self) -> RawFrame | None:
        """The child's next frame: announced in a slot, or sent on the pipe (``None`` at the end)."""
        entry = self._next_entry()
        if entry is None:
            return None
        return self._piped(self._receive()) if entry[0] == ON_PIPE else self._frame_in(entry)

    def _frame_in(self, entry: Sequence[float], skipped: int = 0) -> RawFrame:
        """The frame an announcement names: a view of its slot on the GPU (the slot given back once nothing reads it),
        or a copy of it out of shared memory (the slot given back at once)."""
        slot, height, width, channels = (int(v) for v in entry[:4])
        shape = (height, width, channels) if channels else (height, width)
        pts_ms, layout = entry[4], LAYOUTS[int(entry[5])]
        if self._device_ring is not None:
            return RawFrame(leased(self._slot_view(slot, shape), self._give_back(), slot), pts_ms, layout, skipped)
        assert self._ring is not None
        count = height * width * (channels or 1)
        image = np.frombuffer(self._ring, np.uint8, count, slot * self._slot_bytes).reshape(shape).copy()
        self._give_back()(slot)
        return RawFrame(image, pts_ms, layout, skipped)

    def _slot_view(self, slot: int, shape: tuple[int, ...]) -> Any:
        """Slot ``slot`` of the ring on the GPU as a frame of ``shape``, made once per slot and shape: a torch call
        gives up the interpreter's lock, so a frame handed on makes as few as it can."""
        cached = self._shaped.get(slot)
        if cached is None or cached[0] != shape:
            count = math.prod(shape)
            cached = self._shaped[slot] = (shape, self._device_ring[slot, :count].view(shape))
        return cached[1]

    def _give_back(self) -> Callable[[int], None]:
        """How a slot this session handed on is given back to the child."""
        assert self._free is not None
        return self._free.give

    def _next_entry(self) -> list[float] | None:
        """The child's next announcement (``None`` once interrupted)."""
        assert self._announced is not None
        waited = 0.0
        while (entry := self._announced.take(POLL_S)) is None:
            if self._interrupted.is_set():
                return None
            waited += POLL_S
            if self.live and waited > self._silence_s:
                raise SourceError(f"{self.description}: decoding process handed on nothing for {waited:.0f} s")
            if self._process is not None and not self._process.is_alive():
                entry = self._announced.take(0)  # announced just before it ended
                if entry is None:
                    raise self._ended()
                return entry
        return entry

    def _piped(self, message: Any) -> RawFrame | None:
        """A message the child sent on the pipe (``None``: interrupted): the end, or a frame larger than a slot
        (errors are raised as they are received)."""
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
        return self._take_message()

    def _take_message(self) -> Any:
        """The message waiting on the pipe; an error message is raised here."""
        assert self._conn is not None
        try:
            data = self._conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise self._ended() from exc
        return self._message_from(data)

    def _message_from(self, data: bytes) -> Any:
        """A message off the pipe; an error message is raised here."""
        message = decode_message(data)
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
