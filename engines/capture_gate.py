"""Graph captures and other threads' CUDA work take turns.

A CUDA graph is captured on a side stream while other threads keep working on the GPU. Most of that work is
harmless to the capture (the preprocess threads' uploads run on streams of their own), but a hardware decoder's
(PyNvVideoCodec) synchronizes in ways that invalidate a capture in flight ("operation failed due to a previous
error during capture"): seen with RTSP cameras on NVDEC, whose frames reach the engine only after start-up, so
the engine captures graphs for their shape while they decode. Such work runs under :meth:`CaptureGate.work`; a
capture under :meth:`CaptureGate.capture` waits for the work in flight and holds new work until it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class CaptureGate:
    """Shared turns for GPU work, an exclusive one for a graph capture (captures are rare: a new batch shape)."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._working = 0
        self._capturing = False

    @contextmanager
    def work(self) -> Iterator[None]:
        """GPU work that must not overlap a capture (waits while one is in progress)."""
        with self._turns:
            self._turns.wait_for(lambda: not self._capturing)
            self._working += 1
        try:
            yield
        finally:
            with self._turns:
                self._working -= 1
                if not self._working:
                    self._turns.notify_all()

    @contextmanager
    def capture(self) -> Iterator[None]:
        """A graph capture: one at a time, once the work in flight has finished; new work waits for it."""
        with self._turns:
            self._turns.wait_for(lambda: not self._capturing)
            self._capturing = True
            self._turns.wait_for(lambda: not self._working)
        try:
            yield
        finally:
            with self._turns:
                self._capturing = False
                self._turns.notify_all()


GATE = CaptureGate()
"""The process's one gate: the engines capture under it, the NVDEC sources decode under it."""
