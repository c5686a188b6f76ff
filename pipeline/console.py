"""The terminal view of ``edgesight run``: a live table per stream, and a progress bar for files.

On a terminal the table is redrawn in place once a second; when stderr is a
file or a pipe (a service's log), one compact line per second is written
instead. ``--quiet`` turns both off; ``--log-format json`` makes the logs JSON
lines for log collectors.
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.view import PipelineView

BAR_WIDTH = 20


def progress_bar(done: int, total: int | None) -> str:
    """``[#######.............]  35% 240/686`` for a source of known length, else ``live``."""
    if not total:
        return "live"
    share = min(1.0, done / total)
    filled = round(share * BAR_WIDTH)
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share * 100:3.0f}% {done}/{total}"


class LiveView:
    """Renders the pipeline's streams; :meth:`draw` writes them (in place on a terminal)."""

    def __init__(self, pipeline: PipelineView, out: IO[str]) -> None:
        self._pipeline = pipeline
        self._out = out
        self._tty = bool(getattr(out, "isatty", lambda: False)())
        self._last: dict[str, tuple[float, int]] = {}
        self._drawn = 0

    def rows(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for s in self._pipeline.stream_states():
            then, before = self._last.get(s.stream_id, (now, s.published))
            fps = (s.published - before) / (now - then) if now > then else 0.0
            self._last[s.stream_id] = (now, s.published)
            out.append(
                {
                    "stream": s.stream_id,
                    "state": s.state,
                    "fps": fps,
                    "latency_ms": s.latency_ms,
                    "drops": sum(s.drops.values()),
                    "progress": progress_bar(s.captured, s.total),
                }
            )
        return out

    def render(self) -> list[str]:
        rows = self.rows()
        width = max([6, *(len(r["stream"]) for r in rows)])
        head = f"{'stream':<{width}}  {'state':<12} {'frames/s':>8} {'latency':>9} {'drops':>6}  progress"
        lines = [head]
        for r in rows:
            lines.append(
                f"{r['stream']:<{width}}  {r['state']:<12} {r['fps']:>8.1f} {r['latency_ms']:>6.0f} ms "
                f"{r['drops']:>6}  {r['progress']}"
            )
        return lines

    def draw(self) -> None:
        lines = self.render()
        if self._tty:
            if self._drawn:
                self._out.write(f"\x1b[{self._drawn}F\x1b[J")  # back to the table's first line, clear below
            self._out.write("\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            rows = (" ".join(line.split()) for line in lines[1:])  # no header, single spaces: one log line
            self._out.write(" | ".join(rows) + "\n")
        self._out.flush()


class JsonFormatter(logging.Formatter):
    """One JSON object per log record: ``ts``, ``level``, ``logger``, ``message`` (and ``exc`` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            body["exc"] = record.exc_text
        return json.dumps(body)
