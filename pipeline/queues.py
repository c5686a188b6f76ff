"""Bounded queues with named overflow policies and counted drops.

``block``: a full queue makes the producer wait (every frame is processed).
``drop_oldest``: a full queue evicts its oldest item (the freshest frame wins and
latency never grows). :class:`EndOfStream` sentinels are never evicted.

All waits are timed and re-check the pipeline's stop event, so shutdown never
hangs on a full or empty queue.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Sequence
from enum import Enum
from typing import Generic, Protocol, TypeVar

from pipeline.messages import EndOfStream

T = TypeVar("T")

WAIT_SLICE_S = 0.05
"""Longest single wait; every wait loop re-checks the stop event at least this often."""


class OverflowPolicy(str, Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


def _stream_of(item: object) -> str:
    return str(getattr(item, "stream_id", "?"))


class BoundedQueue(Generic[T]):
    """A thread-safe bounded FIFO with an overflow policy and per-stream drop counters."""

    def __init__(
        self,
        name: str,
        maxsize: int,
        policy: OverflowPolicy,
        stop_event: threading.Event,
        ready: threading.Event | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"queue '{name}': maxsize must be >= 1, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.policy = OverflowPolicy(policy)
        self._stop = stop_event
        self._ready = ready
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._all_done = threading.Condition(self._lock)
        self._unfinished = 0
        self._drops: Counter[str] = Counter()
        self.high_water = 0

    # -- producer side -------------------------------------------------------------
    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add ``item``; returns False if the stop event was set (or ``timeout`` ran out) first.

        Under ``drop_oldest`` the call never waits for ordinary items: the oldest
        non-sentinel item is evicted and counted. Sentinels always wait for room.
        """
        sentinel = isinstance(item, EndOfStream)
        with self._lock:
            if len(self._items) >= self.maxsize and self.policy is OverflowPolicy.DROP_OLDEST and not sentinel:
                self._evict_oldest()
            if not self._wait_for_room(timeout):
                return False
            self._items.append(item)
            self._unfinished += 1
            self.high_water = max(self.high_water, len(self._items))
            self._not_empty.notify()
        if self._ready is not None and not self._ready.is_set():
            # Only the first producer since the consumer last cleared it sets it (its lock is contended by every
            # camera of a fan-in); the consumer clears it before it scans, so an item put after that scan finds
            # the event clear and sets it.
            self._ready.set()
        return True

    def wait_for_room(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until an item fits; False on stop or time-out (a consumer that takes its input
        only when it can pass its output on takes the freshest input there is)."""
        with self._lock:
            return self._wait_for_room(timeout)

    def count_dropped(self, stream_id: str, n: int) -> None:
        """Count ``n`` of ``stream_id``'s items as dropped before they reached this queue (a source that keeps only
        its latest frame lets the others go)."""
        with self._lock:
            self._drops[stream_id] += n

    def _evict_oldest(self) -> None:
        for i, old in enumerate(self._items):
            if not isinstance(old, EndOfStream):
                del self._items[i]
                self._drops[_stream_of(old)] += 1
                self._finished(1)
                return

    def _wait_for_room(self, timeout: float | None) -> bool:
        remaining = timeout
        while len(self._items) >= self.maxsize:
            if self._stop.is_set():
                return False
            if remaining is not None and remaining <= 0:
                return False
            slice_s = WAIT_SLICE_S if remaining is None else min(WAIT_SLICE_S, remaining)
            self._not_full.wait(slice_s)
            if remaining is not None:
                remaining -= slice_s
        return True

    # -- consumer side -------------------------------------------------------------
    def get(self, timeout: float) -> T | None:
        """Remove and return the oldest item, or ``None`` after ``timeout`` s or on stop."""
        remaining = timeout
        with self._lock:
            while not self._items:
                if self._stop.is_set() or remaining <= 0:
                    return None
                slice_s = min(WAIT_SLICE_S, remaining)
                self._not_empty.wait(slice_s)
                remaining -= slice_s
            return self._pop_locked()

    def get_nowait(self) -> T | None:
        if not self._items:  # without the lock: a fan-in asks every queue it reads, most of them empty
            return None
        with self._lock:
            return self._pop_locked() if self._items else None

    def _pop_locked(self) -> T:
        item = self._items.popleft()
        self._not_full.notify()
        return item

    def task_done(self) -> None:
        """The consumer is done with an item it took (for :meth:`join`; consumers that never join need not call
        it)."""
        with self._lock:
            self._finished(1)

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every item put has been taken and marked done (or dropped); False if
        some are still waiting or in hand then (a sender draining at shutdown)."""
        remaining = timeout
        with self._lock:
            while self._unfinished > 0:
                if remaining <= 0:
                    return False
                slice_s = min(WAIT_SLICE_S, remaining)
                self._all_done.wait(slice_s)
                remaining -= slice_s
            return True

    def _finished(self, n: int) -> None:
        self._unfinished = max(0, self._unfinished - n)
        if self._unfinished == 0:
            self._all_done.notify_all()

    # -- introspection -------------------------------------------------------------
    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def drops(self) -> dict[str, int]:
        """Items evicted so far, per stream id (expected streams included, at 0 until their first drop)."""
        with self._lock:
            return dict(self._drops)

    def expect(self, stream_id: str) -> None:
        """Count drops of ``stream_id`` from 0 now, so its counter exists before anything is dropped."""
        with self._lock:
            self._drops.setdefault(stream_id, 0)

    def wake(self) -> None:
        """Wake every waiter so it re-checks the stop event at once."""
        with self._lock:
            self._not_empty.notify_all()
            self._not_full.notify_all()
        if self._ready is not None:
            self._ready.set()


class QueueView(Protocol):
    """A queue of any item type, as reports and metrics read it."""

    name: str
    high_water: int

    def __len__(self) -> int: ...

    def drops(self) -> dict[str, int]: ...

    def wake(self) -> None: ...


class StreamCount:
    """How many streams a stage serves and how many have ended; streams may be added while it runs.

    ``open_ended``: the pipeline takes streams at run time, so a stage keeps
    going with no stream left, until the stop event.
    """

    def __init__(self, streams: int, open_ended: bool = False) -> None:
        self._lock = threading.Lock()
        self.started = streams
        self.ended = 0
        self.open_ended = open_ended

    def add(self) -> None:
        with self._lock:
            self.started += 1

    def end(self) -> None:
        with self._lock:
            self.ended += 1

    @property
    def live(self) -> int:
        return self.started - self.ended

    def done(self) -> bool:
        return not self.open_ended and self.ended >= self.started


class FanIn(Generic[T]):
    """Reads several queues fairly (round robin) with one timed wait; queues may be added while it is read."""

    def __init__(self, queues: Sequence[BoundedQueue[T]], ready: threading.Event) -> None:
        self._queues = list(queues)
        self._ready = ready
        self._next = 0

    @property
    def ready(self) -> threading.Event:
        """The event every queue of this fan-in sets when it gets an item (new queues must share it)."""
        return self._ready

    @property
    def names(self) -> tuple[str, ...]:
        """The queues read now, by name."""
        return tuple(q.name for q in self._queues)

    def add(self, queue: BoundedQueue[T]) -> None:
        self._queues = [*self._queues, queue]  # a new list: a concurrent scan keeps its own

    def remove(self, queue: BoundedQueue[T]) -> None:
        self._queues = [q for q in self._queues if q is not queue]

    def get(self, timeout: float) -> T | None:
        """The next item from any queue, or ``None`` after ``timeout`` s."""
        self._ready.clear()
        item = self._scan()
        if item is None and self._ready.wait(timeout):
            item = self._scan()
        return item

    def _scan(self) -> T | None:
        n = len(self._queues)
        for k in range(n):
            q = self._queues[(self._next + k) % n]
            item = q.get_nowait()
            if item is not None:
                self._next = (self._next + k + 1) % n
                if isinstance(item, EndOfStream):
                    self.remove(q)  # its stream's last item: read no more (a stream removed at run time is gone)
                return item
        return None
