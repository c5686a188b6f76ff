"""The shared-memory ring between a decoding process and its capture thread: free slots, frame announcements,
and the constants both sides agree on (see :mod:`pipeline.sources.process`)."""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from engines.yuv import PixelLayout

RING_SLOTS = 4
"""Frames a decoding process may be ahead of its capture thread."""
DEVICE_RING_SLOTS = 16
"""With the ring on the GPU: frames of one stream the pipeline may hold at once (its queues, the batch in flight, the
last result kept for motion gating); the child waits for a slot beyond that."""
POLL_S = 0.1
"""How often a waiting side looks at its stop flag (or at whether the other side is still there)."""
STOP_WAIT_S = 2.0
"""How long ``release`` waits for the child to stop before it terminates it."""
LIVE_SILENCE_S = 10.0
"""A live source's child that hands on nothing for this long (its source's ``read_timeout_s`` where it has one),
plus :data:`STOP_WAIT_S` for the child's own error to come first, is taken as stuck."""
SHM_DIR = Path("/dev/shm")
LAYOUTS: tuple[PixelLayout, ...] = ("bgr", "i420")
"""Pixel layouts by the number an announcement carries."""
ON_PIPE = -1.0
"""An announcement's slot when what comes next is the pipe's next message."""


_FRAME_MARK = b"F"
_FRAME_RECORD = struct.Struct("<c7d")
"""A frame announced on a pipe: its mark, the six numbers of an announcement and the frames let go of before it,
packed (no pickling)."""
_FREED_MARK = b"R"
"""Slots given back on a pipe: this byte, then one byte a slot."""
_WANT_MARK = b"W"
"""A request for the next frame on a pipe, with slots given back: this byte, then one byte a slot."""


def frame_record(entry: Iterable[float], skipped: int = 0) -> bytes:
    """An announcement (slot, height, width, channels, timestamp, layout) as a pipe message, with the number of
    frames the sender let go of unread just before it."""
    return _FRAME_RECORD.pack(_FRAME_MARK, *entry, skipped)


def freed_record(slots: Iterable[int]) -> bytes:
    """Freed ring slots as one pipe message."""
    return _FREED_MARK + bytes(slots)


def want_record(slots: Iterable[int]) -> bytes:
    """A request for the next frame, and freed ring slots, as one pipe message."""
    return _WANT_MARK + bytes(slots)


def decode_message(data: bytes) -> tuple[Any, ...]:
    """A message off a decoding pipe: ``("frame", *announcement, skipped)``, ``("free", *slots)``, ``("want",
    *slots)``, or any other, pickled.

    Frames, freed slots and requests are the messages of every frame, so they
    travel as packed bytes, not pickles (a pickle starts with ``0x80``, so no
    mark can be mistaken for one).
    """
    mark = data[:1]
    if mark == _FRAME_MARK:
        return ("frame", *_FRAME_RECORD.unpack(data)[1:])
    if mark == _FREED_MARK:
        return ("free", *data[1:])
    if mark == _WANT_MARK:
        return ("want", *data[1:])
    message: tuple[Any, ...] = ForkingPickler.loads(data)
    return message


def take_or_give_up(semaphore: Any, stop: Event, conn: Connection) -> bool:
    """The child's wait on ``semaphore``; ``False`` when asked to stop or the parent is gone."""
    while not semaphore.acquire(timeout=POLL_S):
        if stop.is_set() or conn.poll(0):  # the parent sends nothing more: readable means it closed its end
            return False
    return True


class Announcements:
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
        if not take_or_give_up(self.space, stop, conn):
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


class FreeSlots:
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
        if not take_or_give_up(self.count, stop, conn) or stop.is_set():
            return None
        slot = next(i for i, free in enumerate(self.flags) if free)
        self.flags[slot] = 0
        return slot


def leased(tensor: Any, on_free: Callable[..., object], *args: object) -> Any:
    """A tensor on ``tensor``'s memory; ``on_free(*args)`` runs once it and every tensor made from it (slices, views,
    a crop that is a view) are gone, not merely this one object. ``tensor`` itself may live on (a slot's view kept
    for the next frame): each lease is freed on its own.

    The new tensor reaches the memory through DLPack, which gives it a storage of
    its own; that storage lives exactly as long as some tensor reads through it.
    Only the DLPack import gives up the interpreter's lock (each torch call does,
    and queues to take it back), so a frame handed on costs one such call.
    """
    from torch.utils.dlpack import from_dlpack, to_dlpack

    lease = from_dlpack(to_dlpack(tensor))
    weakref.finalize(lease.untyped_storage(), on_free, *args)
    return lease


def ring_dir() -> str | None:
    """Memory-backed ``/dev/shm`` where there is one (Linux), else the default temporary directory."""
    return str(SHM_DIR) if SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK) else None
