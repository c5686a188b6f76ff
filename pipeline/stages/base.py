"""What every stage thread shares: the timed wait, the failure hand-off, the busy-time clock and the heartbeat."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from pipeline.messages import EndOfStream
from pipeline.queues import BoundedQueue, StreamCount

GET_TIMEOUT_S = 0.1
"""How long a stage waits on its input before re-checking the stop event."""

FailureHandler = Callable[[str, BaseException], None]
Observe = Callable[[float], None]
"""Called with the seconds per item of each stretch of a stage's work (metrics histograms)."""


class StageClock:
    """Busy time and item count of one stage thread (read by reports, written only by its thread)."""

    __slots__ = ("busy_s", "items", "observer")

    def __init__(self, observer: Observe | None = None) -> None:
        self.busy_s = 0.0
        self.items = 0
        self.observer = observer
        """Called with the seconds per item of each ``add`` (metrics histograms); ``None``: nobody listens."""

    def add(self, seconds: float, items: int = 1) -> None:
        self.busy_s += seconds
        self.items += items
        if self.observer is not None and items:
            self.observer(seconds / items)

    @staticmethod
    def ms_per_item(clocks: Sequence[StageClock]) -> float:
        items = sum(c.items for c in clocks)
        return round(1000.0 * sum(c.busy_s for c in clocks) / items, 3) if items else 0.0


class StageThread(threading.Thread):
    """A named daemon thread whose unexpected exception stops the pipeline instead of vanishing."""

    def __init__(
        self, name: str, stop: threading.Event, on_failure: FailureHandler, observe: Observe | None = None
    ) -> None:
        """``observe``: called with each stretch of work's seconds per item (metrics); ``None``: nobody listens."""
        super().__init__(name=name, daemon=True)
        self.stop_event = stop
        self._on_failure = on_failure
        self.clock = StageClock(observe)
        self.last_beat = time.monotonic()
        """When the thread last went round its loop (``/healthz``: a stage that stops beating is stuck)."""

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def run(self) -> None:
        try:
            self.loop()
        except BaseException as exc:  # reported to the pipeline, which stops and exits non-zero
            self._on_failure(self.name, exc)

    def loop(self) -> None:
        raise NotImplementedError


In = TypeVar("In")
Out = TypeVar("Out")
Item = TypeVar("Item", covariant=True)


class Inbox(Protocol[Item]):
    """Where a stage takes its items: a queue, or a fan-in over several."""

    def get(self, timeout: float) -> Item | EndOfStream | None: ...


class QueueStage(StageThread, Generic[In, Out]):
    """A stage that turns each item it takes into one it puts: the loop such stages share.

    It takes with a timed wait, passes each stream's :class:`EndOfStream` on
    (and ends once every stream has ended; with ``streams`` ``None`` its
    input carries no ends and it runs until stopped), times :meth:`process`
    on the stage's clock, puts with the output queue's policy and stops on the
    stop event. A subclass supplies :meth:`process`, and :meth:`ready` when it
    should take an item only at certain times.
    """

    def __init__(
        self,
        name: str,
        inp: Inbox[In],
        out: BoundedQueue[Out | EndOfStream] | BoundedQueue[Out],
        streams: StreamCount | None,
        stop: threading.Event,
        on_failure: FailureHandler,
        observe: Observe | None = None,
    ) -> None:
        super().__init__(name, stop, on_failure, observe)
        self.inp = inp
        self.out: BoundedQueue[Any] = out
        self.streams = streams
        self.busy = False
        """True while an item is taken but its result not yet put."""

    def stream_added(self) -> None:
        """One more stream's items (and end) will come: a stream added at run time."""
        if self.streams is not None:
            self.streams.add()

    def ready(self) -> bool:
        """Whether to take an item now (waiting at most about :data:`GET_TIMEOUT_S`)."""
        return True

    def process(self, item: In) -> Out:
        raise NotImplementedError

    def loop(self) -> None:
        streams = self.streams
        while not (streams is not None and streams.done()) and not self.stop_event.is_set():
            self.beat()
            if not self.ready():
                continue
            item = self.inp.get(GET_TIMEOUT_S)
            if item is None:
                continue
            if isinstance(item, EndOfStream):
                if streams is not None:
                    streams.end()
                self.out.put(item)
                continue
            self.busy = True
            started = time.perf_counter()
            result = self.process(item)
            self.clock.add(time.perf_counter() - started)
            self.out.put(result)
            self.busy = False
