"""Who each face track is: matched against the gallery a few times, then remembered for the track's life."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pipeline.analytics.events import Event, Observation, instant
from pipeline.faces.gallery import Match


@dataclass(slots=True)
class TrackFace:
    """What is known of one track's face. ``anon_id`` is stable for the track and says nothing about the person."""

    anon_id: str = field(default_factory=lambda: "anon-" + uuid.uuid4().hex[:12])
    identity: str | None = None
    distance: float | None = None
    attempts: int = 0

    def annotation(self) -> dict[str, object]:
        """The keys a published face detection carries."""
        if self.identity is not None:
            return {"identity": self.identity, "distance": round(float(self.distance or 0.0), 4)}
        return {"identity": None, "anon_id": self.anon_id}


class TrackIdentities:
    """One stream's face tracks. A track is embedded until it matches someone or has had ``attempts`` tries."""

    def __init__(self, stream_id: str, attempts: int) -> None:
        self.stream_id = stream_id
        self.attempts = attempts
        self.tracks: dict[int, TrackFace] = {}

    def face(self, track_id: int) -> TrackFace:
        known = self.tracks.get(track_id)
        if known is None:
            known = self.tracks[track_id] = TrackFace()
        return known

    def wants_embedding(self, track_id: int) -> bool:
        face = self.face(track_id)
        return face.identity is None and face.attempts < self.attempts

    def update(self, track_id: int, match: Match, obs: Observation) -> Event | None:
        """Record one match; the first time a track is recognized, an ``identity`` event (a single ``new``)."""
        face = self.face(track_id)
        face.attempts += 1
        if face.distance is None or match.distance < face.distance:
            face.distance = match.distance
        if match.identity is None or face.identity is not None:
            return None
        face.identity, face.distance = match.identity, match.distance
        return instant(
            "identity", self.stream_id, obs, extra={"identity": match.identity, "distance": round(match.distance, 4)}
        )

    def forget_except(self, live: set[int]) -> None:
        """Drop tracks not in ``live`` once there are many (memory stays bounded on a busy camera)."""
        if len(self.tracks) > 4 * max(64, len(live)):
            self.tracks = {t: f for t, f in self.tracks.items() if t in live}
