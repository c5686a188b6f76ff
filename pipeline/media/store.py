"""Events kept on disk: an SQLite index of every event with the names of its snapshot and clip, the files beside
it, and retention by age and by total size."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import EventStoreConfig
from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    line TEXT,
    zone TEXT,
    score REAL NOT NULL,
    snapshot TEXT,
    crop TEXT,
    clip TEXT,
    clip_start REAL,
    clip_end REAL,
    bytes INTEGER NOT NULL DEFAULT 0,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (started_at);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream_id, started_at);
"""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as the store holds it: its last message, and the files made of it."""

    event_id: str
    stream_id: str
    kind: str
    label: str
    started_at: float
    ended_at: float | None
    line: str | None
    zone: str | None
    score: float
    snapshot: str | None
    """The snapshot's file name under the store's folder (``None`` until it is written)."""
    crop: str | None
    clip: str | None
    """The clip's file name under the store's folder (``None`` until the clip is finished)."""
    clip_start: float | None
    """Stream time (seconds, the source's own clock) the clip starts and ends at."""
    clip_end: float | None
    body: dict[str, Any]
    """The event's last message (``edgesight.event/1``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "stream_id": self.stream_id,
            "kind": self.kind,
            "label": self.label,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "line": self.line,
            "zone": self.zone,
            "score": self.score,
            "snapshot": self.snapshot is not None,
            "clip": self.clip is not None,
            "clip_start": self.clip_start,
            "clip_end": self.clip_end,
            "event": self.body,
        }


class EventStore:
    """The index and the files of one folder; safe to use from several threads (one connection, one lock)."""

    def __init__(self, config: EventStoreConfig) -> None:
        self.config = config
        self.root = config.dir.resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.root / "events.db", check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"events.store.dir '{config.dir}': cannot keep events there: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()

    def record(self, body: dict[str, Any]) -> None:
        """An event message (``new``, ``update`` or ``end``): the first makes its row, later ones update it."""
        with self._lock:
            self._db.execute(
                """INSERT INTO events (event_id, stream_id, kind, label, started_at, ended_at, line, zone, score, body)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (event_id) DO UPDATE SET
                     ended_at = excluded.ended_at, score = excluded.score, label = excluded.label,
                     body = excluded.body""",
                (
                    body["event_id"],
                    body["stream_id"],
                    body["kind"],
                    body["label"],
                    body["started_at"],
                    body.get("ended_at"),
                    body.get("line"),
                    body.get("zone"),
                    body["score"],
                    json.dumps(body),
                ),
            )

    def file(self, stream_id: str, event_id: str, suffix: str) -> tuple[str, Path]:
        """A new file's name (relative to the store) and path, in a folder per stream and day."""
        day = time.strftime("%Y-%m-%d", time.gmtime())
        name = f"{stream_id}/{day}/{event_id}{suffix}"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return name, path

    def attach_snapshot(self, event_id: str, snapshot: str, crop: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE events SET snapshot = ?, crop = ?, bytes = ? WHERE event_id = ?",
                (snapshot, crop, self._size(snapshot, crop, self._clip_of(event_id)), event_id),
            )

    def attach_clip(self, event_id: str, clip: str, start: float, end: float) -> None:
        with self._lock:
            row = self._db.execute("SELECT snapshot, crop FROM events WHERE event_id = ?", (event_id,)).fetchone()
            files = (row["snapshot"], row["crop"]) if row is not None else (None, None)
            self._db.execute(
                "UPDATE events SET clip = ?, clip_start = ?, clip_end = ?, bytes = ? WHERE event_id = ?",
                (clip, start, end, self._size(clip, *files), event_id),
            )

    def get(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return _stored(row) if row is not None else None

    def events(
        self,
        stream_id: str | None = None,
        label: str | None = None,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[StoredEvent]:
        """Events started within [``since``, ``until``], newest first, matching every filter given."""
        where: list[str] = []
        args: list[str | float] = []
        for column, value in (("stream_id", stream_id), ("label", label), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at <= ?")
            args.append(until)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_stored(row) for row in rows]

    def path(self, name: str) -> Path:
        """The file a stored name stands for (never outside the store's folder)."""
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"'{name}' is outside the event store")
        return path

    def prune(self, now: float | None = None) -> int:
        """Remove the events (and their files) past the age limit, then the oldest until under the size limit."""
        now = time.time() if now is None else now
        doomed: list[sqlite3.Row] = []
        with self._lock:
            if self.config.max_age_h is not None:
                cutoff = now - self.config.max_age_h * 3600.0
                doomed += self._db.execute(
                    "SELECT * FROM events WHERE COALESCE(ended_at, started_at) < ?", (cutoff,)
                ).fetchall()
            if self.config.max_size_mb is not None:
                gone = {row["event_id"] for row in doomed}
                total = sum(r["bytes"] for r in self._db.execute("SELECT bytes FROM events").fetchall())
                total -= sum(row["bytes"] for row in doomed)
                limit = self.config.max_size_mb * 1e6
                for row in self._db.execute("SELECT * FROM events WHERE bytes > 0 ORDER BY started_at"):
                    if total <= limit:
                        break
                    if row["event_id"] not in gone:
                        doomed.append(row)
                        total -= row["bytes"]
            for row in doomed:
                self._db.execute("DELETE FROM events WHERE event_id = ?", (row["event_id"],))
        for row in doomed:
            for name in (row["snapshot"], row["crop"], row["clip"]):
                if name:
                    self.path(name).unlink(missing_ok=True)
        if doomed:
            log.info("event store: removed %d events past its limits", len(doomed))
        return len(doomed)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _clip_of(self, event_id: str) -> str | None:
        row = self._db.execute("SELECT clip FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return row["clip"] if row is not None else None

    def _size(self, *names: str | None) -> int:
        total = 0
        for name in names:
            if name:
                with contextlib.suppress(OSError):
                    total += self.path(name).stat().st_size
        return total


def _stored(row: sqlite3.Row) -> StoredEvent:
    return StoredEvent(
        event_id=row["event_id"],
        stream_id=row["stream_id"],
        kind=row["kind"],
        label=row["label"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        line=row["line"],
        zone=row["zone"],
        score=row["score"],
        snapshot=row["snapshot"],
        crop=row["crop"],
        clip=row["clip"],
        clip_start=row["clip_start"],
        clip_end=row["clip_end"],
        body=json.loads(row["body"]),
    )
