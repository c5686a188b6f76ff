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
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event, Semaphore
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
POLL_S = 0.1
"""How often a waiting side looks at its stop flag (or at whether the other side is still there)."""
STOP_WAIT_S = 2.0
"""How long ``release`` waits for the child to stop before it terminates it."""
SHM_DIR = Path("/dev/shm")


def _ring_dir() -> str | None:
    """Memory-backed ``/dev/shm`` where there is one (Linux), else the default temporary directory."""
    return str(SHM_DIR) if SHM_DIR.is_dir() and os.access(SHM_DIR, os.W_OK) else None


class ProcessSource:
    """``config``'s source, run in a child process; ``read`` returns copies of the frames it decoded."""

    def __init__(self, config: SourceConfig, slots: int = RING_SLOTS) -> None:
        from pipeline.sources import make_source

        self._config = config
        probe = make_source(config)  # not opened: only its name and kind
        self.description: str = probe.description
        self.live: bool = probe.live
        self.total_frames: int | None = None
        self._slots = slots
        self._conn: Connection | None = None
        self._process: Any = None
        self._free: Semaphore | None = None
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
        self._conn, self._free, self._stop = parent, ctx.Semaphore(0), ctx.Event()
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
            self._make_ring(int(frame_bytes))
        except BaseException:
            self.release()
            raise

    def _make_ring(self, frame_bytes: int) -> None:
        """The shared slots, sized for the first frame; the child maps them, then the file's name is removed."""
        assert self._conn is not None and self._free is not None
        self._slot_bytes = frame_bytes
        fd, self._ring_path = tempfile.mkstemp(prefix="edgesight-ring-", dir=_ring_dir())
        try:
            os.ftruncate(fd, frame_bytes * self._slots)
            self._ring = mmap.mmap(fd, frame_bytes * self._slots)
        finally:
            os.close(fd)
        self._conn.send(("ring", self._ring_path, frame_bytes, self._slots))
        for _ in range(self._slots):
            self._free.release()

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
        if self._conn is None or self._ring is None:
            raise SourceError(f"{self.description}: read before open")
        message = self._receive()
        if message is None:
            return None
        self._unlink_ring()  # the child has mapped the ring by now (it answers only after)
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
        image = np.frombuffer(self._ring, np.uint8, count, slot * self._slot_bytes).reshape(shape).copy()
        assert self._free is not None
        self._free.release()
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
def serve(config: SourceConfig, conn: Connection, free: Semaphore, stop: Event) -> None:
    """Open ``config``'s source, then decode into the ring the parent names, until the end or ``stop``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    from pipeline.sources import make_source

    source = make_source(config)
    ring: mmap.mmap | None = None
    try:
        source.open()
        first = source.read()
        if first is None:
            raise SourceError(f"{source.description}: opened, but no frame could be decoded")
        conn.send(("opened", source.description, getattr(source, "total_frames", None), first.image.nbytes))
        ring, slot_bytes, slots = _map_ring(conn)
        _pump(source, first, conn, free, stop, ring, slot_bytes, slots)
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


def _map_ring(conn: Connection) -> tuple[mmap.mmap, int, int]:
    message = conn.recv()
    _, path, slot_bytes, slots = message
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, slot_bytes * slots), slot_bytes, slots
    finally:
        os.close(fd)


def _pump(
    source: Any,
    first: RawFrame,
    conn: Connection,
    free: Semaphore,
    stop: Event,
    ring: mmap.mmap,
    slot_bytes: int,
    slots: int,
) -> None:
    written = 0
    frame: RawFrame | None = first
    while frame is not None and not stop.is_set():
        image = np.ascontiguousarray(frame.image)
        if image.dtype != np.uint8 or image.nbytes > slot_bytes:
            conn.send(("inline", image, frame.pts_ms, frame.layout))
        elif _wait_for_slot(free, stop, conn):
            slot = written % slots
            view = np.frombuffer(ring, np.uint8, image.nbytes, slot * slot_bytes).reshape(image.shape)
            np.copyto(view, image)
            del view  # the ring's buffer stays unexported, so it can be closed
            conn.send(("frame", slot, image.shape, frame.pts_ms, frame.layout))
            written += 1
        else:
            return
        frame = source.read()
    if frame is None:
        conn.send(("end",))


def _wait_for_slot(free: Semaphore, stop: Event, conn: Connection) -> bool:
    """Wait until the parent has copied a slot out; ``False`` when asked to stop or the parent is gone."""
    while not free.acquire(timeout=POLL_S):
        if stop.is_set() or conn.poll(0):  # the parent sends nothing more: readable means it closed its end
            return False
    return not stop.is_set()


def _send(conn: Connection, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        conn.send(message)
