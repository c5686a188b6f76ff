"""Opening many sources at start-up together, not one after another.

Opening a video file means making its decoder, which takes from a few to a
few hundred milliseconds (an NVDEC decoder most); a box with 32 cameras
played from files would otherwise spend its start-up opening them in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline.sources.base import Source

MAX_OPENERS = 16
"""Sources opened at the same time at most."""


def open_all(sources: Sequence[Source]) -> None:
    """Open every source, several at a time; if any fails, release those that opened and raise the first failure
    (in the order given), so a bad source is reported as if they had been opened in turn."""
    if len(sources) <= 1:
        for source in sources:
            source.open()
        return
    with ThreadPoolExecutor(min(len(sources), MAX_OPENERS), thread_name_prefix="open") as pool:
        futures = [pool.submit(source.open) for source in sources]
        errors = [future.exception() for future in futures]
    failures = [error for error in errors if error is not None]
    if failures:
        for source, error in zip(sources, errors, strict=True):
            if error is None:
                source.release()
        raise failures[0]
