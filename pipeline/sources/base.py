"""The source protocol every capture thread drives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class RawFrame:
    """What a source hands back for one read: the BGR image and its timestamp in the source."""

    image: np.ndarray
    pts_ms: float


class Source(Protocol):
    """A video source with an explicit lifecycle: ``open`` → ``read``… → ``release``.

    ``read`` returns ``None`` at the end of the stream and raises
    :class:`~pipeline.errors.SourceError` when the source fails. ``interrupt``
    may be called from another thread to make a blocked ``read`` return soon.
    """

    description: str
    live: bool

    def open(self) -> None: ...

    def read(self) -> RawFrame | None: ...

    def release(self) -> None: ...

    def interrupt(self) -> None: ...
