"""The ``edgesight`` command line: run, check, subscribe, demo, synth, build-engine.

Errors a user can cause print one line naming the culprit and exit non-zero
(2 for bad input at start-up, 1 for a failure while running); ``--debug``
adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import typing
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from engines.registry import BACKENDS
from pipeline.config import (
    DEFAULT_ENDPOINT,
    DEFAULT_MODEL,
    ModelConfig,
    PipelineConfig,
    build_config,
    load_config,
    parse_source,
)
from pipeline.errors import EdgesightError, StartupInterrupted
from pipeline.faces.cli import add_faces_parser, cmd_faces
from pipeline.secrecy import RedactingFilter, redact

if TYPE_CHECKING:
    from pipeline.schema import Message

log = logging.getLogger("edgesight")

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
DEMO_VIDEO = "edgesight-demo.mp4"
DEMO_MODEL = "edgesight-det"
"""The demo's model: bundled, so the demo runs offline."""
ENGINES = ["auto", *BACKENDS]
"""``--engine``'s choices: the registry's backends."""
PRECISIONS = list(typing.get_args(ModelConfig.model_fields["precision"].annotation))
DEVICES = list(typing.get_args(ModelConfig.model_fields["device"].annotation))


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="verbose logs and full tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors, no live view")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="json: one JSON object per line")


def _add_run_overrides(p: argparse.ArgumentParser, default_model: str | None) -> None:
    p.add_argument(
        "--model",
        default=default_model,
        help="edgesight-det (bundled), an asset name (yolo11n.pt), local weights (.pt) or a .yaml architecture "
        f"(default {default_model or DEFAULT_MODEL})",
    )
    p.add_argument("--publish", metavar="ENDPOINT", help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop each stream after N frames")
    p.add_argument("--device", choices=DEVICES, help="inference device")
    p.add_argument("--engine", choices=ENGINES, help="inference backend (default auto: the fastest that loads)")
    p.add_argument("--precision", choices=PRECISIONS, help="auto: fp16 on a GPU, fp32 on the CPU")
    p.add_argument("--imgsz", type=int, help="model input size (multiple of 32)")
    p.add_argument("--conf", type=float, help="confidence threshold")
    p.add_argument("--save", metavar="PATH", help="write the first stream's frames, annotated, to an MP4 file")
    p.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="NAME=x1,y1,x2,y2",
        help="count crossings of a directed line (normalized 0-1 coordinates; repeatable; every stream)",
    )
    p.add_argument(
        "--zone",
        action="append",
        default=[],
        metavar="NAME=x1,y1,x2,y2,x3,y3[,...]",
        help="watch a polygon zone (normalized coordinates; repeatable; every stream)",
    )
    p.add_argument("--thumbnails", action="store_true", help="attach a JPEG of the object to new events")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics, /healthz and /readyz on PORT")
    p.add_argument("--preview-port", type=int, metavar="PORT", help="serve an annotated browser preview on PORT")
    p.add_argument(
        "--control", metavar="ENDPOINT", help="accept streams add/remove/list here (e.g. tcp://127.0.0.1:5557)"
    )
    p.add_argument("--status-file", metavar="FILE", help="write health and readiness as JSON to FILE every 5 s")
    p.add_argument(
        "--faces",
        metavar="DETECTOR",
        help="also detect faces with DETECTOR (mtcnn or a face .pt) at their own rate, on faces.<stream_id>",
    )
    p.add_argument("--recognize", action="store_true", help="recognize faces against the enrolled gallery")
    p.add_argument("--gallery", metavar="FILE", help="face gallery (default ~/.local/share/edgesight/faces.db)")
    p.add_argument("--face-weights", metavar="W", help="face embedder: a weights file, vggface2, seeded:N or .onnx")
    p.add_argument(
        "--wait-for-subscriber",
        action="store_true",
        help="hold messages until a subscriber connects, then never drop (for file replays)",
    )


def edgesight_version() -> str:
    """The installed distribution's version, else the package's own (a checkout used without installing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgesight")
    except PackageNotFoundError:
        from pipeline import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgesight", description="Real-time video analytics over ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"edgesight {edgesight_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a pipeline from a config file or --source/--model")
    run.add_argument("config", nargs="?", help="YAML config file")
    run.add_argument("--source", action="append", default=[], metavar="SRC", help="file, camera, URL or folder")
    _add_run_overrides(run, default_model=None)
    _add_common(run)

    check = sub.add_parser(
        "check", help="validate a config file, and that run could start with it here (files, models, ports), and exit"
    )
    check.add_argument("config", help="YAML config file")
    check.add_argument(
        "--schema-only",
        action="store_true",
        help="only the keys and values: not the files, models and ports of this machine (a config for another box)",
    )
    _add_common(check)

    subscribe = sub.add_parser("subscribe", help="print messages from a running pipeline")
    subscribe.add_argument("--endpoint", default=DEFAULT_ENDPOINT)
    subscribe.add_argument("--topic", action="append", default=[], metavar="PREFIX", help="topic prefix (repeatable)")
    subscribe.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    subscribe.add_argument("--timeout", type=float, metavar="S", help="exit with code 1 if nothing arrives for S s")
    subscribe.add_argument("--json", action="store_true", help="print each message body as one JSON line")
    subscribe.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the publisher's public .key file")
    subscribe.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this subscriber's .key_secret file")
    _add_common(subscribe)

    streams = sub.add_parser("streams", help="list, add and remove streams of a running pipeline")
    stream_verbs = streams.add_subparsers(dest="streams_command", required=True, metavar="ACTION")
    listing = stream_verbs.add_parser("list", help="the running streams")
    adding = stream_verbs.add_parser("add", help="start a stream")
    adding.add_argument("--id", required=True)
    adding.add_argument("--source", required=True, metavar="SRC", help="as run --source")
    removing = stream_verbs.add_parser("remove", help="end a stream")
    removing.add_argument("id")
    for p in (listing, adding, removing):
        p.add_argument("--control", default="tcp://127.0.0.1:5557", metavar="ENDPOINT", help="control.endpoint")
        p.add_argument("--timeout", type=float, default=15.0, metavar="S", help="wait this long for an answer")
        p.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the pipeline's public .key file")
        p.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this client's .key_secret file")
        _add_common(p)

    aggregate = sub.add_parser("aggregate", help="fan the buses of many boxes into one (XSUB/XPUB proxy)")
    aggregate.add_argument(
        "--from",
        dest="upstream",
        action="append",
        default=[],
        metavar="ENDPOINT",
        help="a box's bus, e.g. tcp://box1:5555 (repeatable)",
    )
    aggregate.add_argument("--bind", default="tcp://127.0.0.1:5560", metavar="ENDPOINT")
    aggregate.add_argument("--server-key", metavar="FILE", help="CurveZMQ: the boxes' public .key")
    aggregate.add_argument("--client-key", metavar="FILE", help="CurveZMQ: this aggregator's .key_secret")
    aggregate.add_argument("--secret-key", metavar="FILE", help="CurveZMQ: the aggregator's own .key_secret")
    aggregate.add_argument("--clients", metavar="DIR", help="CurveZMQ: allowed subscribers' public keys")
    _add_common(aggregate)

    check_health = sub.add_parser("health", help="exit 0 if a running pipeline's status file says it is healthy")
    check_health.add_argument("--status-file", required=True, metavar="FILE")
    check_health.add_argument("--max-age", type=float, default=15.0, metavar="S", help="oldest acceptable write")
    _add_common(check_health)

    keys = sub.add_parser("keys", help="CurveZMQ key pairs for an encrypted, authenticated bus")
    key_verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = key_verbs.add_parser("generate", help="write NAME.key (public) and NAME.key_secret")
    generate.add_argument("--out", required=True, metavar="DIR")
    generate.add_argument("--name", default="server", help="file name stem (default server)")
    _add_common(generate)

    synth = sub.add_parser("synth", help="write a generated street scene (scene.mp4) and its truth (truth.jsonl)")
    synth.add_argument("--seed", type=int, required=True)
    synth.add_argument("--frames", type=int, required=True)
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--size", default="640x360", metavar="WxH")
    synth.add_argument("--fps", type=float, default=30.0)
    synth.add_argument("--no-occlusion", action="store_true", help="only objects that never overlap (a simple scene)")
    _add_common(synth)

    build = sub.add_parser(
        "build-engine", help="build (or find) the cached TensorRT engine for a model, for a fast first boot"
    )
    build.add_argument("model", help="weights (.pt), a bundled name (edgesight-det) or an asset name")
    build.add_argument("--precision", choices=["fp16", "fp32", "int8"], default="fp16")
    build.add_argument("--batch", type=int, default=1, metavar="N", help="largest batch (streams batched together)")
    build.add_argument("--imgsz", type=int, default=640, metavar="S", help="input size (multiple of 32)")
    build.add_argument("--calibration", metavar="PATH", help="int8: a folder of images or a video to calibrate on")
    build.add_argument("--calibration-frames", type=int, default=256, metavar="N")
    build.add_argument("--cache-dir", metavar="DIR", help="engine cache (default ~/.cache/edgesight/engines)")
    build.add_argument("--workspace-gb", type=float, default=4.0)
    _add_common(build)

    add_faces_parser(sub)

    demo = sub.add_parser("demo", help="run a generated scene through a model (no camera, no internet)")
    demo.add_argument("--frames", type=int, default=150, help="length of the generated scene")
    demo.add_argument("--seed", type=int, default=7)
    _add_run_overrides(demo, default_model=DEMO_MODEL)
    demo.set_defaults(save=DEMO_VIDEO)
    demo.add_argument("--no-save", dest="save", action="store_const", const=None, help="do not write a video")
    _add_common(demo)
    return parser


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    json_logs = getattr(args, "log_format", "text") == "json"
    from pipeline.console import JsonFormatter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
        if json_logs:
            handler.setFormatter(JsonFormatter())
    logging.getLogger("ultralytics").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if not args.debug:
        # OpenCV and FFmpeg print their own warnings for every bad file; our one-line errors say it better.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


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


class _StopOnSignal:
    """SIGINT/SIGTERM set the pipeline's stop event; the main loop does the rest."""

    def __init__(self, stop: Any) -> None:
        self._stop = stop
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
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
    with _StopOnSignal(pipeline.stop_event):
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
    if recorder is not None and recorder.frames:
        log.info("annotated video: %s (%d frames)", recorder.path, recorder.frames)
    if report.failure:
        _error(report.failure)
        return EXIT_RUNTIME
    failed = [s for s in report.streams if s.error]
    for s in failed:
        _error(f"stream '{s.stream_id}': {s.error}")
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
            _error(f"{args.config}: {problem}")
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


def describe_message(msg: Message) -> str:
    """One readable line for a received message."""
    from pipeline.schema import CountsMessage, DetectionsMessage, EventMessage

    if isinstance(msg, DetectionsMessage):
        objs = " ".join(
            f"{d.label}{'' if d.track_id is None else f'#{d.track_id}'}:{d.confidence:.2f}" for d in msg.detections[:8]
        )
        more = f" +{len(msg.detections) - 8}" if len(msg.detections) > 8 else ""
        return f"{msg.topic} seq={msg.seq} frame={msg.frame_index} n={len(msg.detections)} {objs}{more}"
    if isinstance(msg, EventMessage):
        where = " ".join(
            part
            for part in (
                f"line={msg.line}" if msg.line else "",
                f"zone={msg.zone}" if msg.zone else "",
                msg.direction or "",
                f"dwell={msg.raw['dwell_s']:.1f}s" if "dwell_s" in msg.raw else "",
            )
            if part
        )
        thumb = f" thumbnail={len(msg.thumbnail)}B" if msg.thumbnail else ""
        return (
            f"{msg.topic} {msg.kind} {msg.type} {msg.label}#{msg.track_id} {where} "
            f"frame={msg.frame_index} score={msg.score:.2f} id={msg.event_id[:8]}{thumb}"
        ).replace("  ", " ")
    if isinstance(msg, CountsMessage):
        lines = "; ".join(
            f"{name} in={sum(c.get('in', {}).values())} out={sum(c.get('out', {}).values())}"
            for name, c in msg.lines.items()
        )
        zones = "; ".join(f"{name} occupancy={sum(z.get('occupancy', {}).values())}" for name, z in msg.zones.items())
        return f"{msg.topic} frame={msg.frame_index} {lines}{' | ' if lines and zones else ''}{zones}"
    extra = f" {msg.message}" if msg.message else ""
    return f"{msg.topic} {msg.event}{extra}"


def cmd_subscribe(args: argparse.Namespace) -> int:
    from pipeline.subscriber import Subscriber

    received = 0
    stop = {"flag": False}

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    curve = None
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            raise EdgesightError("CurveZMQ needs both --server-key and --client-key")
        from pipeline.curve import CurveClient

        curve = CurveClient.load(Path(args.server_key), Path(args.client_key))
    with Subscriber(args.endpoint, args.topic or [""], curve=curve) as sub:
        idle_since = time.monotonic()
        while not stop["flag"] and (args.count is None or received < args.count):
            msg = sub.recv(0.2)
            if msg is None:
                if args.timeout is not None and time.monotonic() - idle_since > args.timeout:
                    _error(f"no message on {args.endpoint} for {args.timeout:g} s")
                    return EXIT_RUNTIME
                continue
            idle_since = time.monotonic()
            received += 1
            if args.json:
                print(json.dumps(msg.raw, separators=(",", ":")), flush=True)
            else:
                print(describe_message(msg), flush=True)
        if sub.missed:
            print(f"edgesight: {sub.missed} detections message(s) missed: {dict(sub.gaps)}", file=sys.stderr)
    return EXIT_OK


def cmd_synth(args: argparse.Namespace) -> int:
    from pipeline.synth.writer import write_scene

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise EdgesightError(f"--size must look like 640x360, got '{args.size}'") from None
    out = write_scene(Path(args.out), args.seed, args.frames, width, height, args.fps, not args.no_occlusion)
    print(f"wrote {out / 'scene.mp4'} and {out / 'truth.jsonl'} ({args.frames} frames, {width}x{height})")
    return EXIT_OK


def cmd_streams(args: argparse.Namespace) -> int:
    """``streams list|add|remove``: steer a running pipeline through its control endpoint."""
    from pipeline.control import request
    from pipeline.curve import CurveClient

    curve = CurveClient.load(Path(args.server_key), Path(args.client_key)) if args.server_key else None
    if args.streams_command == "list":
        body: dict[str, Any] = {"op": "list"}
    elif args.streams_command == "add":
        body = {"op": "add", "stream": {"id": args.id, "source": parse_source(args.source)}}
    else:
        body = {"op": "remove", "id": args.id}
    reply = request(args.control, body, args.timeout, curve=curve)
    if not reply.get("ok"):
        raise EdgesightError(str(reply.get("error")))
    if args.streams_command == "list":
        for s in reply["streams"]:
            print(f"{s['id']}\t{s['state']}\tcaptured {s['captured']}\tpublished {s['published']}")
    else:
        print(f"{'added' if args.streams_command == 'add' else 'removed'} '{args.id}'")
    return EXIT_OK


def cmd_aggregate(args: argparse.Namespace) -> int:
    """Relay every box's bus onto one endpoint until SIGINT/SIGTERM."""
    from pipeline.aggregate import Aggregator
    from pipeline.curve import CurveClient, CurveServer

    client = CurveClient.load(Path(args.server_key), Path(args.client_key)) if args.server_key else None
    server = CurveServer.load(Path(args.secret_key), Path(args.clients)) if args.secret_key else None
    aggregator = Aggregator(args.upstream, args.bind, client=client, server=server)
    stop = threading.Event()
    with _StopOnSignal(stop):
        aggregator.start()
        while not stop.wait(0.2):
            pass
    aggregator.close()
    return EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    """For container health checks: 0 when the status file is fresh and says healthy, else 1."""
    from pipeline.health import check_status_file

    ok, detail = check_status_file(Path(args.status_file), args.max_age)
    print(detail, file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_RUNTIME


def cmd_keys(args: argparse.Namespace) -> int:
    """``keys generate``: a CurveZMQ key pair (the secret file readable by its owner only)."""
    from pipeline.curve import generate

    public, secret = generate(Path(args.out), args.name)
    print(f"public key: {public} (give it out)\nsecret key: {secret} (keep it on this machine)")
    return EXIT_OK


def cmd_build_engine(args: argparse.Namespace) -> int:
    """Build the engine the pipeline will load for the same model, precision, batch and size."""
    from engines.tensorrt_backend import build_only
    from pipeline.runner import model_spec

    model = {
        "path": args.model,
        "engine": "tensorrt",
        "device": "cuda",
        "precision": args.precision,
        "batch_size": args.batch,
        "imgsz": args.imgsz,
        "calibration": args.calibration,
        "calibration_frames": args.calibration_frames,
        "cache_dir": args.cache_dir,
        "workspace_gb": args.workspace_gb,
    }
    config = build_config({"streams": [{"id": "build", "source": "synthetic://"}], "model": model}, "build-engine")
    info = build_only(model_spec(config))
    state = "built" if info.cache == "built" else "cached, nothing to build"
    print(f"{info.artifact}: {state} ({info.precision}, batch 1-{info.max_batch}, {info.imgsz}x{info.imgsz})")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "check": cmd_check,
    "subscribe": cmd_subscribe,
    "demo": cmd_demo,
    "synth": cmd_synth,
    "build-engine": cmd_build_engine,
    "faces": cmd_faces,
    "keys": cmd_keys,
    "health": cmd_health,
    "aggregate": cmd_aggregate,
    "streams": cmd_streams,
}


def configure_threads() -> None:
    """Give OpenMP every core before torch loads.

    Ultralytics sets ``OMP_NUM_THREADS=1`` when it is imported (a training
    default); for inference on an edge box that halves the speed. An explicit
    ``OMP_NUM_THREADS`` from the user is respected.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgesight`` command."""
    configure_threads()
    args = build_parser().parse_args(argv)
    _setup_logging(args)
    try:
        return COMMANDS[args.command](args)
    except EdgesightError as exc:
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        _error(str(exc))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("edgesight: interrupted", file=sys.stderr)
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
        _error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_RUNTIME


def _error(text: str) -> None:
    """The command's one error line, on stderr, without any URL's password."""
    print(f"edgesight: error: {redact(text)}", file=sys.stderr)


def entry() -> NoReturn:
    """The ``edgesight`` command: :func:`main`, then leave at once.

    Everything a run must write (results on the bus, the last status message,
    recordings, the health file) is written before ``main`` returns; what is
    left is the interpreter tearing down torch, ONNX Runtime, Ultralytics and
    OpenCV, which takes seconds on a small box. A service manager waits for the
    process, not for the log line, so the process ends here after flushing its
    own output and logs.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader that went away: nothing left to tell it
            stream.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
