"""A stream's state, as supervision sets it and observers read it."""

from __future__ import annotations

from enum import Enum


class StreamStatus(str, Enum):
    """A stream's state: a live source's supervision state (the first four), else ``running`` or ``ended``.

    Compares equal to its value, which is what ``status`` messages, metrics and health checks carry.
    """

    CONNECTING = "connecting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    RUNNING = "running"
    ENDED = "ended"

    def __str__(self) -> str:
        return self.value

    @property
    def delivering(self) -> bool:
        """Frames are coming (what readiness counts)."""
        return self in (StreamStatus.ONLINE, StreamStatus.RUNNING)
