"""Sources of one ``decode_group``, decoded together in one child process: a thread each there, one CUDA context.

A decoding process per camera (:mod:`pipeline.sources.process`) keeps each
camera's demuxing and decoding off the pipeline's interpreter lock, but on a
GPU each process has a CUDA context of its own, and many contexts share the
GPU badly. A :class:`DecodeHost` is one process that decodes the sources of a
group, each in a thread of its own (a *session*, from ``open`` to ``release``),
into a ring the pipeline made for that session, exactly as a decoding process
of its own would. A session talks to its thread over a pipe of its own, handed
to the host as a file descriptor: the thread's frames (a slot and its shape),
its end and errors come one way, freed slots and the stop the other.

A source that fails is reported and reconnected on its own, as in a thread; a
crash inside a native decoder takes down the host and so every source of its
group, which then reconnect on a new host. The host stops when its last session
ends.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import signal
import threading
import time
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from engines.yuv import PixelLayout
from pipeline.errors import SourceError
from pipeline.sources.base import RawFrame, SourceMaker
from pipeline.sources.cuda_driver import sleep_on_waits
from pipeline.sources.decoding import decode_into_ring, exit_now, frame_entry
from pipeline.sources.pipe_reader import PipeReader
from pipeline.sources.process import ProcessSource, end_process, preloaded
from pipeline.sources.ring import POLL_S, STOP_WAIT_S, decode_message, frame_record, freed_record, want_record

if TYPE_CHECKING:
    from pipeline.config import SourceConfig

log = logging.getLogger(__name__)

ENDED_WAIT_S = 0.5
"""How long a session whose pipe closed without a word waits to learn whether the whole host died."""
FREED_BATCH_OF_RING = 4
"""A capture thread that is behind its camera tells the thread of freed slots once a quarter of the ring has
gathered (one write instead of one a frame); one about to wait for a frame tells it of every one first."""


# -- the host's side ----------------------------------------------------------------------------------------------
def host(control: Connection, on_gpu: bool) -> None:
    """A group's decoding process: for each ``("serve", make, config, keep_latest)`` on ``control`` (followed by the
    session's pipe, as a file descriptor), decode that source into its ring in a thread of its own; until
    ``("exit",)`` or the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    signal.signal(signal.SIGTERM, exit_now)
    if on_gpu:  # its threads wait on the GPU for every frame: sleeping, not spinning a core each
        with contextlib.suppress(SourceError):  # no driver: the sessions report that themselves
            sleep_on_waits(0)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        while True:
            try:
                message = control.recv()
                if message[0] != "serve":
                    break
                conn = Connection(reduction.recv_handle(control))
            except (EOFError, OSError):
                break
            _, make, config, keep_latest = message
            thread = threading.Thread(target=_session, args=(conn, stop, make, config, keep_latest), daemon=True)
            thread.start()
            threads = [t for t in threads if t.is_alive()] + [thread]
    finally:
        stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _session(
    conn: Connection, stop: threading.Event, make: SourceMaker, config: SourceConfig, keep_latest: bool
) -> None:
    """A host's thread for one source, decoded into its ring (:func:`~pipeline.sources.decoding.decode_into_ring`)."""
    decode_into_ring(make, config, conn, _PipeOutbox(conn, stop, keep_latest))


class _PipeOutbox:
    """A session thread's way to the parent: frames and messages on the session's pipe, which also brings the slots
    the parent has freed and its stop.

    ``keep_latest`` (a camera): a frame goes to the parent only when it has asked for one (``want``), and a request
    is answered by the next frame decoded (the thread sees it once its source's ``read`` returns, so that frame is
    the newest); the thread keeps its latest frame until then and lets the one before go, counting it, so a
    pipeline that cannot take every frame gets each camera's newest and spends nothing on the rest. The latest
    goes out before the stream's end."""

    def __init__(self, conn: Connection, host_stop: threading.Event, keep_latest: bool = False) -> None:
        self.conn = conn
        self._host_stop = host_stop
        self._free: list[int] = []
        self._stop = False
        self._keep_latest = keep_latest
        self._wanted = 0
        self._held: tuple[float, ...] | None = None
        """The announcement of the latest frame no one has asked for yet (its slot first)."""
        self._skipped = 0

    def _take_messages(self, timeout: float) -> None:
        """Take what the parent sent (waiting up to ``timeout`` for the first): freed slots, requests, or the
        stop."""
        try:
            ready = self.conn.poll(timeout)
            while ready:
                message = decode_message(self.conn.recv_bytes())
                if message[0] in ("free", "want"):
                    self._free.extend(message[1:])
                    self._wanted += message[0] == "want"  # answered by the next frame decoded: the newest
                else:
                    self._stop = True
                ready = self.conn.poll(0)
        except (EOFError, OSError):  # the parent let go of the session
            self._stop = True

    def _send(self, entry: tuple[float, ...]) -> None:
        self.conn.send_bytes(frame_record(entry, self._skipped))
        self._skipped = 0

    def _let_go_of_held(self) -> int:
        """Let go of the frame no one asked for, counting it: its slot."""
        assert self._held is not None
        slot, self._held = int(self._held[0]), None
        self._skipped += 1
        return slot

    def stopped(self) -> bool:
        self._take_messages(0)
        return self._stop or self._host_stop.is_set()

    def take_slot(self) -> int | None:
        while not self._free:
            if self.stopped():
                return None
            if self._held is not None:  # every other slot is the pipeline's: the unasked-for frame's goes first
                return self._let_go_of_held()
            self._take_messages(POLL_S)
        return self._free.pop()  # a stop that comes meanwhile is seen before the next frame

    def frame(self, slot: int, image: Any, pts_ms: float, layout: PixelLayout) -> bool:
        entry = frame_entry(slot, image, pts_ms, layout)
        if self._held is not None:  # superseded before anyone asked for it
            self._free.append(self._let_go_of_held())
        if not self._keep_latest or self._wanted:
            self._wanted = max(0, self._wanted - 1)
            self._send(entry)
        else:
            self._held = entry
        return True

    def message(self, message: tuple[Any, ...]) -> bool:
        if message[0] == "inline":  # a frame too large for a slot answers a request too
            self._wanted = max(0, self._wanted - 1)
        elif message[0] == "end" and self._held is not None:  # the stream's last frame is not lost
            self._send(self._held)
            self._held = None
        self.conn.send(message)
        return True


# -- the pipeline's side ------------------------------------------------------------------------------------------
class DecodeHost:
    """The decoding process a group's sources share, started with its first session and stopped after its last."""

    def __init__(self, group: str) -> None:
        self.group = group
        self._lock = threading.Lock()
        self._process: Any = None
        self._control: Connection | None = None
        self._generation = 0
        """Which process sessions belong to: a session of a host that ended does not count for the next one."""
        self._sessions = 0

    @property
    def process(self) -> Any:
        """The host's process while it runs (``multiprocessing``'s handle)."""
        return self._process

    def serve(
        self, make: SourceMaker, config: SourceConfig, on_gpu: bool, keep_latest: bool = False
    ) -> tuple[Connection, int]:
        """Start decoding ``config``'s source (built by ``make``) in a thread of the host, starting the host if it is
        not running (``on_gpu``: with torch preloaded; ``keep_latest``: frames only when asked for, see
        :class:`_PipeOutbox`): the session's end of its pipe, and the host's generation to hand back to
        :meth:`done`."""
        ctx = mp.get_context("forkserver")
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._start(ctx, on_gpu)
            assert self._control is not None
            parent, child = ctx.Pipe()
            try:
                self._control.send(("serve", make, config, keep_latest))
                reduction.send_handle(self._control, child.fileno(), self._process.pid)
            except OSError as exc:
                parent.close()
                raise SourceError(f"decode group '{self.group}': its decoding process is gone ({exc})") from None
            finally:
                child.close()
            self._sessions += 1
            return parent, self._generation

    def done(self, generation: int) -> None:
        """A session of ``generation`` has ended; the host stops after its last."""
        with self._lock:
            if generation != self._generation:
                return
            self._sessions -= 1
            if self._sessions <= 0:
                self._stop()

    def _start(self, ctx: Any, on_gpu: bool) -> None:
        self._stop()
        ctx.set_forkserver_preload(preloaded(on_gpu))
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=host, args=(child, on_gpu), name=f"edgesight-decode group {self.group}", daemon=True
        )
        process.start()
        child.close()
        self._process, self._control = process, parent
        self._generation += 1
        self._sessions = 0

    def _stop(self) -> None:
        process, self._process = self._process, None
        control, self._control = self._control, None
        if control is not None:
            with contextlib.suppress(OSError):
                control.send(("exit",))
        if process is not None:
            end_process(process, STOP_WAIT_S * 2, f"decode group '{self.group}'")
        if control is not None:
            control.close()


_hosts: dict[str, DecodeHost] = {}
_hosts_lock = threading.Lock()


def decode_host(group: str) -> DecodeHost:
    """The host of ``group`` in this process (made on first use)."""
    with _hosts_lock:
        return _hosts.setdefault(group, DecodeHost(group))


class HostedSource(ProcessSource):
    """``config``'s source, decoded in a thread of its group's :class:`DecodeHost`; frames as from
    :class:`~pipeline.sources.process.ProcessSource`.

    A live one keeps its latest frame (:attr:`keeps_latest`): each ``read`` asks the thread for a frame, which
    sends its newest, and the frames the pipeline did not ask for meanwhile are let go of there (counted in the
    next frame's ``skipped``). Its capture thread reads only when its queue has room, so a pipeline past capacity
    spends nothing on the frames it would drop, and every camera drops its oldest frames alike."""

    def __init__(
        self,
        config: SourceConfig,
        make: SourceMaker,
        host_: DecodeHost,
        slots: int | None = None,
        on_gpu: bool = False,
    ) -> None:
        super().__init__(config, make, slots, on_gpu)
        self.host = host_
        self.keeps_latest = self.live
        self._generation: int | None = None
        self._freed: collections.deque[int] = collections.deque()
        """Slots the pipeline let go of, to tell the host: a frame may be let go of in any thread, at any moment
        (even inside a send on the pipe), so the capture thread sends them."""
        self._freed_batch = max(1, self._slots // FREED_BATCH_OF_RING)
        self._reader: PipeReader | None = None
        """The session's pipe once frames flow (:mod:`pipeline.sources.pipe_reader`)."""
        self._asked = False
        """A frame has been asked for and has not come yet."""

    def _start(self) -> None:
        self._freed, self._asked = collections.deque(), False
        self._conn, self._generation = self.host.serve(self._make, self._config, self._on_gpu, self.keeps_latest)
        self._process = self.host.process

    def _offer_slots(self) -> None:
        self._freed.extend(range(self._slots))
        self._send_freed()

    def _give_back(self) -> Any:
        return self._freed.append

    def _send_freed(self, ask: bool = False) -> None:
        """Tell the thread which slots are free again (and, ``ask``, that a frame is wanted); a thread that has
        ended (its last messages still to be read here) needs none."""
        conn, freed = self._conn, self._freed
        assert conn is not None
        if not freed and not ask:
            return
        slots = [freed.popleft() for _ in range(len(freed))]  # only this thread takes, others may add meanwhile
        with contextlib.suppress(OSError):  # the thread has ended: its last messages say why
            conn.send_bytes(want_record(slots) if ask else freed_record(slots))

    def _next_frame(self) -> RawFrame | None:
        message = self._next_message()
        if message is not None and message[0] == "frame":
            self._asked = False
            return self._frame_in(message[1:], int(message[-1]))  # a frame record's last number: frames skipped
        return self._piped(message)

    def _next_message(self) -> Any:
        """The thread's next message (``None`` once interrupted), asking for a frame first where it keeps its
        latest. One already here is taken without waiting; freed slots go to the thread with a request, before
        any wait (it may be waiting for one), or once a few have gathered."""
        reader = self._reader
        if reader is None:  # the first after the handshake: from here on, read through the reader
            assert self._conn is not None
            reader = self._reader = PipeReader(self._conn.fileno())
        if self.keeps_latest and not self._asked:
            self._send_freed(ask=True)
            self._asked = True
        waited = 0.0
        while True:
            try:
                data = reader.take()
            except (EOFError, OSError) as exc:  # the thread, or its whole process, ended
                raise self._ended() from exc
            if data is not None:
                if len(self._freed) >= self._freed_batch:
                    self._send_freed()
                return self._message_from(data)
            self._send_freed()
            if reader.wait(POLL_S):
                continue
            if self._interrupted.is_set():
                return None
            waited += POLL_S
            if self.live and waited > self._silence_s:
                raise SourceError(f"{self.description}: decoding thread handed on nothing for {waited:.0f} s")

    def _ended(self) -> SourceError:
        process = self._process
        if process is not None:
            process.join(ENDED_WAIT_S)  # the pipe closes as the process dies: its exit comes a moment later
            if process.exitcode is not None:
                return SourceError(f"{self.description}: decoding process ended (exit code {process.exitcode})")
        return SourceError(f"{self.description}: decoding thread ended without a word")

    def release(self) -> None:
        """Stop the session's thread (waiting a moment for it to end) and let go of the ring."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            _stop_session(conn, self.description)
        generation, self._generation = self._generation, None
        if generation is not None:
            self.host.done(generation)
        self._process = None
        self._let_go_of_ring()
        self._freed = collections.deque()


def _stop_session(conn: Connection, description: str) -> None:
    """Ask a session's thread to stop and wait (a while) until it has closed its end."""
    with contextlib.suppress(OSError):
        conn.send(("stop",))
    deadline = time.monotonic() + STOP_WAIT_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if conn.poll(left):
                conn.recv_bytes()
        log.warning("%s: decoding thread did not stop within %g s", description, STOP_WAIT_S)
    except (EOFError, OSError):
        pass  # closed: the thread has ended
    finally:
        conn.close()
