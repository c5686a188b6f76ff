"""An on-disk cache of built artifacts (exported ONNX files, TensorRT engines).

Each artifact is named by its model and a digest of its key (everything that
makes one build differ from another: model hash, GPU, versions, precision,
shapes) and has a JSON sidecar recording the key, the artifact's size and
SHA-256. Writes are atomic (temporary file, then rename), so a crash mid-build
never leaves a half-written engine that a later start would load. An artifact
whose sidecar is missing, unreadable, for another key, or whose bytes do not
match is stale: it is logged and rebuilt, never loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.weights import file_sha256

log = logging.getLogger(__name__)

SIDECAR_FORMAT = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/edgesight/engines``, else ``~/.cache/edgesight/engines``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgesight" / "engines"


@dataclass(frozen=True)
class CacheKey:
    """What identifies one build; ``fields`` must be JSON-serializable."""

    stem: str
    suffix: str
    fields: Mapping[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps(dict(self.fields), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def filename(self) -> str:
        return f"{self.stem}-{self.digest}{self.suffix}"


@dataclass(frozen=True)
class CachedArtifact:
    path: Path
    sidecar: dict[str, Any]
    built: bool
    """True when it was built by this call, false when it came from the cache."""


class EngineCache:
    """Look up, validate and atomically store artifacts under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, key: CacheKey) -> tuple[Path, Path]:
        artifact = self.root / key.filename
        return artifact, artifact.with_name(artifact.name + ".json")

    def lookup(self, key: CacheKey) -> CachedArtifact | None:
        """The cached artifact for ``key`` if it is there and intact; ``None`` (logged) when missing or stale."""
        artifact, sidecar_path = self.paths(key)
        if not artifact.is_file():
            return None
        reason = self._stale_reason(key, artifact, sidecar_path)
        if reason is not None:
            log.warning("cached %s is stale (%s); rebuilding it", artifact, reason)
            return None
        sidecar: dict[str, Any] = json.loads(sidecar_path.read_text())
        return CachedArtifact(artifact, sidecar, built=False)

    def _stale_reason(self, key: CacheKey, artifact: Path, sidecar_path: Path) -> str | None:
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except FileNotFoundError:
            return "no sidecar"
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar: {exc}"
        if not isinstance(sidecar, dict) or sidecar.get("format") != SIDECAR_FORMAT:
            return "unknown sidecar format"
        wanted = json.loads(json.dumps(dict(key.fields)))
        found = sidecar.get("key")
        if found != wanted:
            found = found if isinstance(found, dict) else {}
            differ = sorted(k for k in {*wanted, *found} if found.get(k) != wanted.get(k))
            return f"built for a different {', '.join(differ) or 'key'}"
        if sidecar.get("size") != artifact.stat().st_size:
            return "size differs from its sidecar (truncated?)"
        if sidecar.get("sha256") != file_sha256(artifact):
            return "contents differ from its sidecar (corrupt?)"
        return None

    def store(
        self, key: CacheKey, produce: Callable[[Path], None], extra: Mapping[str, Any] | None = None
    ) -> CachedArtifact:
        """Build with ``produce(tmp_path)`` and move the result and its sidecar into place atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        artifact, sidecar_path = self.paths(key)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{key.filename}.", suffix=".tmp", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        started = time.monotonic()
        try:
            produce(tmp)
            sidecar = {
                "format": SIDECAR_FORMAT,
                "key": dict(key.fields),
                "size": tmp.stat().st_size,
                "sha256": file_sha256(tmp),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "build_seconds": round(time.monotonic() - started, 2),
                **(extra or {}),
            }
            sidecar_tmp = _write_temp_text(self.root, key.filename, json.dumps(sidecar, indent=2))
            os.replace(tmp, artifact)  # a reader between these two renames sees a stale pair and rebuilds
            os.replace(sidecar_tmp, sidecar_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return CachedArtifact(artifact, sidecar, built=True)

    def get_or_build(
        self, key: CacheKey, produce: Callable[[Path], None], extra: Mapping[str, Any] | None = None
    ) -> CachedArtifact:
        return self.lookup(key) or self.store(key, produce, extra)

    def invalidate(self, key: CacheKey) -> None:
        """Remove an artifact that turned out unusable (e.g. it fails to deserialize)."""
        for path in self.paths(key):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_temp_text(root: Path, name: str, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".json.tmp", dir=root)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(tmp)
