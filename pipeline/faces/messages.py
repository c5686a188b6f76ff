"""The typed messages between the publish stage and the face thread."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.analytics.events import Event
from pipeline.faces.identities import TrackFace
from pipeline.messages import FrameResult


@dataclass(frozen=True, slots=True)
class FaceJob:
    """A published frame offered to the face thread, with the track id of each row (``-1``: none)."""

    result: FrameResult
    track_ids: np.ndarray = field(repr=False)

    @property
    def stream_id(self) -> str:
        return self.result.stream_id


@dataclass(frozen=True, slots=True)
class FaceResult:
    """The faces of one frame: ``faces`` (rows, landmarks) with a track id and what is known of each track."""

    faces: FrameResult
    track_ids: np.ndarray = field(repr=False)
    who: tuple[TrackFace | None, ...]
    """Per face, its track's :class:`TrackFace` as it was when this frame was done (``None``: recognition off)."""
    events: tuple[Event, ...]
    detected_here: bool
    """Found by the face thread's own detector (published on ``faces.<stream_id>``), not by the main model."""
    face_ms: float

    @property
    def stream_id(self) -> str:
        return self.faces.stream_id

    def annotations(self) -> list[dict[str, object]]:
        return [{} if w is None else w.annotation() for w in self.who]
