"""``edgesight run``, ``check`` and ``demo``: a config from a file or the quick form, run until its end or a signal."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.commands import error
from pipeline.commands.parser import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUNTIME
from pipeline.config import (
    DEFAULT_MODEL,
    PipelineConfig,
    build_config,
    load_config,
    parse_source,
)
from pipeline.errors import EdgesightError, StartupInterrupted

log = logging.getLogger("edgesight")


def _apply_overrides(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    model = dict(data.get("model") or {})
    publish = dict(data.get("publish") or {})
    if args.model:
        model["path"] = args.model
    for key in ("device", "engine", "precision", "imgsz", "conf"):
        if getattr(args, key) is not None:
            model[key] = getattr(args, key)
    if args.publish:
        publish["endpoint"] = args.publish
    if args.wait_for_subscriber:
        publish["wait_for_subscriber"] = True
    data = {**data, "model": model, "publish": publish}
    if args.max_frames is not None:
        data["streams"] = [{**s, "max_frames": args.max_frames} for s in data.get("streams", [])]
    regions = {
        "lines": [parse_region(text, "--line", 2) for text in args.line],
        "zones": [parse_region(text, "--zone", 3) for text in args.zone],
    }
    for key, extra in regions.items():
        if extra:
            data["streams"] = [{**s, key: [*s.get(key, []), *extra]} for s in data.get("streams", [])]
    if args.thumbnails:
        data["events"] = {**(data.get("events") or {}), "thumbnails": True}
    metrics = {k: v for k, v in (("port", args.metrics_port), ("status_file", args.status_file)) if v is not None}
    if metrics:
        data["metrics"] = {**(data.get("metrics") or {}), **metrics}
    if args.preview_port is not None:
        data["preview"] = {**(data.get("preview") or {}), "port": args.preview_port}
    if args.control:
        data["control"] = {"endpoint": args.control}
    faces = {
        key: value
        for key, value in (
            ("detector", args.faces),
            ("recognize", args.recognize or None),
            ("gallery", args.gallery),
            ("weights", args.face_weights),
        )
        if value is not None
    }
    if faces:
        data["faces"] = {**(data.get("faces") or {}), **faces}
    return data


def parse_region(text: str, option: str, min_points: int) -> dict[str, Any]:
    """``NAME=x1,y1,x2,y2[,...]`` → a line or zone config (normalized coordinates)."""
    name, sep, coords = text.partition("=")
    try:
        values = [float(v) for v in coords.split(",")] if sep else []
    except ValueError:
        values = []
    exact = min_points == 2
    bad_count = len(values) % 2 or (len(values) != 4 if exact else len(values) < 2 * min_points)
    if not name or not values or bad_count:
        shape = "NAME=x1,y1,x2,y2" if exact else "NAME=x1,y1,x2,y2,x3,y3[,...]"
        raise EdgesightError(f"{option} '{text}': expected {shape} with numbers")
    points = [[values[i], values[i + 1]] for i in range(0, len(values), 2)]
    return {"name": name, "points": points, "units": "normalized"}


def _config_from_args(args: argparse.Namespace) -> PipelineConfig:
    if args.config and args.source:
        raise EdgesightError("give either a config file or --source, not both")
    if args.config:
        base = load_config(args.config).model_dump(mode="json", exclude_unset=True)
        origin = args.config
    elif args.source:
        base = {"streams": [{"id": f"cam{i}", "source": parse_source(s)} for i, s in enumerate(args.source)]}
        origin = "command line"
    else:
        raise EdgesightError("nothing to run: give a config file or --source SRC (see edgesight run --help)")
    return build_config(_apply_overrides(base, args), origin)


class StopOnSignal:
    """SIGINT/SIGTERM set the pipeline's stop event; the main loop does the rest."""

    def __init__(self, stop: Any) -> None:
        self._stop = stop
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _recorder(config: PipelineConfig, save: str | None) -> Any:
    if not save:
        return None
    from pipeline.recorder import Overlays, VideoRecorder

    source = config.streams[0].source
    fps = float(getattr(source, "fps", 0) or 30.0)
    return VideoRecorder(Path(save), config.streams[0].id, fps, Overlays.from_streams(config.streams))


def run_pipeline(config: PipelineConfig, quiet: bool = False, save: str | None = None) -> int:
    """Run ``config`` to the end (or until a signal), printing live progress; returns the exit code."""
    from pipeline.runner import Pipeline

    recorder = _recorder(config, save)
    pipeline = Pipeline(config, sink=recorder)
    with StopOnSignal(pipeline.stop_event):
        try:
            pipeline.start()
        except StartupInterrupted:
            log.info("stopped before the pipeline had started")
            return EXIT_OK
        try:
            from pipeline.console import LiveView

            view = LiveView(pipeline, sys.stderr)
            last_print = time.monotonic()
            while not pipeline.wait(0.2):
                if pipeline.stop_event.is_set():
                    break
                if not quiet and time.monotonic() - last_print >= 1.0:
                    last_print = time.monotonic()
                    view.draw()
        finally:
            pipeline.stop()
            report = pipeline.report()
            pipeline.close()
    for s in report.streams:
        rate = s.published / report.elapsed_s if report.elapsed_s > 0 else 0.0
        drops = ", ".join(f"{q} {n}" for q, n in s.drops.items()) or "none"
        state = "error" if s.error else "stopped" if s.stopped else "ended"
        log.info(
            "stream '%s' %s: %d frames published (%.1f fps), drops: %s", s.stream_id, state, s.published, rate, drops
        )
    for name, n in report.sink_failures.items():
        log.warning("sink '%s' failed %d times; the other sinks and the run went on", name, n)
    for name, n in report.sink_drops.items():
        log.warning("sink '%s' dropped %d messages it could not deliver in time", name, n)
    if recorder is not None and recorder.frames:
        log.info("annotated video: %s (%d frames)", recorder.path, recorder.frames)
    if report.failure:
        error(report.failure)
        return EXIT_RUNTIME
    failed = [s for s in report.streams if s.error]
    for s in failed:
        error(f"stream '{s.stream_id}': {s.error}")
    if not failed:
        return EXIT_OK
    return EXIT_BAD_INPUT if all(s.refused for s in failed) else EXIT_RUNTIME  # a wrong path or password


def cmd_run(args: argparse.Namespace) -> int:
    live_view = not args.quiet and args.log_format == "text"  # JSON logs are for services: no table in them
    return run_pipeline(_config_from_args(args), quiet=not live_view, save=args.save)


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not args.schema_only:
        from pipeline.preflight import preflight

        problems = preflight(config)
        for problem in problems:
            error(f"{args.config}: {problem}")
        if problems:
            return EXIT_BAD_INPUT
    ids = ", ".join(s.id for s in config.streams)
    model = config.model.path or f"default ({DEFAULT_MODEL})"
    print(f"{args.config}: OK ({len(config.streams)} stream(s): {ids}; model {model})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    data = {
        "streams": [{"id": "demo", "source": {"type": "synthetic", "seed": args.seed, "frames": args.frames}}],
    }
    return run_pipeline(build_config(_apply_overrides(data, args), "demo"), quiet=args.quiet, save=args.save)
