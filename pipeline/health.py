"""Health and readiness verdicts, and a status file for container health checks.

The metrics port (:mod:`pipeline.api`) serves ``/metrics`` (Prometheus text
format), ``/healthz`` (200 while the process is alive, no stage has failed and
every processing stage keeps going round its loop) and ``/readyz`` (200 once the
engine is loaded and at least ``ready_share`` of the streams are online) from the
verdicts here. The same verdicts, with per-stream detail, are written atomically
to a JSON status file every few seconds when one is configured; ``edgesight
health --status-file F`` checks it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.secrecy import redact_json

if TYPE_CHECKING:
    from pipeline.view import PipelineView

log = logging.getLogger(__name__)

STATUS_FILE_INTERVAL_S = 5.0


def health(pipeline: PipelineView, stale_after_s: float) -> dict[str, Any]:
    """``healthy``: no stage failed, and every processing stage (not capture: cameras have their own
    supervision) went round its loop within ``stale_after_s``."""
    now = time.monotonic()
    stuck = [
        t.name
        for t in pipeline.stages
        if not t.name.startswith("capture-")
        and t.is_alive()
        and not getattr(t, "waiting", False)
        and now - t.last_beat > stale_after_s
    ]
    return {"healthy": pipeline.failure is None and not stuck, "failure": pipeline.failure, "stuck": stuck}


def readiness(pipeline: PipelineView, ready_share: float) -> dict[str, Any]:
    """``ready``: the engine is loaded and at least ``ready_share`` of the streams are online (or running)."""
    streams = pipeline.stream_states()
    online = sum(s.state.delivering for s in streams)
    needed = math.ceil(ready_share * len(streams)) if streams else 1
    return {
        "ready": pipeline.engine is not None and bool(streams) and online >= needed,
        "online": online,
        "needed": needed,
        "streams": {s.stream_id: {"state": s.state, "published": s.published} for s in streams},
    }


class StatusFile:
    """Writes health and readiness to a JSON file every few seconds (atomically: write, then rename)."""

    def __init__(self, pipeline: PipelineView, path: Path, ready_share: float, stale_after_s: float) -> None:
        self.path = path
        self._pipeline = pipeline
        self._ready_share = ready_share
        self._stale_after_s = stale_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-file", daemon=True)
        path.parent.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.write()
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(STATUS_FILE_INTERVAL_S):
            self.write()

    def write(self, stopping: bool = False) -> None:
        status = {
            "at": time.time(),
            "pid": os.getpid(),
            "stopping": stopping,
            **health(self._pipeline, self._stale_after_s),
            **readiness(self._pipeline, self._ready_share),
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(redact_json(status)))
        os.replace(tmp, self.path)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.write(stopping=True)


def check_status_file(path: Path, max_age_s: float) -> tuple[bool, str]:
    """For container health checks: healthy, written within ``max_age_s``, and not stopping."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"cannot read status file '{path}': {exc}"
    age = time.time() - float(status.get("at", 0))
    if age > max_age_s:
        return False, f"status file '{path}' is {age:.0f} s old (the pipeline is not running?)"
    if status.get("stopping"):
        return False, "the pipeline is stopping"
    if not status.get("healthy"):
        return False, f"unhealthy: failure={status.get('failure')} stuck={status.get('stuck')}"
    return (
        True,
        f"healthy; ready={status.get('ready')} ({status.get('online')}/{len(status.get('streams', {}))} online)",
    )
