"""The face gallery: enrolled people and their embeddings in a local SQLite file."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    enrolled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,
    source TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    embeddings: int
    enrolled_at: float


@dataclass(frozen=True, slots=True)
class Match:
    """The nearest enrolled person for one face; ``identity`` is ``None`` when farther than the threshold."""

    identity: str | None
    nearest: str | None
    distance: float


def default_gallery() -> Path:
    """``$XDG_DATA_HOME/edgesight/faces.db``, else ``~/.local/share/edgesight/faces.db``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgesight" / "faces.db"


def gallery_path(configured: str | None) -> Path:
    return Path(configured).expanduser() if configured else default_gallery()


class FaceGallery:
    """Enrolled people; each has one or more embeddings made by one embedder (named, so they are never mixed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"face gallery '{path}' is not a usable SQLite file: {exc}") from exc

    def enroll(self, name: str, embedder: str, vectors: np.ndarray, sources: list[str]) -> int:
        """Add ``vectors`` (one per source image) for ``name``, creating the person if new; returns their count."""
        if not name.strip():
            raise ConfigError("a person's name must not be empty")
        with self._db:
            self._db.execute("INSERT OR IGNORE INTO people (name, enrolled_at) VALUES (?, ?)", (name, time.time()))
            (person_id,) = self._db.execute("SELECT id FROM people WHERE name = ?", (name,)).fetchone()
            self._db.executemany(
                "INSERT INTO embeddings (person_id, embedder, vector, source) VALUES (?, ?, ?, ?)",
                [
                    (person_id, embedder, np.asarray(v, np.float32).tobytes(), src)
                    for v, src in zip(vectors, sources, strict=True)
                ],
            )
        return len(vectors)

    def people(self) -> list[Person]:
        rows = self._db.execute(
            "SELECT p.name, COUNT(e.id), p.enrolled_at FROM people p LEFT JOIN embeddings e ON e.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name"
        ).fetchall()
        return [Person(name, count, at) for name, count, at in rows]

    def remove(self, name: str) -> bool:
        """Forget ``name`` and their embeddings; ``False`` if nobody had that name."""
        with self._db:
            return self._db.execute("DELETE FROM people WHERE name = ?", (name,)).rowcount > 0

    def vectors(self, embedder: str) -> tuple[list[str], np.ndarray]:
        """Every embedding made by ``embedder``: the person's name per row, and the ``(N, D)`` vectors."""
        rows = self._db.execute(
            "SELECT p.name, e.vector FROM embeddings e JOIN people p ON p.id = e.person_id WHERE e.embedder = ?",
            (embedder,),
        ).fetchall()
        if not rows:
            return [], np.zeros((0, 0), np.float32)
        return [r[0] for r in rows], np.stack([np.frombuffer(r[1], np.float32) for r in rows])

    def embedders(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT DISTINCT embedder FROM embeddings")}

    def close(self) -> None:
        self._db.close()


class Matcher:
    """Nearest-neighbour matching against a gallery snapshot (Euclidean distance of normalized embeddings)."""

    def __init__(self, names: list[str], vectors: np.ndarray, threshold: float) -> None:
        self._names = names
        self._vectors = vectors
        self.threshold = threshold

    @classmethod
    def from_gallery(cls, gallery: FaceGallery, embedder: str, threshold: float) -> Matcher:
        names, vectors = gallery.vectors(embedder)
        if not names and gallery.embedders():
            raise ConfigError(
                f"face gallery '{gallery.path}' was enrolled with {sorted(gallery.embedders())}, not '{embedder}': "
                "enroll again with the embedder the pipeline uses"
            )
        return cls(names, vectors, threshold)

    def __len__(self) -> int:
        return len(self._names)

    def match(self, embeddings: np.ndarray) -> list[Match]:
        if not len(self._names):
            return [Match(None, None, float("inf")) for _ in range(len(embeddings))]
        dist = np.linalg.norm(embeddings[:, None, :] - self._vectors[None, :, :], axis=2)
        best = dist.argmin(axis=1)
        out = []
        for row, j in enumerate(best.tolist()):
            d = float(dist[row, j])
            name = self._names[j]
            out.append(Match(name if d <= self.threshold else None, name, d))
        return out
