"""What is made of detections: tracking, counting lines, zones, events, redaction, motion gating."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import (
    NAME_PATTERN,
    _Strict,
)


class _Region(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    units: Literal["auto", "normalized", "pixels"] = "auto"
    """``auto``: normalized (0–1, scaled by the frame size) when every coordinate is within [0, 1], else pixels."""
    classes: list[int | str] | None = None
    """Count only these classes, by label or id (default: all)."""
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    """Detections under this confidence do not count here."""
    confirm_frames: int = Field(3, ge=1, le=1000)
    """Frames in a row an object must be on its new side (of a line, of a zone's border) before it counts: box
    jitter near the border then counts nothing. Events keep the frame where the change began."""

    @property
    def normalized(self) -> bool:
        if self.units != "auto":
            return self.units == "normalized"
        return all(0.0 <= v <= 1.0 for p in self.points for v in p)  # type: ignore[attr-defined]

    def wants(self, label: str, class_id: int, confidence: float) -> bool:
        if confidence < self.min_confidence:
            return False
        return self.classes is None or label in self.classes or class_id in self.classes


class LineConfig(_Region):
    """A named directed line; ``in`` is crossing from the right of ``p1 → p2`` to its left, as seen on screen…

    …precisely: the cross product ``(p2 − p1) × (anchor − p1)`` going from negative to positive, in image
    coordinates (x right, y down). The anchor is the bottom-centre of the box.
    """

    points: tuple[tuple[float, float], tuple[float, float]]
    """Two ``[x, y]`` points in source pixels."""

    @model_validator(mode="after")
    def _distinct(self) -> LineConfig:
        if self.points[0] == self.points[1]:
            raise ValueError(f"line '{self.name}': its two points are the same")
        return self


class ZoneConfig(_Region):
    """A named polygon: objects entering and leaving it, how long they stay, how many are in it."""

    points: list[tuple[float, float]] = Field(min_length=3)
    """Three or more ``[x, y]`` points in source pixels."""
    loiter_s: float | None = Field(None, gt=0)
    """Raise a ``loiter`` event for an object inside longer than this (seconds of stream time)."""
    continue_visits: bool = True
    """A new track id that would enter where a lost visitor of its class was last seen, or on top of a visible
    one, continues that visit instead of entering (the tracker lost an object in a crowd, or the detector saw it
    twice). Turn off where objects really appear inside the zone next to one another (a doorway inside it)."""


class TrackingConfig(_Strict):
    """Multi-object tracking (Ultralytics' trackers); every detection gets a ``track_id``."""

    enabled: bool = True
    tracker: Literal["bytetrack", "botsort"] = "botsort"
    """Ultralytics' BoT-SORT (its default for ``track``; here without camera-motion compensation or ReID), or
    ByteTrack."""
    track_buffer: int = Field(30, ge=1, le=10000)
    """Frames a lost track is kept for re-identification before its object is declared gone."""
    match_thresh: float = Field(0.9, gt=0.0, le=1.0)
    """Association cost limit (1 − IoU, fused with the score): 0.9 re-attaches boxes that overlap their track by
    10% or more, which keeps slow, often-occluded walkers on one id better than Ultralytics' 0.8."""
    stitch: bool = True
    """Give a new track the id of a recently lost one it continues (same class, where that one would be now)."""
    new_track_conf: float | None = Field(None, ge=0.0, le=1.0)
    """Confidence a detection needs to start a track (default: ``model.conf``). Higher: fewer tracks from
    duplicate or spurious boxes; a published detection under it that continues no track gets a one-off id."""


class EventStoreConfig(_Strict):
    """Where events, their snapshots and clips are kept on disk (an SQLite index beside the files), and for how
    long: the oldest go first when either limit is passed."""

    dir: Path = Path("edgesight-events")
    """Relative paths are taken from the working directory."""
    max_age_h: float | None = Field(24.0 * 7, gt=0)
    """Events older than this (hours since they ended) are removed with their files; ``None``: no age limit."""
    max_size_mb: float | None = Field(10_000.0, gt=0)
    """Snapshots and clips together at most this size; ``None``: no size limit."""


class SnapshotsConfig(_Strict):
    """A JPEG per event: the object's best frame (its most confident while the event lasted, or the frame of the
    crossing), the full frame with its box drawn, and a crop; redacted as recordings are."""

    quality: int = Field(85, ge=10, le=100)
    max_width: int = Field(1280, ge=64, le=8192)
    """Full frames wider than this are scaled down."""
    crop_margin: float = Field(0.15, ge=0, le=2)
    """Share of the box's size added around it in the crop."""


class ClipsConfig(_Strict):
    """A video clip per event, from ``pre_s`` before it started to ``post_s`` after it ended, H.264 in MP4.

    Each stream's frames (redacted as they leave the box) are encoded with PyAV (NVENC where FFmpeg has it, else
    libx264) into a ring of packets, from which each clip is remuxed.
    """

    pre_s: float = Field(5.0, ge=0, le=60)
    post_s: float = Field(5.0, ge=0, le=60)
    max_s: float = Field(120.0, gt=0, le=3600)
    """A clip of an event that lasts longer is cut at this length."""
    kinds: list[Literal["object", "line_cross", "zone_enter", "zone_exit", "loiter", "identity"]] = [
        "line_cross",
        "zone_enter",
        "loiter",
        "identity",
    ]
    """Events that get a clip (``object`` events, one per tracked object, are many: off by default)."""
    max_width: int = Field(1280, ge=64, le=8192)
    """Encoded clips: frames wider than this are scaled down."""
    crf: int = Field(28, ge=0, le=51)
    """Encoded clips: libx264's quality (lower is better and larger)."""


class EventsConfig(_Strict):
    """What goes out on ``events.<stream_id>`` and ``counts.<stream_id>``, and what is kept of each event."""

    objects: bool = True
    """Lifecycle events (``new``/``update``/``end``) for every tracked object."""
    update_interval_s: float = Field(1.0, gt=0)
    """At most one ``update`` per object (or loitering) event per this much stream time."""
    counts_interval_s: float = Field(1.0, gt=0)
    """How often ``counts`` messages go out (stream time); one more goes out when a stream ends."""
    thumbnails: bool = False
    """Attach a JPEG crop of the object as a third message part to ``new`` events."""
    thumbnail_quality: int = Field(80, ge=10, le=100)
    """JPEG quality of the thumbnails."""
    store: EventStoreConfig | None = None
    """Keep events on disk (for the HTTP API, snapshots and clips); off by default."""
    snapshots: SnapshotsConfig | None = None
    """A snapshot JPEG per event (needs ``store``)."""
    clips: ClipsConfig | None = None
    """A clip per event (needs ``store``)."""

    @model_validator(mode="after")
    def _media_needs_a_store(self) -> EventsConfig:
        if (self.snapshots is not None or self.clips is not None) and self.store is None:
            raise ValueError("events.snapshots and events.clips need events.store (where they are kept)")
        return self


class PrivacyConfig(_Strict):
    """What is hidden in the images that leave the box (event thumbnails, recordings)."""

    redact: list[int | str] = ["face"]
    """Labels (or class ids) whose boxes are redacted; ``[]`` turns redaction off. ``[face, person]`` hides
    whole people with a person detector."""
    method: Literal["pixelate", "blur", "fill"] = "pixelate"
    """How a redacted box is hidden."""


class MotionConfig(_Strict):
    """Motion gating: still frames skip the model (see pipeline/motion.py)."""

    enabled: bool = True
    method: Literal["diff", "mog2"] = "diff"
    """``diff``: against the last frame the model saw; ``mog2``: OpenCV's background subtractor."""
    min_area: float = Field(0.002, gt=0, le=1)
    """Share of the (downscaled) frame that must change for the model to run."""
    pixel_threshold: int = Field(25, ge=1, le=255)
    """``diff``: a gray-level change larger than this counts as change."""
    keepalive_s: float = Field(2.0, ge=0)
    """Run the model at least this often (stream time) even on a still scene."""
    on_still: Literal["reuse", "skip"] = "reuse"
    """``reuse``: publish the last detections again, marked ``reused``; ``skip``: publish nothing for the frame."""
