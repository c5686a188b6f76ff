"""The smaller subcommands: subscribe, synth, streams, aggregate, health, keys and build-engine."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pipeline.config import (
    build_config,
    parse_source,
)
from pipeline.errors import EdgesightError

if TYPE_CHECKING:
    from pipeline.schema import Message

from pipeline.commands import error
from pipeline.commands.parser import EXIT_OK, EXIT_RUNTIME
from pipeline.commands.run import StopOnSignal


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
                    error(f"no message on {args.endpoint} for {args.timeout:g} s")
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
    with StopOnSignal(stop):
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
    from pipeline.assembly import model_spec

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
